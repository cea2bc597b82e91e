package cache

import (
	"context"
	"time"
)

// Tally keeps estimates of distinct members and sums of events per key,
// each key living ttl after its last write (keys are meant to be one per
// subject and day: "stats:{example.com}:valid:20261202"). The licence count
// (distinct valid recipients per domain over a rolling window) is built on
// it: several days' keys are counted together.
type Tally interface {
	// AddDistinct adds members to key's set estimate.
	AddDistinct(ctx context.Context, key string, members []string, ttl time.Duration) error
	// CountDistinct estimates the number of distinct members of the union
	// of keys (missing keys are empty).
	CountDistinct(ctx context.Context, keys []string) (int64, error)
	// AddCount adds n to key's sum.
	AddCount(ctx context.Context, key string, n int64, ttl time.Duration) error
	// SumCounts sums the counts of keys (missing keys are 0).
	SumCounts(ctx context.Context, keys []string) (int64, error)
}
