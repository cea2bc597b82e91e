package cache

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configure a Redis store.
type RedisOptions struct {
	// Addrs: one address is a single server; several are a Cluster's
	// seed nodes; with MasterName they are Sentinels.
	Addrs      []string
	MasterName string
	Username   string
	Password   string
	DB         int
	// KeyPrefix starts every key calloutd writes ("calloutd:").
	KeyPrefix   string
	TLS         *tls.Config // nil: plain TCP
	DialTimeout time.Duration
	ReadTimeout time.Duration
	// LocalEntries bounds each of the store's in-process layers.
	LocalEntries int
	// NoTracking leaves out the local layer and its invalidation
	// connection: every Get asks Redis (the admin commands).
	NoTracking bool
	Logger     *slog.Logger
	// OnError, if set, counts a failed Redis operation: get, set, delete,
	// flush, lease, decode, tracking, count, tally.
	OnError func(op string)
}

// FormatVersion is the "v" of the values the Redis store writes; a value of
// another version is a miss.
const FormatVersion = 1

// Redis is a Store shared by every calloutd that points at the same Redis:
// a verdict reached on one MTA node is served by all. One key per verdict,
// "<prefix>rcpt:<address>", holding a JSON value, with the verdict's
// lifetime as its Redis TTL.
//
// In front of Redis sits a local layer, a Memory of the verdicts read
// recently, kept coherent by Redis's client-side caching in broadcast mode
// (CLIENT TRACKING ON BCAST PREFIX): every change to a key under the
// prefix, by any client, redis-cli included, removes the local copy within
// a network round trip. The layer is used only while the invalidation
// connection to every master is up and has answered a PING within the last
// PingEvery plus read_timeout; otherwise every lookup asks Redis.
//
// When Redis cannot be reached, the store says so once in the log and
// keeps verdicts in this process's memory until a background probe finds
// Redis again; no request waits for a dead Redis. Entries marked Local
// (unreachable verdicts: they describe this node's network) never leave
// the process.
type Redis struct {
	o           RedisOptions
	log         *slog.Logger
	client      redis.UniversalClient
	cluster     *redis.ClusterClient // set for a Cluster
	sentinels   []*redis.SentinelClient
	rcptPrefix  string
	leasePrefix string
	token       string // this process, as a lease holder
	claims      atomic.Uint64

	near     *Memory        // coherent copy of Redis entries
	own      *Memory        // Local entries
	fallback *Memory        // verdicts made while Redis was unreachable
	counters *MemoryCounter // Counter while Redis is unreachable

	up       atomic.Bool
	down     atomic.Int64 // unix nanoseconds the outage began
	lastErr  atomic.Pointer[string]
	lastWarn atomic.Int64 // unix nanoseconds of the last rate-limited warning
	probe    chan struct{}

	gen      atomic.Uint64 // bumped whenever the local layer's coherence is lost or regained
	epochs   [epochBuckets]atomic.Uint32
	trackers atomic.Pointer[[]*tracker]
	kick     chan struct{}
	waitMu   sync.Mutex
	waiters  map[string][]chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// epochBuckets spread the invalidation counters over addresses, so that a
// lookup racing an invalidation of its own key does not install a stale
// copy, while one racing other keys' invalidations still does.
const epochBuckets = 4096

// PingEvery is how often the invalidation connections ask ROLE; local
// copies are trusted only while every master answered within Freshness.
const (
	PingEvery = 30 * time.Millisecond
	Freshness = 100 * time.Millisecond
)

// NewRedis returns a Redis store. It asks Redis once, within the dial and
// read timeouts; an unreachable Redis is logged and the store starts
// degraded (it recovers by itself). Only options that can never work are
// an error.
func NewRedis(o RedisOptions) (*Redis, error) {
	if len(o.Addrs) == 0 {
		return nil, errors.New("redis: no address")
	}
	if o.KeyPrefix == "" {
		return nil, errors.New("redis: empty key prefix")
	}
	if o.DialTimeout <= 0 || o.ReadTimeout <= 0 {
		return nil, errors.New("redis: timeouts must be positive")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.OnError == nil {
		o.OnError = func(string) {}
	}
	s := &Redis{
		o:           o,
		log:         o.Logger,
		rcptPrefix:  o.KeyPrefix + "rcpt:",
		leasePrefix: o.KeyPrefix + "lease:",
		token:       leaseToken(),
		near:        NewMemory(o.LocalEntries),
		own:         NewMemory(o.LocalEntries),
		fallback:    NewMemory(o.LocalEntries),
		counters:    NewMemoryCounter(100_000),
		probe:       make(chan struct{}, 1),
		kick:        make(chan struct{}, 1),
		waiters:     make(map[string][]chan struct{}),
	}
	s.trackers.Store(&[]*tracker{})
	quietOnce.Do(func() { redis.SetLogger(debugLogger{o.Logger}) })
	uo := &redis.UniversalOptions{
		Addrs:        o.Addrs,
		MasterName:   o.MasterName,
		Username:     o.Username,
		Password:     o.Password,
		DB:           o.DB,
		TLSConfig:    o.TLS,
		DialTimeout:  o.DialTimeout,
		ReadTimeout:  o.ReadTimeout,
		WriteTimeout: o.ReadTimeout,
		// A call waits for a free connection no longer than for a reply.
		PoolTimeout: o.ReadTimeout,
		// No retries: a failed call is a miss (or a fallback write) now,
		// not after several timeouts.
		MaxRetries: -1,
		// One dial per attempt (go-redis's default is 5, with pauses).
		DialerRetries:   1,
		Protocol:        2,
		DisableIdentity: true,
		ClientName:      "calloutd",
	}
	s.client = redis.NewUniversalClient(uo)
	if c, ok := s.client.(*redis.ClusterClient); ok {
		s.cluster = c
	}
	if o.MasterName != "" {
		for _, a := range o.Addrs {
			s.sentinels = append(s.sentinels, redis.NewSentinelClient(&redis.Options{
				Addr: a, DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.ReadTimeout,
				PoolTimeout: o.ReadTimeout, MaxRetries: -1, DialerRetries: 1, Protocol: 2, DisableIdentity: true, TLSConfig: o.TLS,
			}))
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	ctx, cancel := context.WithTimeout(s.ctx, o.DialTimeout+o.ReadTimeout)
	err := s.client.Ping(ctx).Err()
	cancel()
	if err != nil {
		s.down.Store(time.Now().UnixNano())
		s.setErr(err)
		s.log.Warn("redis unreachable at start; verdicts come from callouts and this node's memory until it returns",
			"addrs", o.Addrs, "err", err)
	} else {
		s.up.Store(true)
	}
	s.wg.Add(1)
	go s.prober()
	if !o.NoTracking {
		s.wg.Add(1)
		go s.manage()
	}
	return s, nil
}

// go-redis logs dial failures itself, once per attempt; the store says
// what matters once per outage, so its lines go to debug.
var quietOnce sync.Once

type debugLogger struct{ log *slog.Logger }

func (l debugLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}

func leaseToken() string {
	host, _ := os.Hostname()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Close stops the background work and closes every connection.
func (s *Redis) Close() error {
	s.cancel()
	s.wg.Wait()
	for _, sc := range s.sentinels {
		sc.Close()
	}
	return s.client.Close()
}

// SelfBounded implements cache.SelfBounded: every call ends within the
// dial and read timeouts, and a local hit does no I/O.
func (s *Redis) SelfBounded() {}

// Up reports whether Redis answered the last time it was asked.
func (s *Redis) Up() bool { return s.up.Load() }

// Tracking reports whether the local layer is in use: every master's
// invalidation connection is up and fresh.
func (s *Redis) Tracking() bool { return s.nearUsable(time.Now()) }

// Status describes the store for /readyz.
func (s *Redis) Status() string {
	if !s.up.Load() {
		msg := "degraded, Redis unreachable"
		if t := s.down.Load(); t != 0 {
			msg += " since " + time.Unix(0, t).UTC().Format(time.RFC3339)
		}
		if e := s.lastErr.Load(); e != nil {
			msg += ": " + *e
		}
		return msg + "; verdicts kept in this node's memory"
	}
	if s.o.NoTracking {
		return "reachable"
	}
	if s.Tracking() {
		return "reachable, invalidations up (local layer in use)"
	}
	return "reachable, invalidations down (every lookup asks Redis)"
}

// Len counts the entries held in this process (local layer, this node's
// own entries, and those kept while Redis was away).
func (s *Redis) Len() int { return s.near.Len() + s.own.Len() + s.fallback.Len() }

// Evictions counts entries evicted from the in-process layers.
func (s *Redis) Evictions() uint64 {
	return s.near.Evictions() + s.own.Evictions() + s.fallback.Evictions()
}

// RecipientKey is the Redis key of a cache key.
func (s *Redis) RecipientKey(key string) string { return s.rcptPrefix + key }

// Get implements Store.
func (s *Redis) Get(ctx context.Context, key string) (Entry, bool, error) {
	now := time.Now()
	if s.nearUsable(now) {
		if e, ok, _ := s.near.Get(ctx, key); ok {
			return e, true, nil
		}
	}
	if !s.up.Load() {
		return s.local(ctx, key)
	}
	g0, b := s.gen.Load(), s.epoch(key)
	b0 := b.Load()
	e, ttl, ok, err := s.fetch(ctx, key)
	if err != nil {
		s.fail(ctx, "get", err)
		return s.local(ctx, key)
	}
	if !ok {
		return s.own.Get(ctx, key)
	}
	if ttl > 0 && s.nearUsable(now) {
		// Install the copy, then make sure no invalidation of this key,
		// and no loss of the channel, came in between: if one did, the
		// copy may be stale and goes.
		_ = s.near.Set(ctx, key, e, ttl)
		if s.gen.Load() != g0 || b.Load() != b0 || !s.nearUsable(time.Now()) {
			_ = s.near.Delete(ctx, key)
		}
	}
	return e, true, nil
}

// local answers from this process alone: what was kept while Redis was
// away, then this node's own entries.
func (s *Redis) local(ctx context.Context, key string) (Entry, bool, error) {
	if e, ok, _ := s.fallback.Get(ctx, key); ok {
		return e, true, nil
	}
	return s.own.Get(ctx, key)
}

// fetch reads a verdict and how long a local copy may live (its remaining
// lifetime, or 0 for no copy) in one round trip, within the dial and read
// timeouts. A value that cannot be decoded is a miss (the next verdict
// overwrites it).
func (s *Redis) fetch(ctx context.Context, key string) (Entry, time.Duration, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.DialTimeout+s.o.ReadTimeout)
	defer cancel()
	rk := s.rcptPrefix + key
	var get *redis.StringCmd
	var pttl *redis.DurationCmd
	var role *redis.Cmd
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, rk)
		pttl = p.PTTL(ctx, rk)
		if len(s.sentinels) > 0 {
			role = p.Do(ctx, "ROLE")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return Entry{}, 0, false, err
	}
	// Read from a server that is no longer the master (a failover
	// go-redis has not followed yet): serve it, but never copy it
	// locally, since that server's invalidations are not watched.
	copyOK := true
	if role != nil {
		if v, err := role.Slice(); err != nil || len(v) == 0 || v[0] != "master" {
			copyOK = false
		}
	}
	val, err := get.Bytes()
	if errors.Is(err, redis.Nil) {
		return Entry{}, 0, false, nil
	}
	if err != nil {
		return Entry{}, 0, false, err
	}
	ttl, err := pttl.Result()
	if err != nil {
		return Entry{}, 0, false, err
	}
	e, err := decodeEntry(val)
	if err != nil {
		s.o.OnError("decode")
		s.log.Warn("redis value not understood, treated as a miss and overwritten by the next verdict",
			"key", rk, "err", err)
		return Entry{}, 0, false, nil
	}
	switch {
	case ttl > 0:
		e.Expires = time.Now().Add(ttl)
	case ttl == -1:
		// PERSISTed by hand: served, never copied locally.
		ttl = 0
	default: // gone between GET and PTTL
		return Entry{}, 0, false, nil
	}
	if !copyOK {
		ttl = 0
	}
	return e, ttl, true, nil
}

// Set implements Store. A failed write keeps the verdict in this process
// and is reported through OnError and the log, not to the caller.
func (s *Redis) Set(ctx context.Context, key string, e Entry, ttl time.Duration) error {
	if ttl <= 0 {
		return nil
	}
	if e.Local {
		return s.own.Set(ctx, key, e, ttl)
	}
	if !s.up.Load() {
		return s.fallback.Set(ctx, key, e, ttl)
	}
	val, err := encodeEntry(e)
	if err != nil {
		return err
	}
	if err := s.client.Set(ctx, s.rcptPrefix+key, val, ttl).Err(); err != nil {
		if s.fail(ctx, "set", err) {
			return s.fallback.Set(ctx, key, e, ttl)
		}
		return nil
	}
	// This node's old copy goes now, as its invalidation would.
	s.epoch(key).Add(1)
	_ = s.near.Delete(ctx, key)
	_ = s.own.Delete(ctx, key)
	return nil
}

// Delete implements Store: the key goes from Redis and from every layer of
// this process.
func (s *Redis) Delete(ctx context.Context, key string) error {
	_, err := s.DeleteCount(ctx, key)
	return err
}

// DeleteCount is Delete that tells whether the key was there (1) or not (0).
func (s *Redis) DeleteCount(ctx context.Context, key string) (int, error) {
	s.dropLocal(key)
	n, err := s.client.Del(ctx, s.rcptPrefix+key).Result()
	if err != nil {
		s.fail(ctx, "delete", err)
		return 0, fmt.Errorf("redis: %w", err)
	}
	return int(n), nil
}

func (s *Redis) dropLocal(key string) {
	ctx := context.Background()
	_ = s.near.Delete(ctx, key)
	_ = s.own.Delete(ctx, key)
	_ = s.fallback.Delete(ctx, key)
}

// Flush implements Flusher: it removes every verdict of domain ("" for all)
// from Redis, walking each master with SCAN, and from this process.
func (s *Redis) Flush(ctx context.Context, domain string) (int, error) {
	suffix := ""
	if domain != "" {
		suffix = "@" + domain
	}
	for _, m := range []*Memory{s.near, s.own, s.fallback} {
		m.DeleteFunc(func(k string) bool { return strings.HasSuffix(k, suffix) })
	}
	pattern := globEscape(s.rcptPrefix) + "*" + globEscape(suffix)
	var removed atomic.Int64
	flushNode := func(ctx context.Context, c redis.Cmdable, oneSlot bool) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, pattern, 1000).Result()
			if err != nil {
				return err
			}
			if len(keys) > 0 {
				n, err := unlink(ctx, c, keys, oneSlot)
				removed.Add(n)
				if err != nil {
					return err
				}
			}
			if next == 0 {
				return nil
			}
			cursor = next
		}
	}
	var err error
	if s.cluster != nil {
		err = s.cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return flushNode(ctx, c, false)
		})
	} else {
		err = flushNode(ctx, s.client, true)
	}
	if err != nil {
		s.fail(ctx, "flush", err)
		return int(removed.Load()), fmt.Errorf("redis: %w", err)
	}
	return int(removed.Load()), nil
}

