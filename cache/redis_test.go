package cache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/internal/redistest"
)

// The Redis store against real redis-server processes (internal/redistest):
// a single server, a Sentinel-managed master and replica, a 3-master
// Cluster.

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type errCount struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *errCount) add(op string) { c.mu.Lock(); c.n[op]++; c.mu.Unlock() }
func (c *errCount) get(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[op]
}

type testStore struct {
	*cache.Redis
	log  *logBuf
	errs *errCount
}

func newStore(t *testing.T, o cache.RedisOptions) *testStore {
	t.Helper()
	ts := &testStore{log: &logBuf{}, errs: &errCount{n: map[string]int{}}}
	if o.KeyPrefix == "" {
		o.KeyPrefix = "calloutd:"
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = time.Second
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = 200 * time.Millisecond
	}
	if o.LocalEntries == 0 {
		o.LocalEntries = 1000
	}
	o.Logger = slog.New(slog.NewTextHandler(ts.log, nil))
	o.OnError = ts.errs.add
	s, err := cache.NewRedis(o)
	if err != nil {
		t.Fatal(err)
	}
	ts.Redis = s
	t.Cleanup(func() {
		s.Close()
		if t.Failed() {
			t.Logf("store log:\n%s", ts.log.String())
		}
	})
	return ts
}

