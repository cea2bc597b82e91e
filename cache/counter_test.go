package cache_test

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/internal/redistest"
)

// The fixed-window counters: MemoryCounter (one process) and the Redis
// store's Add/Count (shared by every node, falling back to memory while
// Redis is away). The harvest limit counts unknown recipients per client
// network with them.

var (
	_ cache.Counter = (*cache.MemoryCounter)(nil)
	_ cache.Counter = (*cache.Redis)(nil)
)

// memberSeq makes every counterAdd a new member.
var memberSeq atomic.Int64

// counterAdd calls Add with a member never used before, and fails the
// test on an error.
func counterAdd(t *testing.T, c cache.Counter, key string, window time.Duration) (int64, time.Duration) {
	t.Helper()
	n, left, err := c.Add(ctx, key, fmt.Sprintf("member%d@example.test", memberSeq.Add(1)), window)
	if err != nil {
		t.Fatalf("Add(%q, %v): %v", key, window, err)
	}
	return n, left
}

// counterCount calls Count and fails the test on an error.
func counterCount(t *testing.T, c cache.Counter, key string) (int64, time.Duration) {
	t.Helper()
	n, left, err := c.Count(ctx, key)
	if err != nil {
		t.Fatalf("Count(%q): %v", key, err)
	}
	return n, left
}

// wantLeft checks that a window that has begun has some time left, and no
// more than the window.
func wantLeft(t *testing.T, what string, left, window time.Duration) {
	t.Helper()
	if left <= 0 || left > window {
		t.Errorf("%s: left %v, want in (0, %v]", what, left, window)
	}
}

// A window counts from its first event and starts again once it ends;
// keys count apart.
func TestMemoryCounterWindow(t *testing.T) {
	const window = 300 * time.Millisecond
	c := cache.NewMemoryCounter(100)
	if n, left := counterAdd(t, c, "a", window); n != 1 || left != window {
		t.Fatalf("first Add = %d, %v; want 1, %v (a new window)", n, left, window)
	}
	for want := int64(2); want <= 3; want++ {
		n, left := counterAdd(t, c, "a", window)
		if n != want {
			t.Errorf("Add #%d = %d", want, n)
		}
		wantLeft(t, fmt.Sprintf("Add #%d", want), left, window)
	}
	n, left := counterCount(t, c, "a")
	if n != 3 {
		t.Errorf("Count = %d, want 3", n)
	}
	wantLeft(t, "Count", left, window)
	if n, left := counterCount(t, c, "b"); n != 0 || left != 0 {
		t.Errorf("Count(never added) = %d, %v; want 0, 0", n, left)
	}
	if n, _ := counterAdd(t, c, "b", window); n != 1 {
		t.Errorf("Add(b) = %d, want 1: keys are counted apart", n)
	}
	if n, _ := counterCount(t, c, "a"); n != 3 {
		t.Errorf("Count(a) = %d after Add(b), want 3", n)
	}

	waitFor(t, "a's window ends", 5*time.Second, func() bool { n, _ := counterCount(t, c, "a"); return n == 0 })
	if n, left := counterCount(t, c, "a"); n != 0 || left != 0 {
		t.Errorf("Count(ended) = %d, %v; want 0, 0", n, left)
	}
	if n, left := counterAdd(t, c, "a", window); n != 1 || left != window {
		t.Errorf("Add after the window = %d, %v; want 1, %v (a new window)", n, left, window)
	}
}