// unlink removes keys found on one node. On a Cluster, keys of one node
// may hash to different slots, so each goes in its own command (pipelined).
func unlink(ctx context.Context, c redis.Cmdable, keys []string, oneSlot bool) (int64, error) {
	if oneSlot {
		return c.Unlink(ctx, keys...).Result()
	}
	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Unlink(ctx, k)
		}
		return nil
	})
	var n int64
	for _, cmd := range cmds {
		if ic, ok := cmd.(*redis.IntCmd); ok {
			n += ic.Val()
		}
	}
	return n, err
}

// globEscape quotes the characters SCAN's MATCH treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Claim implements Coalescer with a lease in Redis ("<prefix>lease:<key>",
// SET NX with a lifetime): the first node to ask about a new address
// verifies it; the others wait for its verdict, woken by its invalidation
// (or a short poll), until the lease is released or expires, then try to
// take it themselves.
func (s *Redis) Claim(ctx context.Context, key string, lease time.Duration) (Entry, bool, func()) {
	noop := func() {}
	lk := s.leasePrefix + key
	for {
		if !s.up.Load() {
			return Entry{}, false, noop
		}
		wake := s.watch(key)
		token := s.token + ":" + strconv.FormatUint(s.claims.Add(1), 10)
		won, err := s.client.SetNX(ctx, lk, token, lease).Result()
		if err != nil {
			s.unwatch(key, wake)
			s.fail(ctx, "lease", err)
			return Entry{}, false, noop
		}
		// Whether or not we hold the lease, a verdict stored since the
		// caller's miss answers.
		e, _, ok, err := s.fetch(ctx, key)
		if won {
			s.unwatch(key, wake)
			if err == nil && ok {
				s.release(lk, token)
				return e, true, noop
			}
			return Entry{}, false, func() { s.release(lk, token) }
		}
		if err == nil && ok {
			s.unwatch(key, wake)
			return e, true, noop
		}
		// A holder on this node that found the backend unreachable
		// kept that verdict here.
		if e, ok, _ := s.own.Get(ctx, key); ok {
			s.unwatch(key, wake)
			return e, true, noop
		}
		// Invalidations wake us when the verdict is stored or the lease
		// released; the poll notices a lease that expired (Redis
		// expires keys lazily, and only then tells).
		poll := 100 * time.Millisecond
		if !s.nearUsable(time.Now()) {
			poll = 50 * time.Millisecond
		}
		t := time.NewTimer(poll)
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			s.unwatch(key, wake)
			return Entry{}, false, noop
		}
		t.Stop()
		s.unwatch(key, wake)
	}
}