// waitTracking waits until the store's local layer is in use.
func waitTracking(t *testing.T, s *testStore) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !s.Tracking() {
		if time.Now().After(deadline) {
			t.Fatalf("invalidation channel not up after 10s; status %q", s.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var ctx = context.Background()

func entry(verdict string) cache.Entry {
	return cache.Entry{Verdict: verdict, Code: 550, Enhanced: "5.1.1", Text: "<bob@example.com>: Recipient address rejected: User unknown",
		Route: "main", Server: "10.0.0.5:25", Reason: "no_such_user", Verified: time.Now().UTC().Truncate(time.Millisecond), Routes: 0xfeedface12345678}
}

func mustGet(t *testing.T, s cache.Store, key string) (cache.Entry, bool) {
	t.Helper()
	e, ok, err := s.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	return e, ok
}

// A verdict is one readable key whose Redis TTL is its lifetime, and it
// comes back as it went in.
func TestRedisKeySchema(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	want := entry("unknown")
	if err := s.Set(ctx, "bob@example.com", want, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	raw := srv.CLI("GET", "calloutd:rcpt:bob@example.com")
	var v map[string]any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatalf("value %q is not JSON: %v", raw, err)
	}
	for k, w := range map[string]any{"v": 1.0, "verdict": "unknown", "code": 550.0, "enhanced": "5.1.1", "route": "main",
		"server": "10.0.0.5:25", "reason": "no_such_user", "routes": "feedface12345678", "text": want.Text} {
		if v[k] != w {
			t.Errorf("value field %s = %v, want %v (value %s)", k, v[k], w, raw)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(v["verified"])); err != nil {
		t.Errorf("verified %v: %v", v["verified"], err)
	}
	if ttl, _ := strconv.Atoi(srv.CLI("TTL", "calloutd:rcpt:bob@example.com")); ttl < 7199 || ttl > 7200 {
		t.Errorf("TTL = %d, want 7200", ttl)
	}
	got, ok := mustGet(t, s, "bob@example.com")
	if !ok {
		t.Fatal("not found")
	}
	if d := time.Until(got.Expires); d < 2*time.Hour-5*time.Second || d > 2*time.Hour {
		t.Errorf("Expires in %v, want 2h", d)
	}
	got.Expires = time.Time{}
	if !got.Verified.Equal(want.Verified) {
		t.Errorf("Verified %v, want %v", got.Verified, want.Verified)
	}
	got.Verified = want.Verified
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	// A learned verdict says so, with the queue id, in its own field.
	learned := want
	learned.Learned = "4FA2B3C4D5"
	_ = s.Set(ctx, "carol@example.com", learned, time.Hour)
	if raw := srv.CLI("GET", "calloutd:rcpt:carol@example.com"); !strings.Contains(raw, `"learned":"4FA2B3C4D5"`) {
		t.Errorf("learned verdict stored as %s", raw)
	}
	if got, ok := mustGet(t, s, "carol@example.com"); !ok || got.Learned != "4FA2B3C4D5" {
		t.Errorf("learned verdict read back as %+v", got)
	}
	// Sub-second lifetimes are kept exactly (PX).
	_ = s.Set(ctx, "short@example.com", want, 1500*time.Millisecond)
	if pttl, _ := strconv.Atoi(srv.CLI("PTTL", "calloutd:rcpt:short@example.com")); pttl < 1000 || pttl > 1500 {
		t.Errorf("PTTL = %d, want about 1500", pttl)
	}
}

// A value calloutd cannot read is a miss, counted and logged, and the next
// verdict overwrites it.
func TestRedisCorruptValue(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	for i, bad := range []string{"garbage", `{"v":2,"verdict":"valid"}`, `{"v":1}`, `{"v":1,"verdict":"valid","routes":"xyz"}`, ``} {
		key := fmt.Sprintf("bad%d@example.com", i)
		srv.CLI("SET", "calloutd:rcpt:"+key, bad, "EX", "100")
		if e, ok := mustGet(t, s, key); ok {
			t.Errorf("%q: got %+v, want a miss", bad, e)
		}
		if err := s.Set(ctx, key, entry("valid"), time.Hour); err != nil {
			t.Fatal(err)
		}
		if e, ok := mustGet(t, s, key); !ok || e.Verdict != "valid" {
			t.Errorf("%q: after Set got %+v %v", bad, e, ok)
		}
	}
	if n := s.errs.get("decode"); n != 5 {
		t.Errorf("decode errors counted: %d, want 5", n)
	}
	if !strings.Contains(s.log.String(), "redis value not understood") {
		t.Errorf("no log line for the corrupt value:\n%s", s.log.String())
	}
	if !s.Up() {
		t.Error("a corrupt value marked Redis down")
	}
}

// Unreachable verdicts (Local) stay in the node that reached them.
func TestRedisLocalEntriesStayLocal(t *testing.T) {
	srv := redistest.Start(t)
	a := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	b := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	e := entry("unreachable")
	e.Local = true
	_ = a.Set(ctx, "x@example.com", e, time.Minute)
	if n := srv.CLI("EXISTS", "calloutd:rcpt:x@example.com"); n != "0" {
		t.Errorf("local entry written to Redis (EXISTS %s)", n)
	}
	if got, ok := mustGet(t, a, "x@example.com"); !ok || got.Verdict != "unreachable" {
		t.Errorf("node a: got %+v %v, want its own unreachable entry", got, ok)
	}
	if got, ok := mustGet(t, b, "x@example.com"); ok {
		t.Errorf("node b sees node a's local entry %+v", got)
	}
	// A shared verdict reached later wins over the node's own.
	_ = b.Set(ctx, "x@example.com", entry("valid"), time.Minute)
	if got, ok := mustGet(t, a, "x@example.com"); !ok || got.Verdict != "valid" {
		t.Errorf("node a: got %+v %v, want the shared valid verdict", got, ok)
	}
}

// A copy in the local layer is served without Redis, and a change made by
// anyone (redis-cli) removes it within 100 ms.
func TestRedisLocalLayerCoherent(t *testing.T) {
	srv := redistest.Start(t)
	a := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	b := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	waitTracking(t, b)
	_ = a.Set(ctx, "bob@example.com", entry("unknown"), time.Hour)
	time.Sleep(100 * time.Millisecond) // a's write reaches b as an invalidation
	if _, ok := mustGet(t, b, "bob@example.com"); !ok {
		t.Fatal("b: miss")
	}
	if b.Len() != 1 {
		t.Fatalf("b holds %d entries, want the one copy", b.Len())
	}
	// The copy answers: reads do not reach Redis.
	before := commandCount(t, srv, "get")
	for range 100 {
		if _, ok := mustGet(t, b, "bob@example.com"); !ok {
			t.Fatal("b: miss on the copy")
		}
	}
	if after := commandCount(t, srv, "get"); after != before {
		t.Errorf("100 lookups of a local copy made %d GETs", after-before)
	}

	for _, change := range [][]string{
		{"DEL", "calloutd:rcpt:bob@example.com"},
		{"SET", "calloutd:rcpt:bob@example.com", `{"v":1,"verdict":"valid","verified":"2026-01-01T00:00:00Z"}`, "EX", "60"},
		{"EXPIRE", "calloutd:rcpt:bob@example.com", "1"},
		{"FLUSHALL"},
	} {
		_ = a.Set(ctx, "bob@example.com", entry("unknown"), time.Hour)
		// a's write reaches b's copy as an invalidation, within 100ms.
		time.Sleep(100 * time.Millisecond)
		if e, ok := mustGet(t, b, "bob@example.com"); !ok || e.Verdict != "unknown" {
			t.Fatalf("%v: b got %+v %v before the change", change, e, ok)
		}
		srv.CLI(change...)
		time.Sleep(100 * time.Millisecond)
		e, ok := mustGet(t, b, "bob@example.com")
		switch change[0] {
		case "DEL", "FLUSHALL":
			if ok {
				t.Errorf("%v: b still serves %+v 100ms later", change, e)
			}
		case "SET":
			if !ok || e.Verdict != "valid" {
				t.Errorf("%v: b got %+v %v, want the new value", change, e, ok)
			}
		case "EXPIRE":
			if !ok || time.Until(e.Expires) > time.Second {
				t.Errorf("%v: b got %+v %v, want the shortened lifetime", change, e, ok)
			}
		}
	}
}

// commandCount reads how many times Redis ran cmd.
func commandCount(t *testing.T, srv *redistest.Server, cmd string) int {
	t.Helper()
	for _, line := range strings.Split(srv.CLI("INFO", "commandstats"), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

// A lost invalidation channel empties the local layer at once: a flush
// made while it is down is never missed.
func TestRedisTrackingLost(t *testing.T) {
	srv := redistest.Start(t)
	a := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	waitTracking(t, a)
	_ = a.Set(ctx, "bob@example.com", entry("unknown"), time.Hour)
	mustGet(t, a, "bob@example.com")
	srv.CLI("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") // every client but redis-cli itself
	srv.CLI("DEL", "calloutd:rcpt:bob@example.com")
	if e, ok := mustGet(t, a, "bob@example.com"); ok {
		t.Errorf("served %+v after its invalidation channel was killed and the key deleted", e)
	}
	waitFor(t, "tracking back", 10*time.Second, a.Tracking)
	if a.errs.get("tracking") == 0 {
		t.Error("lost channel not counted")
	}
	if n := strings.Count(a.log.String(), "invalidation channel lost"); n != 1 {
		t.Errorf("%d log lines for one lost channel, want 1:\n%s", n, a.log.String())
	}
	// Coherent again.
	_ = a.Set(ctx, "bob@example.com", entry("valid"), time.Hour)
	mustGet(t, a, "bob@example.com")
	srv.CLI("DEL", "calloutd:rcpt:bob@example.com")
	time.Sleep(100 * time.Millisecond)
	if e, ok := mustGet(t, a, "bob@example.com"); ok {
		t.Errorf("served %+v after DEL", e)
	}
}

// Redis gone: verdicts are kept in this node, nothing waits for Redis, one
// log line; Redis back: shared again, and what was kept meanwhile is
// dropped.
func TestRedisDownAndBack(t *testing.T) {
	srv := redistest.Start(t)
	a := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	b := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	_ = a.Set(ctx, "before@example.com", entry("valid"), time.Hour)
	srv.Kill()

	// The first call finds out; later ones do not ask Redis.
	_, _ = mustGet(t, a, "before@example.com")
	if a.Up() {
		t.Fatal("still up after Redis was killed")
	}
	start := time.Now()
	for i := range 200 {
		key := fmt.Sprintf("u%d@example.com", i)
		_ = a.Set(ctx, key, entry("unknown"), time.Hour)
		if e, ok := mustGet(t, a, key); !ok || e.Verdict != "unknown" {
			t.Fatalf("%s: got %+v %v from this node's memory while Redis is down", key, e, ok)
		}
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("200 writes and reads with Redis down took %v: something waits for Redis", d)
	}
	if !strings.Contains(a.Status(), "degraded") {
		t.Errorf("Status() = %q", a.Status())
	}
	srv.Restart()
	waitFor(t, "a sees Redis again", 15*time.Second, a.Up)
	if _, ok := mustGet(t, a, "u1@example.com"); ok {
		t.Error("a verdict kept during the outage is still served after Redis returned (a flush meanwhile would be missed)")
	}
	_ = a.Set(ctx, "after@example.com", entry("valid"), time.Hour)
	waitFor(t, "b sees Redis again", 15*time.Second, func() bool { mustGet(t, b, "x@example.com"); return b.Up() })
	if e, ok := mustGet(t, b, "after@example.com"); !ok || e.Verdict != "valid" {
		t.Errorf("b: got %+v %v, want the verdict a stored after the outage", e, ok)
	}
	if n := strings.Count(a.log.String(), "redis unreachable"); n != 1 {
		t.Errorf("%d outage log lines, want 1:\n%s", n, a.log.String())
	}
	if n := strings.Count(a.log.String(), "redis reachable again"); n != 1 {
		t.Errorf("%d recovery log lines, want 1:\n%s", n, a.log.String())
	}
}

// A store started while Redis is down serves and recovers.
func TestRedisDownAtStart(t *testing.T) {
	srv := redistest.Start(t)
	srv.Kill()
	a := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	if a.Up() {
		t.Fatal("up with Redis dead")
	}
	_ = a.Set(ctx, "bob@example.com", entry("valid"), time.Hour)
	if _, ok := mustGet(t, a, "bob@example.com"); !ok {
		t.Error("verdict not kept locally")
	}
	srv.Restart()
	waitFor(t, "up", 15*time.Second, a.Up)
	waitTracking(t, a)
}

// A Redis that accepts connections and never answers costs a lookup at
// most read_timeout, and only until the store notices.
func TestRedisHungServer(t *testing.T) {
	srv := redistest.Start(t)
	a := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}, ReadTimeout: 100 * time.Millisecond})
	_ = a.Set(ctx, "bob@example.com", entry("valid"), time.Hour)
	// Stopped, its kernel still accepts connections; nothing answers.
	if err := syscall.Kill(srv.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(srv.Pid(), syscall.SIGCONT) })
	start := time.Now()
	_, _ = mustGet(t, a, "nobody@example.com")
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Errorf("lookup against a hung Redis took %v, read_timeout is 100ms", d)
	}
	start = time.Now()
	for range 100 {
		mustGet(t, a, "nobody@example.com")
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("100 lookups after the first failure took %v", d)
	}
}

// Several nodes asked about one new address at once: one verifies, the
// others wait for its verdict.
func TestRedisClaim(t *testing.T) {
	srv := redistest.Start(t)
	nodes := []*testStore{
		newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}}),
		newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}}),
		newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}}),
	}
	for _, n := range nodes {
		waitTracking(t, n)
	}
	var verifiers atomic.Int32
	var wg sync.WaitGroup
	got := make([]string, 9)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := nodes[i%3]
			e, ok, release := n.Claim(ctx, "new@example.com", 5*time.Second)
			if ok {
				got[i] = "waited:" + e.Verdict
				return
			}
			verifiers.Add(1)
			time.Sleep(100 * time.Millisecond) // the callout
			_ = n.Set(ctx, "new@example.com", entry("valid"), time.Hour)
			release()
			got[i] = "verified"
		}()
	}
	wg.Wait()
	if verifiers.Load() != 1 {
		t.Errorf("%d verifiers, want 1: %v", verifiers.Load(), got)
	}
	if n := srv.CLI("EXISTS", "calloutd:lease:new@example.com"); n != "0" {
		t.Error("lease left behind")
	}

	// A holder that dies costs the others at most the lease.
	if _, ok, _ := nodes[0].Claim(ctx, "dead@example.com", 300*time.Millisecond); ok {
		t.Fatal("found a verdict for a new address")
	}
	start := time.Now()
	_, ok, release := nodes[1].Claim(ctx, "dead@example.com", time.Second)
	if ok {
		t.Fatal("found a verdict nobody stored")
	}
	release()
	if d := time.Since(start); d < 200*time.Millisecond || d > 700*time.Millisecond {
		t.Errorf("waited %v on a dead holder's 300ms lease", d)
	}

	// A waiter gives up with its context.
	_, _, _ = nodes[0].Claim(ctx, "slow@example.com", 10*time.Second)
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, ok, release = nodes[1].Claim(cctx, "slow@example.com", 10*time.Second)
	release()
	if ok || cctx.Err() == nil {
		t.Errorf("Claim returned ok=%v before its context ended", ok)
	}
}