// Beyond its limit the counter drops the key whose window began first.
func TestMemoryCounterBound(t *testing.T) {
	c := cache.NewMemoryCounter(3)
	for _, k := range []string{"a", "b", "c", "d"} {
		counterAdd(t, c, k, time.Minute)
	}
	if c.Len() != 3 {
		t.Errorf("Len = %d, want 3", c.Len())
	}
	for k, want := range map[string]int64{"a": 0, "b": 1, "c": 1, "d": 1} {
		if n, _ := counterCount(t, c, k); n != want {
			t.Errorf("Count(%s) = %d, want %d", k, n, want)
		}
	}
	// Counting again in a live window does not move the key: b stays the
	// oldest, and goes for a's return.
	counterAdd(t, c, "b", time.Minute)
	if n, _ := counterAdd(t, c, "a", time.Minute); n != 1 {
		t.Errorf("Add(a) after its eviction = %d, want 1", n)
	}
	for k, want := range map[string]int64{"a": 1, "b": 0, "c": 1, "d": 1} {
		if n, _ := counterCount(t, c, k); n != want {
			t.Errorf("after a's return: Count(%s) = %d, want %d", k, n, want)
		}
	}
	// NewMemoryCounter(0) still holds one key.
	one := cache.NewMemoryCounter(0)
	counterAdd(t, one, "x", time.Minute)
	counterAdd(t, one, "x", time.Minute)
	if n, _ := counterCount(t, one, "x"); n != 2 {
		t.Errorf("limit 0: Count = %d, want 2", n)
	}
	counterAdd(t, one, "y", time.Minute)
	if n, _ := counterCount(t, one, "x"); n != 0 || one.Len() != 1 {
		t.Errorf("limit 0: x = %d, Len %d after y; want 0, 1", n, one.Len())
	}
}

// A key counted again after its window ended leaves its old window's
// entry in the queue (behind a longer window that has not ended): that
// entry must not delete the new window when it is popped. The key goes
// only when its new window is the oldest.
func TestMemoryCounterStaleQueueEntry(t *testing.T) {
	c := cache.NewMemoryCounter(4)
	counterAdd(t, c, "x", time.Minute) // holds the queue's head
	counterAdd(t, c, "a", 50*time.Millisecond)
	counterAdd(t, c, "m", time.Minute) // between a's old window and its new one
	waitFor(t, "a's short window ends", 5*time.Second, func() bool { n, _ := counterCount(t, c, "a"); return n == 0 })
	if n, _ := counterAdd(t, c, "a", time.Minute); n != 1 {
		t.Fatalf("Add(a) after its window = %d, want 1", n)
	}
	counterAdd(t, c, "a", time.Minute) // a = 2
	counterAdd(t, c, "b", time.Minute)
	if c.Len() != 4 {
		t.Errorf("Len = %d with x, m, a, b held, want 4", c.Len())
	}
	// queue: x, a (old), m, a, b. c pops x, the oldest.
	counterAdd(t, c, "c", time.Minute)
	for k, want := range map[string]int64{"x": 0, "m": 1, "a": 2, "b": 1, "c": 1} {
		if n, _ := counterCount(t, c, k); n != want {
			t.Errorf("after c: Count(%s) = %d, want %d", k, n, want)
		}
	}
	// d pops a's old entry, which must leave a's new window alone, then m.
	counterAdd(t, c, "d", time.Minute)
	for k, want := range map[string]int64{"m": 0, "a": 2, "b": 1, "c": 1, "d": 1} {
		if n, _ := counterCount(t, c, k); n != want {
			t.Errorf("after d: Count(%s) = %d, want %d", k, n, want)
		}
	}
	// Now a's window is the oldest: e pops it.
	counterAdd(t, c, "e", time.Minute)
	for k, want := range map[string]int64{"a": 0, "b": 1, "c": 1, "d": 1, "e": 1} {
		if n, _ := counterCount(t, c, k); n != want {
			t.Errorf("after e: Count(%s) = %d, want %d", k, n, want)
		}
	}
	if c.Len() != 4 {
		t.Errorf("Len = %d, want 4", c.Len())
	}
}