// releaseScript deletes a lease only if this process still holds it.
var releaseScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

func (s *Redis) release(lk, token string) {
	ctx, cancel := context.WithTimeout(s.ctx, s.o.ReadTimeout)
	defer cancel()
	if err := releaseScript.Run(ctx, s.client, []string{lk}, token).Err(); err != nil && !errors.Is(err, redis.Nil) {
		// It expires by itself.
		s.fail(ctx, "lease", err)
	}
}

// watch registers for a wake-up when key's verdict or lease changes.
func (s *Redis) watch(key string) chan struct{} {
	ch := make(chan struct{})
	s.waitMu.Lock()
	s.waiters[key] = append(s.waiters[key], ch)
	s.waitMu.Unlock()
	return ch
}

func (s *Redis) unwatch(key string, ch chan struct{}) {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	list := s.waiters[key]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.waiters, key)
	} else {
		s.waiters[key] = list
	}
}

// wakeKey wakes the waiters of key; wakeAll wakes every waiter.
func (s *Redis) wakeKey(key string) {
	s.waitMu.Lock()
	for _, c := range s.waiters[key] {
		close(c)
	}
	delete(s.waiters, key)
	s.waitMu.Unlock()
}

func (s *Redis) wakeAll() {
	s.waitMu.Lock()
	for k, list := range s.waiters {
		for _, c := range list {
			close(c)
		}
		delete(s.waiters, k)
	}
	s.waitMu.Unlock()
}