// Flush removes one domain's verdicts, or all, and not other keys.
func TestRedisFlush(t *testing.T) {
	srv := redistest.Start(t)
	a := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	for i := range 1500 {
		_ = a.Set(ctx, fmt.Sprintf("u%d@a.example", i), entry("valid"), time.Hour)
	}
	_ = a.Set(ctx, "u1@b.example", entry("valid"), time.Hour)
	_ = a.Set(ctx, "u1@sub.a.example", entry("valid"), time.Hour)
	srv.CLI("SET", "other:rcpt:u1@a.example", "x")
	n, err := a.Flush(ctx, "a.example")
	if err != nil || n != 1500 {
		t.Fatalf("Flush(a.example) = %d, %v; want 1500", n, err)
	}
	if _, ok := mustGet(t, a, "u1@b.example"); !ok {
		t.Error("flushed another domain")
	}
	if _, ok := mustGet(t, a, "u1@sub.a.example"); !ok {
		t.Error("flushed a subdomain")
	}
	if n, err := a.Flush(ctx, ""); err != nil || n != 2 {
		t.Errorf("Flush(all) = %d, %v; want 2", n, err)
	}
	if srv.CLI("EXISTS", "other:rcpt:u1@a.example") != "1" {
		t.Error("flushed a key outside the prefix")
	}
	if n, err := a.DeleteCount(ctx, "nobody@b.example"); err != nil || n != 0 {
		t.Errorf("DeleteCount(missing) = %d, %v", n, err)
	}
}