// Windows of different lengths (the daemon's memory of limited clients
// gets each client's time left): a window that has ended is what makes
// room, not a live one that began earlier. Neither a new key nor a key
// counted again after its window should cost a live count.
func TestMemoryCounterMixedWindows(t *testing.T) {
	t.Run("new key", func(t *testing.T) {
		c := cache.NewMemoryCounter(2)
		counterAdd(t, c, "x", time.Minute)
		counterAdd(t, c, "y", 50*time.Millisecond)
		waitFor(t, "y's window ends", 5*time.Second, func() bool { n, _ := counterCount(t, c, "y"); return n == 0 })
		counterAdd(t, c, "z", time.Minute)
		if n, _ := counterCount(t, c, "x"); n != 1 {
			t.Errorf("x = %d, want 1: a live count was evicted while y's ended window held a place", n)
		}
	})
	t.Run("key counted again", func(t *testing.T) {
		c := cache.NewMemoryCounter(2)
		counterAdd(t, c, "x", time.Minute)
		counterAdd(t, c, "a", 50*time.Millisecond)
		waitFor(t, "a's window ends", 5*time.Second, func() bool { n, _ := counterCount(t, c, "a"); return n == 0 })
		counterAdd(t, c, "a", time.Minute)
		if n, _ := counterCount(t, c, "x"); n != 1 {
			t.Errorf("x = %d, want 1: a live count was evicted to make room for a key already held", n)
		}
	})
}

// Many keys through a small bound: the queue's front is reclaimed (past
// 1024 popped entries) without losing track of which keys are newest.
func TestMemoryCounterChurn(t *testing.T) {
	const limit, total = 10, 5000
	c := cache.NewMemoryCounter(limit)
	for i := range total {
		counterAdd(t, c, strconv.Itoa(i), time.Minute)
		if i%7 == 0 { // counting again does not change the order
			counterAdd(t, c, strconv.Itoa(i), time.Minute)
		}
	}
	if c.Len() != limit {
		t.Errorf("Len = %d, want %d", c.Len(), limit)
	}
	for i := total - limit - 5; i < total; i++ {
		want := int64(0)
		if i >= total-limit {
			want = 1
			if i%7 == 0 {
				want = 2
			}
		}
		if n, _ := counterCount(t, c, strconv.Itoa(i)); n != want {
			t.Errorf("Count(%d) = %d, want %d", i, n, want)
		}
	}
}

// Concurrent Adds on one key: none lost, each count handed out once.
func TestMemoryCounterConcurrent(t *testing.T) {
	const workers, each = 8, 1000
	c := cache.NewMemoryCounter(100)
	seen := make([][]int64, workers)
	// Beyond the members a key remembers, every Add counts: the count is
	// still exact here because every member is new.
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				n, _, err := c.Add(ctx, "203.0.113.0/24", fmt.Sprintf("w%d-%d@example.test", w, i), time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				seen[w] = append(seen[w], n)
			}
		}()
	}
	// Readers at the same time, for the race detector.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 1000 {
			_, _, _ = c.Count(ctx, "203.0.113.0/24")
			_ = c.Len()
		}
	}()
	wg.Wait()
	if n, _ := counterCount(t, c, "203.0.113.0/24"); n != workers*each {
		t.Errorf("Count = %d, want %d", n, workers*each)
	}
	got := make([]bool, workers*each+1)
	for _, ns := range seen {
		for _, n := range ns {
			if n < 1 || n > workers*each || got[n] {
				t.Fatalf("Add returned %d twice or out of range", n)
			}
			got[n] = true
		}
	}
}

// The count is one plain Redis key, <key_prefix><key>, holding the count
// with the window's end as its expiry, readable with redis-cli.
func TestRedisCounterKey(t *testing.T) {
	const window = 2 * time.Second
	srv := redistest.Start(t)
	s := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	const key = "harvest:203.0.113.9/32"
	if n, left := counterAdd(t, s, key, window); n != 1 || left != window {
		t.Errorf("first Add = %d, %v; want 1, %v", n, left, window)
	}
	for want := int64(2); want <= 3; want++ {
		n, left := counterAdd(t, s, key, window)
		if n != want {
			t.Errorf("Add #%d = %d", want, n)
		}
		wantLeft(t, fmt.Sprintf("Add #%d", want), left, window)
	}
	if v := srv.CLI("SCARD", "calloutd:"+key); v != "3" {
		t.Errorf("GET calloutd:%s = %q, want 3", key, v)
	}
	if pttl, err := strconv.Atoi(srv.CLI("PTTL", "calloutd:"+key)); err != nil || pttl < 1 || pttl > int(window.Milliseconds()) {
		t.Errorf("PTTL = %d (%v), want in [1, %d]", pttl, err, window.Milliseconds())
	}
	n, left := counterCount(t, s, key)
	if n != 3 {
		t.Errorf("Count = %d, want 3", n)
	}
	wantLeft(t, "Count", left, window)
	if n, left, err := s.Count(ctx, "harvest:198.51.100.0/24"); n != 0 || left != 0 || err != nil {
		t.Errorf("Count(missing) = %d, %v, %v; want 0, 0, nil", n, left, err)
	}
	if got := s.errs.get("count"); got != 0 {
		t.Errorf("%d count errors reported", got)
	}
}