// fail records a failed Redis call and reports whether Redis is now
// treated as down. Every failure is counted. Only a failure of the
// connection (refused, reset, timed out) marks Redis down (logged once)
// until the probe finds it: an error reply (WRONGTYPE, OOM, NOPERM,
// READONLY), a busy pool, or a caller that gave up says nothing about
// Redis's reachability; such errors are logged at most once a minute.
func (s *Redis) fail(ctx context.Context, op string, err error) bool {
	s.o.OnError(op)
	var reply redis.Error
	if errors.As(err, &reply) || errors.Is(err, redis.ErrPoolTimeout) || ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		if now := time.Now().UnixNano(); now-s.lastWarn.Load() > int64(time.Minute) {
			s.lastWarn.Store(now)
			s.log.Warn("redis call failed; treated as a miss (logged at most once a minute)", "op", op, "err", err)
		}
		return !s.up.Load()
	}
	s.setErr(err)
	if s.up.CompareAndSwap(true, false) {
		s.down.Store(time.Now().UnixNano())
		// Only what is verified during this outage is kept.
		s.fallback.DeleteFunc(func(string) bool { return true })
		s.log.Warn("redis unreachable; verdicts come from callouts and this node's memory until it returns",
			"op", op, "err", err)
		select {
		case s.probe <- struct{}{}:
		default:
		}
	}
	return true
}