// Sentinel: the store follows a failover, and its local layer follows the
// new master.
func TestRedisSentinel(t *testing.T) {
	sn := redistest.StartSentinel(t)
	a := newStore(t, cache.RedisOptions{Addrs: sn.Addrs(), MasterName: sn.MasterName()})
	b := newStore(t, cache.RedisOptions{Addrs: sn.Addrs(), MasterName: sn.MasterName()})
	waitTracking(t, b)
	_ = a.Set(ctx, "bob@example.com", entry("valid"), time.Hour)
	if _, ok := mustGet(t, b, "bob@example.com"); !ok {
		t.Fatal("b: miss")
	}
	newMaster := sn.Failover()
	// Writes and reads work again within a few seconds.
	waitFor(t, "store works on the new master", 20*time.Second, func() bool {
		_ = a.Set(ctx, "after@example.com", entry("unknown"), time.Hour)
		e, ok := mustGet(t, b, "after@example.com")
		return a.Up() && b.Up() && ok && e.Verdict == "unknown"
	})
	waitFor(t, "b follows the new master", 10*time.Second, func() bool {
		w := b.Watched()
		return len(w) == 1 && w[0] == newMaster && b.Tracking()
	})
	mustGet(t, b, "after@example.com")
	var master *redistest.Server
	for _, s := range []*redistest.Server{sn.Master, sn.Replica} {
		if s.Addr() == newMaster {
			master = s
		}
	}
	master.CLI("DEL", "calloutd:rcpt:after@example.com")
	time.Sleep(100 * time.Millisecond)
	if e, ok := mustGet(t, b, "after@example.com"); ok {
		t.Errorf("b serves %+v after DEL on the new master", e)
	}
}