// Two nodes on one Redis share one count.
func TestRedisCounterShared(t *testing.T) {
	srv := redistest.Start(t)
	a := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	b := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	for i, node := range []*testStore{a, b, a, b} {
		if n, _ := counterAdd(t, node, "harvest:192.0.2.0/24", time.Minute); n != int64(i+1) {
			t.Errorf("Add #%d (node %c) = %d", i+1, "abab"[i], n)
		}
	}
	for name, node := range map[string]*testStore{"a": a, "b": b} {
		if n, _ := counterCount(t, node, "harvest:192.0.2.0/24"); n != 4 {
			t.Errorf("%s: Count = %d, want 4", name, n)
		}
	}
}

// A count without an expiry (set by hand, or PERSISTed) would never end:
// the next Add gives it the window.
func TestRedisCounterNoExpiry(t *testing.T) {
	const window = 2 * time.Second
	srv := redistest.Start(t)
	s := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	srv.CLI("SADD", "calloutd:harvest:k", "a", "b", "c", "d", "e")
	if n, left := counterCount(t, s, "harvest:k"); n != 5 || left != 0 {
		t.Errorf("Count without expiry = %d, %v; want 5, 0", n, left)
	}
	if n, left := counterAdd(t, s, "harvest:k", window); n != 6 || left != window {
		t.Errorf("Add = %d, %v; want 6, %v", n, left, window)
	}
	if pttl, err := strconv.Atoi(srv.CLI("PTTL", "calloutd:harvest:k")); err != nil || pttl < 1 || pttl > int(window.Milliseconds()) {
		t.Errorf("PTTL = %d (%v) after Add, want in [1, %d]", pttl, err, window.Milliseconds())
	}
}

// When the window ends Redis drops the key, and counting starts again.
func TestRedisCounterWindowEnds(t *testing.T) {
	const window = 300 * time.Millisecond
	srv := redistest.Start(t)
	s := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	counterAdd(t, s, "harvest:k", window)
	if n, _ := counterAdd(t, s, "harvest:k", window); n != 2 {
		t.Fatalf("second Add = %d, want 2", n)
	}
	waitFor(t, "Redis expires the count", 5*time.Second, func() bool {
		return srv.CLI("EXISTS", "calloutd:harvest:k") == "0"
	})
	if n, left := counterCount(t, s, "harvest:k"); n != 0 || left != 0 {
		t.Errorf("Count after the window = %d, %v; want 0, 0", n, left)
	}
	if n, left := counterAdd(t, s, "harvest:k", window); n != 1 || left != window {
		t.Errorf("Add after the window = %d, %v; want 1, %v", n, left, window)
	}
}

// A key Redis cannot count (not an integer) is an error for the caller,
// counted, and not an outage.
func TestRedisCounterErrorReply(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	srv.CLI("SET", "calloutd:harvest:k", "not a set", "EX", "100")
	if n, _, err := s.Add(ctx, "harvest:k", "m", time.Minute); err == nil {
		t.Errorf("Add on a string key = %d, nil; want an error", n)
	}
	if n, _, err := s.Count(ctx, "harvest:k"); err == nil {
		t.Errorf("Count on a string key = %d, nil; want an error", n)
	}
	if !s.Up() {
		t.Error("an error reply marked Redis down")
	}
	if got := s.errs.get("count"); got != 2 {
		t.Errorf("%d count errors reported, want 2 (Add's and Count's error replies)", got)
	}
}