func (s *Redis) setErr(err error) {
	msg := err.Error()
	s.lastErr.Store(&msg)
}

// prober pings a Redis marked down, with a growing pause (250 ms to 5 s),
// until it answers; then the verdicts kept meanwhile are dropped (an admin
// may have flushed Redis during the outage) and Redis is used again.
func (s *Redis) prober() {
	defer s.wg.Done()
	for {
		if s.up.Load() {
			select {
			case <-s.ctx.Done():
				return
			case <-s.probe:
			}
		}
		pause := 250 * time.Millisecond
		for !s.up.Load() {
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(pause):
			}
			pause = min(pause*2, 5*time.Second)
			ctx, cancel := context.WithTimeout(s.ctx, s.o.DialTimeout+s.o.ReadTimeout)
			err := s.client.Ping(ctx).Err()
			cancel()
			if err != nil {
				s.setErr(err)
				continue
			}
			since := time.Unix(0, s.down.Load())
			s.up.Store(true)
			// After up: a write that still saw Redis down lands before
			// this and goes too.
			s.fallback.DeleteFunc(func(string) bool { return true })
			s.log.Info("redis reachable again; verdicts shared again", "outage", time.Since(since).Round(time.Millisecond))
		}
	}
}

// redisValue is the JSON a verdict is stored as, readable with redis-cli.
type redisValue struct {
	V        int       `json:"v"`
	Verdict  string    `json:"verdict"`
	Code     int       `json:"code,omitempty"`
	Enhanced string    `json:"enhanced,omitempty"`
	Text     string    `json:"text,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Route    string    `json:"route,omitempty"`
	Server   string    `json:"server,omitempty"`
	Verified time.Time `json:"verified"`
	Routes   string    `json:"routes,omitempty"`  // hex fingerprint
	Learned  string    `json:"learned,omitempty"` // queue id of the log line
}

func encodeEntry(e Entry) ([]byte, error) {
	v := redisValue{
		V: FormatVersion, Verdict: e.Verdict, Code: e.Code, Enhanced: e.Enhanced, Text: e.Text,
		Reason: e.Reason, Route: e.Route, Server: e.Server, Verified: e.Verified.UTC(), Learned: e.Learned,
	}
	if e.Routes != 0 {
		v.Routes = strconv.FormatUint(e.Routes, 16)
	}
	return json.Marshal(&v)
}

func decodeEntry(b []byte) (Entry, error) {
	var v redisValue
	if err := json.Unmarshal(b, &v); err != nil {
		return Entry{}, err
	}
	if v.V != FormatVersion {
		return Entry{}, fmt.Errorf("format version %d, want %d", v.V, FormatVersion)
	}
	if v.Verdict == "" {
		return Entry{}, errors.New("no verdict")
	}
	e := Entry{
		Verdict: v.Verdict, Code: v.Code, Enhanced: v.Enhanced, Text: v.Text, Reason: v.Reason,
		Route: v.Route, Server: v.Server, Verified: v.Verified, Learned: v.Learned,
	}
	if v.Routes != "" {
		fp, err := strconv.ParseUint(v.Routes, 16, 64)
		if err != nil {
			return Entry{}, fmt.Errorf("routes %q: %w", v.Routes, err)
		}
		e.Routes = fp
	}
	return e, nil
}