// Cluster: keys spread over the masters; every master's invalidations
// reach the local layer; Flush walks every master.
func TestRedisCluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	a := newStore(t, cache.RedisOptions{Addrs: cl.Addrs()})
	b := newStore(t, cache.RedisOptions{Addrs: cl.Addrs()})
	waitTracking(t, b)
	var keys []string
	for i := range 60 {
		k := fmt.Sprintf("u%d@example.com", i)
		keys = append(keys, k)
		if err := a.Set(ctx, k, entry("valid"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	_ = a.Set(ctx, "u1@other.example", entry("valid"), time.Hour)
	owners := map[string]bool{}
	for _, k := range keys {
		if _, ok := mustGet(t, b, k); !ok {
			t.Fatalf("b: %s missing", k)
		}
		owners[cl.NodeFor("calloutd:rcpt:"+k).Addr()] = true
	}
	if len(owners) != 3 {
		t.Errorf("keys on %d masters, want 3", len(owners))
	}
	for _, k := range keys[:6] {
		cl.NodeFor("calloutd:rcpt:"+k).CLI("DEL", "calloutd:rcpt:"+k)
	}
	time.Sleep(100 * time.Millisecond)
	for _, k := range keys[:6] {
		if e, ok := mustGet(t, b, k); ok {
			t.Errorf("b serves %s = %+v after DEL on its master", k, e)
		}
	}
	n, err := b.Flush(ctx, "example.com")
	if err != nil || n != 54 {
		t.Errorf("Flush = %d, %v; want 54", n, err)
	}
	if _, ok := mustGet(t, a, "u1@other.example"); !ok {
		t.Error("flushed another domain")
	}
	if _, ok := mustGet(t, a, keys[10]); ok {
		t.Error("a still serves a flushed key")
	}
}

// An error reply (a key of another type, a full Redis) is a miss, not an
// outage: the node does not flap between degraded and reachable.
func TestRedisErrorReplyIsNotAnOutage(t *testing.T) {
	srv := redistest.Start(t)
	a := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	srv.CLI("HSET", "calloutd:rcpt:bob@example.com", "f", "v")
	for range 3 {
		if e, ok := mustGet(t, a, "bob@example.com"); ok {
			t.Fatalf("got %+v from a hash", e)
		}
	}
	if !a.Up() || strings.Contains(a.log.String(), "redis unreachable") {
		t.Errorf("an error reply marked Redis down:\n%s", a.log.String())
	}
	if n := strings.Count(a.log.String(), "redis call failed"); n != 1 {
		t.Errorf("%d warnings for 3 failed calls, want 1 (rate-limited)", n)
	}
	// The next verdict overwrites it.
	if err := a.Set(ctx, "bob@example.com", entry("valid"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if e, ok := mustGet(t, a, "bob@example.com"); !ok || e.Verdict != "valid" {
		t.Errorf("after Set: %+v %v", e, ok)
	}
	// Redis full: writes fail, the node stays up and does not keep the
	// verdict aside (it would outlive a flush).
	srv.CLI("CONFIG", "SET", "maxmemory", "1")
	_ = a.Set(ctx, "carol@example.com", entry("valid"), time.Hour)
	srv.CLI("CONFIG", "SET", "maxmemory", "0")
	if !a.Up() {
		t.Error("OOM marked Redis down")
	}
	if e, ok := mustGet(t, a, "carol@example.com"); ok {
		t.Errorf("a verdict Redis refused is served: %+v", e)
	}
}

// Each claim has its own token: a holder whose lease expired cannot
// release the next holder's lease.
func TestRedisClaimTokens(t *testing.T) {
	srv := redistest.Start(t)
	a := newStore(t, cache.RedisOptions{Addrs: []string{srv.Addr()}})
	_, _, releaseOld := a.Claim(ctx, "k@example.com", 100*time.Millisecond)
	time.Sleep(150 * time.Millisecond)
	_, ok, releaseNew := a.Claim(ctx, "k@example.com", 10*time.Second)
	if ok {
		t.Fatal("found a verdict")
	}
	releaseOld()
	if srv.CLI("EXISTS", "calloutd:lease:k@example.com") != "1" {
		t.Error("an expired holder released the next holder's lease")
	}
	releaseNew()
	if srv.CLI("EXISTS", "calloutd:lease:k@example.com") != "0" {
		t.Error("lease not released by its holder")
	}
}

// BenchmarkRedisFlushSeen measures how long after a DEL by another client
// (a second store, as redis-cli would) a node stops serving its local copy:
// the bound is 100 ms. Reports the median and the maximum.
func BenchmarkRedisFlushSeen(b *testing.B) {
	srv := redistest.Start(b)
	o := cache.RedisOptions{Addrs: []string{srv.Addr()}, KeyPrefix: "calloutd:", DialTimeout: time.Second,
		ReadTimeout: 200 * time.Millisecond, LocalEntries: 1000, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	node, err := cache.NewRedis(o)
	if err != nil {
		b.Fatal(err)
	}
	defer node.Close()
	o.NoTracking = true
	admin, err := cache.NewRedis(o)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	for !node.Tracking() {
		time.Sleep(10 * time.Millisecond)
	}
	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		key := fmt.Sprintf("u%d@example.com", i)
		_ = admin.Set(ctx, key, entry("unknown"), time.Hour)
		for { // until the node holds its copy
			if _, ok, _ := node.Get(ctx, key); ok && node.Len() > 0 {
				break
			}
		}
		start := time.Now()
		_ = admin.Delete(ctx, key)
		for {
			if _, ok, _ := node.Get(ctx, key); !ok {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
}