// Redis gone: this node counts on its own, without errors, and says so
// once through OnError; Redis back: the count is Redis's again.
func TestRedisCounterDownAndBack(t *testing.T) {
	const window = time.Minute
	srv := redistest.Start(t)
	s := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	if n, _ := counterAdd(t, s, "harvest:k", window); n != 1 {
		t.Fatalf("Add with Redis up = %d, want 1", n)
	}
	srv.Kill()
	for want := int64(1); want <= 3; want++ {
		n, left := counterAdd(t, s, "harvest:k", window)
		if n != want {
			t.Errorf("Add #%d with Redis down = %d (this node's own count starts at 1)", want, n)
		}
		wantLeft(t, "Add with Redis down", left, window)
	}
	if s.Up() {
		t.Error("still up after Redis was killed")
	}
	if n, _ := counterCount(t, s, "harvest:k"); n != 3 {
		t.Errorf("Count with Redis down = %d, want 3", n)
	}
	if got := s.errs.get("count"); got != 1 {
		t.Errorf("%d count errors reported, want 1 (later calls do not ask a dead Redis)", got)
	}

	srv.Restart()
	waitFor(t, "the store sees Redis again", 15*time.Second, s.Up)
	// The restarted Redis kept nothing (and no script): the count is
	// Redis's from 1.
	if n, _ := counterAdd(t, s, "harvest:k", window); n != 1 {
		t.Errorf("Add after Redis returned = %d, want 1 (counted in Redis)", n)
	}
	if v := srv.CLI("SCARD", "calloutd:harvest:k"); v != "1" {
		t.Errorf("GET after Redis returned = %q, want 1", v)
	}
	if n, _ := counterCount(t, s, "harvest:k"); n != 1 {
		t.Errorf("Count after Redis returned = %d, want 1 (Redis's)", n)
	}
}

// Cluster: each count lives on the master owning its slot.
func TestRedisCounterCluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	s := newStore(t, cache.RedisOptions{Addrs: cl.Addrs()})
	// One key per master.
	byNode := map[*redistest.Server]string{}
	for i := 0; len(byNode) < len(cl.Nodes); i++ {
		if i == 1000 {
			t.Fatalf("1000 keys land on %d of %d masters", len(byNode), len(cl.Nodes))
		}
		k := fmt.Sprintf("harvest:198.51.100.%d/32", i)
		if node := cl.NodeFor("calloutd:" + k); byNode[node] == "" {
			byNode[node] = k
		}
	}
	for node, k := range byNode {
		for want := int64(1); want <= 2; want++ {
			if n, _ := counterAdd(t, s, k, time.Minute); n != want {
				t.Errorf("%s: Add #%d = %d", k, want, n)
			}
		}
		if v := node.CLI("SCARD", "calloutd:"+k); v != "2" {
			t.Errorf("%s: GET on its master %s = %q, want 2", k, node.Addr(), v)
		}
		n, left := counterCount(t, s, k)
		if n != 2 {
			t.Errorf("%s: Count = %d, want 2", k, n)
		}
		wantLeft(t, k+": Count", left, time.Minute)
	}
	if got := s.errs.get("count"); got != 0 {
		t.Errorf("%d count errors reported", got)
	}
}

// A member counted again in its window counts once: a sender writing to
// one unknown address again and again is one unknown recipient.
func TestCounterDistinctMembers(t *testing.T) {
	srv := redistest.Start(t)
	for name, c := range map[string]cache.Counter{
		"memory": cache.NewMemoryCounter(10),
		"redis":  newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}}),
	} {
		t.Run(name, func(t *testing.T) {
			for i, m := range []string{"a@x", "b@x", "a@x", "a@x", "c@x", "b@x"} {
				n, _, err := c.Add(ctx, "harvest:d", m, time.Minute)
				want := []int64{1, 2, 2, 2, 3, 3}[i]
				if err != nil || n != want {
					t.Errorf("Add #%d (%s) = %d, %v; want %d", i+1, m, n, err, want)
				}
			}
		})
	}
}
