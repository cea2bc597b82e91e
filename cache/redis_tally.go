package cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Redis store is a Tally shared by every node: distinct members in a
// HyperLogLog per key (PFADD, PFCOUNT: 0.81% standard error, at most 12 KiB
// a key), sums in plain integers (INCRBY), each key under <key_prefix>
// with its TTL renewed at every write. Keys counted together must hash to
// one Cluster slot: give them a common {hash tag}.

// AddDistinct implements Tally.
func (s *Redis) AddDistinct(ctx context.Context, key string, members []string, ttl time.Duration) error {
	if !s.up.Load() {
		return errTallyDown
	}
	if len(members) == 0 {
		return nil
	}
	args := make([]any, len(members))
	for i, m := range members {
		args[i] = m
	}
	k := s.o.KeyPrefix + key
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.PFAdd(ctx, k, args...)
		p.PExpire(ctx, k, ttl)
		return nil
	})
	return s.tallyErr(ctx, err)
}

// CountDistinct implements Tally.
func (s *Redis) CountDistinct(ctx context.Context, keys []string) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	n, err := s.client.PFCount(ctx, s.prefixed(keys)...).Result()
	return n, s.tallyErr(ctx, err)
}

// AddCount implements Tally.
func (s *Redis) AddCount(ctx context.Context, key string, n int64, ttl time.Duration) error {
	if !s.up.Load() {
		return errTallyDown
	}
	k := s.o.KeyPrefix + key
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.IncrBy(ctx, k, n)
		p.PExpire(ctx, k, ttl)
		return nil
	})
	return s.tallyErr(ctx, err)
}

// SumCounts implements Tally.
func (s *Redis) SumCounts(ctx context.Context, keys []string) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	vals, err := s.client.MGet(ctx, s.prefixed(keys)...).Result()
	if err != nil {
		return 0, s.tallyErr(ctx, err)
	}
	var sum int64
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue // missing
		}
		n, err := strconv.ParseInt(str, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("redis: %s%s: not a count: %w", s.o.KeyPrefix, keys[i], err)
		}
		sum += n
	}
	return sum, nil
}

func (s *Redis) prefixed(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = s.o.KeyPrefix + k
	}
	return out
}

// tallyErr counts and wraps a failed tally call. Counts are not kept in
// memory while Redis is away: they are statistics, and a node's partial
// figures merged later would count twice. A failed tally call does not
// mark Redis down (only verdict calls do): a slow PFADD must not take the
// verdict store away.
func (s *Redis) tallyErr(_ context.Context, err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return nil
	}
	s.o.OnError("tally")
	return fmt.Errorf("redis: %w", err)
}

// errTallyDown: Redis is known to be unreachable; tally calls are not
// tried until it is back.
var errTallyDown = errors.New("redis: unreachable, licence count not written")
