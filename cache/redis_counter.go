package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// countScript is INCR and, for a key's first event (or a key that lost
// its expiry), PEXPIRE, in one atomic step: a count can never be left
// without its window's end. It returns the count and the milliseconds
// left.
var countScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if n == 1 or left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {n, left}
`)

// Add implements Counter: the key is <key_prefix><key>, shared by every
// node, readable with redis-cli (GET, PTTL). While Redis cannot be
// reached, this process counts on its own.
func (s *Redis) Add(ctx context.Context, key string, window time.Duration) (int64, time.Duration, error) {
	if !s.up.Load() {
		return s.counters.Add(ctx, key, window)
	}
	ms := max(window.Milliseconds(), 1)
	v, err := countScript.Run(ctx, s.client, []string{s.o.KeyPrefix + key}, ms).Int64Slice()
	if err == nil && len(v) != 2 {
		err = fmt.Errorf("count script returned %d values", len(v))
	}
	if err != nil {
		if s.fail(ctx, "count", err) {
			return s.counters.Add(ctx, key, window)
		}
		return 0, 0, fmt.Errorf("redis: %w", err)
	}
	return v[0], time.Duration(v[1]) * time.Millisecond, nil
}

// Count implements Counter, in one round trip (GET and PTTL pipelined).
func (s *Redis) Count(ctx context.Context, key string) (int64, time.Duration, error) {
	if !s.up.Load() {
		return s.counters.Count(ctx, key)
	}
	var get *redis.StringCmd
	var pttl *redis.DurationCmd
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, s.o.KeyPrefix+key)
		pttl = p.PTTL(ctx, s.o.KeyPrefix+key)
		return nil
	})
	if errors.Is(err, redis.Nil) {
		return 0, 0, nil
	}
	if err != nil {
		if s.fail(ctx, "count", err) {
			return s.counters.Count(ctx, key)
		}
		return 0, 0, fmt.Errorf("redis: %w", err)
	}
	n, err := get.Int64()
	if err != nil {
		return 0, 0, fmt.Errorf("redis: %s%s: %w", s.o.KeyPrefix, key, err)
	}
	return n, max(pttl.Val(), 0), nil
}
