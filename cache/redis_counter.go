package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// countScript is SADD, SCARD and, for a key's first member (or a key that
// lost its expiry), PEXPIRE, in one atomic step: a count can never be
// left without its window's end. A set at maxMembers takes no more. It
// returns the distinct members and the milliseconds left.
var countScript = redis.NewScript(`
local n = redis.call('SCARD', KEYS[1])
if n < tonumber(ARGV[3]) then
  redis.call('SADD', KEYS[1], ARGV[2])
  n = redis.call('SCARD', KEYS[1])
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {n, left}
`)

// Add implements Counter: the key is a set, <key_prefix><key>, shared by
// every node, readable with redis-cli (SCARD, SMEMBERS, PTTL). While Redis
// cannot be reached, this process counts on its own.
func (s *Redis) Add(ctx context.Context, key, member string, window time.Duration) (int64, time.Duration, error) {
	if !s.up.Load() {
		return s.counters.Add(ctx, key, member, window)
	}
	ms := max(window.Milliseconds(), 1)
	v, err := countScript.Run(ctx, s.client, []string{s.o.KeyPrefix + key}, ms, member, maxMembers).Int64Slice()
	if err == nil && len(v) != 2 {
		err = fmt.Errorf("count script returned %d values", len(v))
	}
	if err != nil {
		if s.fail(ctx, "count", err) {
			return s.counters.Add(ctx, key, member, window)
		}
		return 0, 0, fmt.Errorf("redis: %w", err)
	}
	return v[0], time.Duration(v[1]) * time.Millisecond, nil
}

// Count implements Counter, in one round trip (SCARD and PTTL pipelined).
func (s *Redis) Count(ctx context.Context, key string) (int64, time.Duration, error) {
	if !s.up.Load() {
		return s.counters.Count(ctx, key)
	}
	var card *redis.IntCmd
	var pttl *redis.DurationCmd
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		card = p.SCard(ctx, s.o.KeyPrefix+key)
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
	return card.Val(), max(pttl.Val(), 0), nil
}
