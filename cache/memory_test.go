package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var _ Store = (*Memory)(nil)

// clock is a fake time source for Memory.now.
type clock struct{ t time.Time }

func (c *clock) now() time.Time             { return c.t }
func (c *clock) advance(d time.Duration)    { c.t = c.t.Add(d) }
func newClock() *clock                      { return &clock{t: time.Date(2025, 11, 23, 9, 0, 0, 0, time.UTC)} }
func withClock(m *Memory, c *clock) *Memory { m.now = c.now; return m }

var ctx = context.Background()

// sample is an entry as the daemon stores one for an unknown recipient.
var sample = Entry{
	Verdict:  "unknown",
	Code:     550,
	Enhanced: "5.1.1",
	Text:     "User unknown in local recipient table",
	Route:    "mailstore",
	Server:   "127.0.0.1:2526",
	Verified: time.Date(2025, 11, 23, 8, 59, 59, 0, time.UTC),
}

func mustGet(t *testing.T, m *Memory, key string) (Entry, bool) {
	t.Helper()
	e, ok, err := m.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return e, ok
}

func mustSet(t testing.TB, m *Memory, key string, e Entry, ttl time.Duration) {
	t.Helper()
	if err := m.Set(ctx, key, e, ttl); err != nil {
		t.Fatalf("Set(%q): %v", key, err)
	}
}

func TestMemoryGetSetDelete(t *testing.T) {
	c := newClock()
	m := withClock(NewMemory(10), c)
	const key = "bob@example.com"

	if e, ok := mustGet(t, m, key); ok {
		t.Fatalf("Get of a missing key: got %+v, want none", e)
	}
	in := sample
	in.Expires = c.t.Add(time.Hour * 1000) // ignored: the ttl decides
	mustSet(t, m, key, in, time.Hour)
	in.Text = "changed after Set" // the store keeps its own copy

	want := sample
	want.Expires = c.t.Add(time.Hour)
	if got, ok := mustGet(t, m, key); !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("Get after Set:\ngot  %+v, %v\nwant %+v, true", got, ok, want)
	}
	if got := m.Len(); got != 1 {
		t.Errorf("Len: got %d, want 1", got)
	}

	if err := m.Delete(ctx, key); err != nil {
		t.Errorf("Delete: got %v, want nil", err)
	}
	if e, ok := mustGet(t, m, key); ok {
		t.Errorf("Get after Delete: got %+v, want none", e)
	}
	if err := m.Delete(ctx, key); err != nil {
		t.Errorf("Delete of a missing key: got %v, want nil", err)
	}
	if got := m.Len(); got != 0 {
		t.Errorf("Len: got %d, want 0", got)
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close: got %v, want nil", err)
	}
}

func TestMemoryTTL(t *testing.T) {
	tests := []struct {
		name    string
		ttl     time.Duration
		after   time.Duration // time passed before the Get
		wantHit bool
	}{
		{"at once", time.Hour, 0, true},
		{"just before expiry", time.Hour, time.Hour - time.Nanosecond, true},
		{"at expiry", time.Hour, time.Hour, false},
		{"after expiry", time.Hour, 2 * time.Hour, false},
		{"one nanosecond ttl, at once", time.Nanosecond, 0, true},
		{"zero ttl stores nothing", 0, 0, false},
		{"negative ttl stores nothing", -time.Minute, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			m := withClock(NewMemory(10), c)
			start := c.t
			mustSet(t, m, "bob@example.com", sample, tt.ttl)
			c.advance(tt.after)
			e, ok := mustGet(t, m, "bob@example.com")
			if ok != tt.wantHit {
				t.Fatalf("Get %v after Set with ttl %v: got hit %v, want %v", tt.after, tt.ttl, ok, tt.wantHit)
			}
			if ok {
				if want := start.Add(tt.ttl); !e.Expires.Equal(want) {
					t.Errorf("Expires: got %v, want %v", e.Expires, want)
				}
			} else if n := m.Len(); n != 0 {
				t.Errorf("Len after a miss: got %d, want 0 (an expired entry goes when looked up)", n)
			}
		})
	}
}

// Expired entries count in Len until a lookup or an eviction removes them.
func TestMemoryLenCountsExpiredUntilLookedUp(t *testing.T) {
	c := newClock()
	m := withClock(NewMemory(10), c)
	mustSet(t, m, "a@example.com", sample, time.Minute)
	mustSet(t, m, "b@example.com", sample, time.Hour)
	c.advance(2 * time.Minute)
	if got := m.Len(); got != 2 {
		t.Errorf("Len with one entry expired: got %d, want 2", got)
	}
	mustGet(t, m, "a@example.com")
	if got := m.Len(); got != 1 {
		t.Errorf("Len after looking the expired entry up: got %d, want 1", got)
	}
}

func TestMemoryOverwrite(t *testing.T) {
	c := newClock()
	m := withClock(NewMemory(10), c)
	const key = "bob@example.com"
	mustSet(t, m, key, sample, time.Minute)
	c.advance(30 * time.Second)

	valid := Entry{Verdict: "valid", Code: 250, Route: "mailstore", Server: "127.0.0.1:2526", Verified: c.t}
	mustSet(t, m, key, valid, time.Minute)
	refreshed := c.t.Add(time.Minute)
	c.advance(45 * time.Second) // past the first entry's expiry, not the second's

	want := valid
	want.Expires = refreshed
	if got, ok := mustGet(t, m, key); !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("Get after overwrite:\ngot  %+v, %v\nwant %+v, true", got, ok, want)
	}
	if got := m.Len(); got != 1 {
		t.Errorf("Len: got %d, want 1", got)
	}
	if got := m.Evictions(); got != 0 {
		t.Errorf("Evictions: got %d, want 0", got)
	}
}

// order lists a one-shard store's keys, most recently used first, without
// touching recency.
func order(m *Memory) []string {
	s := &m.shards[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for n := s.head.next; n != &s.head; n = n.next {
		keys = append(keys, n.key)
	}
	return keys
}

func TestMemoryLRU(t *testing.T) {
	tests := []struct {
		name          string
		ops           string   // +k sets k, ?k gets k, -k deletes k
		want          []string // most recently used first
		wantEvictions uint64
	}{
		{"fill", "+a +b +c", []string{"c", "b", "a"}, 0},
		{"fourth evicts the least recently used", "+a +b +c +d", []string{"d", "c", "b"}, 1},
		{"Get refreshes recency", "+a +b +c ?a +d", []string{"d", "a", "c"}, 1},
		{"a miss changes nothing", "+a +b +c ?x +d", []string{"d", "c", "b"}, 1},
		{"Set of a held key refreshes it, evicts nothing", "+a +b +c +a", []string{"a", "c", "b"}, 0},
		{"Set of a held key then a new one", "+a +b +c +a +d", []string{"d", "a", "c"}, 1},
		{"Delete makes room", "+a +b +c -b +d", []string{"d", "c", "a"}, 0},
		{"long run keeps the last three", "+a +b +c +d +e +f +g +h +i +j", []string{"j", "i", "h"}, 7},
		{"recency survives evictions", "+a +b +c ?a +d ?a +e +f", []string{"f", "e", "a"}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := withClock(NewMemory(3), newClock())
			if got := len(m.shards); got != 1 {
				t.Fatalf("NewMemory(3): got %d shards, want 1 (exact LRU)", got)
			}
			for _, op := range strings.Fields(tt.ops) {
				switch key := op[1:]; op[0] {
				case '+':
					mustSet(t, m, key, Entry{Text: key}, time.Hour)
				case '?':
					if e, ok := mustGet(t, m, key); ok && e.Text != key {
						t.Fatalf("Get(%q): got entry for %q", key, e.Text)
					}
				case '-':
					m.Delete(ctx, key)
				}
			}
			if got := order(m); !slices.Equal(got, tt.want) {
				t.Errorf("after %s: got %v, want %v (most recent first)", tt.ops, got, tt.want)
			}
			if got := m.Evictions(); got != tt.wantEvictions {
				t.Errorf("Evictions: got %d, want %d", got, tt.wantEvictions)
			}
			if got := m.Len(); got != len(tt.want) {
				t.Errorf("Len: got %d, want %d", got, len(tt.want))
			}
		})
	}
}

func TestNewMemoryShards(t *testing.T) {
	tests := []struct {
		max        int
		wantShards int
		wantTotal  int
	}{
		{-5, 1, 1},
		{0, 1, 1},
		{1, 1, 1},
		{3, 1, 3},
		{8191, 1, 8191},
		{8192, 2, 8192},
		{16_385, 4, 16_385},
		{100_000, 16, 100_000},
		{300_000, 64, 300_000},
		{1_000_000, 64, 1_000_000},
		{10_000_001, 64, 10_000_001},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.max), func(t *testing.T) {
			m := NewMemory(tt.max)
			if got := len(m.shards); got != tt.wantShards {
				t.Errorf("shards: got %d, want %d", got, tt.wantShards)
			}
			// The shards' bounds add up to the store's, not more.
			total := 0
			for i := range m.shards {
				s := &m.shards[i]
				if len(m.shards) > 1 && s.max < 4096 {
					t.Errorf("shard %d: got bound %d, want at least 4096", i, s.max)
				}
				total += s.max
			}
			if total != tt.wantTotal {
				t.Errorf("sum of shard bounds: got %d, want %d", total, tt.wantTotal)
			}
		})
	}
}

// A large store spreads keys over its shards and never holds more than its
// bound, however many keys go in.
func TestMemoryLargeStoreBound(t *testing.T) {
	const max, inserts = 300_000, 600_000
	m := NewMemory(max)
	if len(m.shards) < 2 {
		t.Fatalf("NewMemory(%d): got %d shards, want several", max, len(m.shards))
	}
	for i := range inserts {
		mustSet(t, m, fmt.Sprintf("user%d@example.com", i), Entry{Verdict: "valid"}, time.Hour)
		if (i+1)%100_000 == 0 {
			if n := m.Len(); n > max {
				t.Fatalf("after %d inserts: got Len %d, want at most %d", i+1, n, max)
			}
		}
	}
	if got := m.Len(); got != max {
		t.Errorf("Len after %d inserts: got %d, want %d (every shard full)", inserts, got, max)
	}
	if got, want := m.Evictions(), uint64(inserts-max); got != want {
		t.Errorf("Evictions: got %d, want %d", got, want)
	}
	for i := range m.shards {
		if n := len(m.shards[i].items); n != m.shards[i].max {
			t.Errorf("shard %d: got %d entries, want %d (full)", i, n, m.shards[i].max)
		}
	}
	last := fmt.Sprintf("user%d@example.com", inserts-1)
	if _, ok := mustGet(t, m, last); !ok {
		t.Errorf("Get(%q), the last key set: got none, want a hit", last)
	}
}

func TestMemoryDeleteFunc(t *testing.T) {
	keys := []string{
		"a@example.com", "b@example.com", "c@example.com",
		"a@sub.example.com", "a@example.org", "a@notexample.com",
	}
	tests := []struct {
		name        string
		f           func(string) bool
		wantRemoved int
		wantLeft    []string
	}{
		{
			name:        "one domain",
			f:           func(k string) bool { return strings.HasSuffix(k, "@example.com") },
			wantRemoved: 3,
			wantLeft:    []string{"a@example.org", "a@notexample.com", "a@sub.example.com"},
		},
		{
			name: "a domain and its subdomains",
			f: func(k string) bool {
				return strings.HasSuffix(k, "@example.com") || strings.HasSuffix(k, ".example.com")
			},
			wantRemoved: 4,
			wantLeft:    []string{"a@example.org", "a@notexample.com"},
		},
		{
			name:        "one address",
			f:           func(k string) bool { return k == "b@example.com" },
			wantRemoved: 1,
			wantLeft:    []string{"a@example.com", "a@example.org", "a@notexample.com", "a@sub.example.com", "c@example.com"},
		},
		{
			name:        "nothing",
			f:           func(string) bool { return false },
			wantRemoved: 0,
			wantLeft:    slices.Sorted(slices.Values(keys)),
		},
		{
			name:        "everything",
			f:           func(string) bool { return true },
			wantRemoved: len(keys),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMemory(100_000) // several shards
			for _, k := range keys {
				mustSet(t, m, k, Entry{Text: k}, time.Hour)
			}
			if got := m.DeleteFunc(tt.f); got != tt.wantRemoved {
				t.Errorf("DeleteFunc: got %d removed, want %d", got, tt.wantRemoved)
			}
			var left []string
			for _, k := range keys {
				if _, ok := mustGet(t, m, k); ok {
					left = append(left, k)
				}
			}
			slices.Sort(left)
			if !slices.Equal(left, tt.wantLeft) {
				t.Errorf("left: got %v, want %v", left, tt.wantLeft)
			}
			if got := m.Len(); got != len(tt.wantLeft) {
				t.Errorf("Len: got %d, want %d", got, len(tt.wantLeft))
			}
		})
	}
}

// Run with -race: many goroutines on a few keys, so they meet on the same
// shards and nodes. Every hit must be the entry of the key asked for.
func TestMemoryConcurrent(t *testing.T) {
	for _, max := range []int{50, 100_000} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			m := NewMemory(max)
			const workers, ops, keys = 16, 3000, 200
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(w), 1))
					for range ops {
						key := fmt.Sprintf("u%d@example.com", r.IntN(keys))
						switch n := r.IntN(10); {
						case n < 6:
							e, ok, err := m.Get(ctx, key)
							if err != nil || ok && e.Text != key {
								t.Errorf("Get(%q): got %+v, %v, %v, want the entry of that key", key, e, ok, err)
								return
							}
						case n < 9:
							if err := m.Set(ctx, key, Entry{Text: key}, time.Hour); err != nil {
								t.Errorf("Set(%q): %v", key, err)
								return
							}
						default:
							if err := m.Delete(ctx, key); err != nil {
								t.Errorf("Delete(%q): %v", key, err)
								return
							}
						}
						if r.IntN(500) == 0 {
							m.DeleteFunc(func(k string) bool { return strings.HasPrefix(k, "u1") })
							m.Len()
						}
					}
				})
			}
			wg.Wait()
			if got := m.Len(); got > max {
				t.Errorf("Len: got %d, want at most %d", got, max)
			}
		})
	}
}

func TestKey(t *testing.T) {
	tests := []struct {
		name          string
		local, domain string
		want          string
	}{
		{"as is", "bob", "example.com", "bob@example.com"},
		{"domain case", "bob", "Example.COM", "bob@example.com"},
		{"local part case", "Bob.Smith", "example.com", "bob.smith@example.com"},
		{"trailing dot of the domain", "bob", "example.com.", "bob@example.com"},
		{"all at once", "BOB", "EXAMPLE.com.", "bob@example.com"},
		{"only one trailing dot", "bob", "example.com..", "bob@example.com."},
		{"address literal", "bob", "[192.0.2.1]", "bob@[192.0.2.1]"},
		{"quoted-string local part in internal form", "John Doe", "example.com", "john doe@example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Key(tt.local, tt.domain); got != tt.want {
				t.Errorf("Key(%q, %q): got %q, want %q", tt.local, tt.domain, got, tt.want)
			}
		})
	}
}

// benchKeys returns n distinct keys shaped like real addresses.
func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("user%07d@example%d.com", i, i%97)
	}
	return keys
}

func BenchmarkMemoryGet(b *testing.B) {
	keys := benchKeys(100_000)
	m := NewMemory(1_000_000)
	for _, k := range keys {
		mustSet(b, m, k, sample, time.Hour)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok, _ := m.Get(ctx, keys[i]); !ok {
			b.Fatalf("Get(%q): miss, want a hit", keys[i])
		}
		if i++; i == len(keys) {
			i = 0
		}
	}
}

func BenchmarkMemorySet(b *testing.B) {
	keys := benchKeys(200_000)
	for _, bc := range []struct {
		name string
		max  int
	}{
		{"overwrite", 1_000_000},  // every key held: update and move to front
		{"insert-evict", 100_000}, // twice as many keys as room: each Set evicts
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := NewMemory(bc.max)
			for _, k := range keys {
				mustSet(b, m, k, sample, time.Hour)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_ = m.Set(ctx, keys[i], sample, time.Hour)
				if i++; i == len(keys) {
					i = 0
				}
			}
		})
	}
}

func BenchmarkMemoryGetParallel(b *testing.B) {
	keys := benchKeys(100_000)
	m := NewMemory(1_000_000)
	for _, k := range keys {
		mustSet(b, m, k, sample, time.Hour)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(len(keys)) // goroutines walk the keys from different places
		for pb.Next() {
			if _, ok, _ := m.Get(ctx, keys[i]); !ok {
				b.Errorf("Get(%q): miss, want a hit", keys[i])
				return
			}
			if i++; i == len(keys) {
				i = 0
			}
		}
	})
}

// BenchmarkMemoryFootprint reports the heap a store of 100k entries takes,
// per entry: key, node, map slot, and a negative verdict's reply text of its
// own. Verdict, route and server strings are shared, as the daemon's are.
func BenchmarkMemoryFootprint(b *testing.B) {
	const entries = 1_000_000 // the default max_entries: the target is per entry at this size
	var perEntry float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		m := NewMemory(2 * entries) // room to spare in every shard
		for i := range entries {
			e := sample
			e.Text = strings.Clone(sample.Text)
			mustSet(b, m, fmt.Sprintf("user%07d@example%d.com", i, i%97), e, time.Hour)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if n := m.Len(); n != entries {
			b.Fatalf("Len: got %d, want %d", n, entries)
		}
		perEntry = float64(after.HeapAlloc-before.HeapAlloc) / entries
		runtime.KeepAlive(m)
	}
	b.ReportMetric(perEntry, "B/entry")
}

// Entries keep their own metadata when the interned table is full (a
// backend inventing enhanced codes), and their own texts beyond the
// interned ones: nothing is lost either way.
func TestMemoryInternOverflow(t *testing.T) {
	m := NewMemory(200_000)
	const n = maxMetas + 500
	for i := range n {
		e := sample
		e.Enhanced = fmt.Sprintf("5.%d.%d", i/1000, i%1000)
		e.Text = fmt.Sprintf("text %d", i)
		mustSet(t, m, fmt.Sprintf("u%d@example.com", i), e, time.Hour)
	}
	for _, i := range []int{0, maxMetas - 1, maxMetas, n - 1} {
		e, ok := mustGet(t, m, fmt.Sprintf("u%d@example.com", i))
		want := fmt.Sprintf("5.%d.%d", i/1000, i%1000)
		if !ok || e.Enhanced != want || e.Text != fmt.Sprintf("text %d", i) || e.Route != sample.Route || e.Verdict != sample.Verdict {
			t.Errorf("entry %d: %+v %v, want enhanced %s", i, e, ok, want)
		}
	}
}

// Only ASCII letters fold: U+0130 (İ) lower-cases to a plain "i" in
// Unicode, and İnfo@ must not share info@'s verdict.
func TestKeyFoldsASCIIOnly(t *testing.T) {
	for _, c := range []struct{ local, domain, want string }{
		{"Bob", "Example.COM.", "bob@example.com"},
		{"İnfo", "example.com", "İnfo@example.com"},
		{"JÖHN", "example.com", "jÖhn@example.com"},
	} {
		if got := Key(c.local, c.domain); got != c.want {
			t.Errorf("Key(%q, %q) = %q, want %q", c.local, c.domain, got, c.want)
		}
	}
}

// A learned verdict keeps its queue id, which is never interned: ten
// thousand learned entries leave the intern table as it was.
func TestMemoryLearned(t *testing.T) {
	m := NewMemory(20_000)
	metas := func() int {
		if p := m.interned.metas.Load(); p != nil {
			return len(*p)
		}
		return 0
	}
	mustSet(t, m, "asked@example.com", sample, time.Hour)
	before := metas()
	for i := range 10_000 {
		e := sample
		e.Learned = fmt.Sprintf("4Q%07X", i)
		mustSet(t, m, fmt.Sprintf("u%d@example.com", i), e, time.Hour)
	}
	if after := metas(); after != before {
		t.Errorf("intern table grew from %d to %d entries", before, after)
	}
	e, ok := mustGet(t, m, "u4660@example.com")
	if !ok || e.Learned != "4Q0001234" || e.Verdict != sample.Verdict || e.Route != sample.Route {
		t.Errorf("got %+v %v, want learned 4Q0001234", e, ok)
	}
	e.Learned = ""
	mustSet(t, m, "u4660@example.com", e, time.Hour)
	if e, _ := mustGet(t, m, "u4660@example.com"); e.Learned != "" {
		t.Errorf("overwritten with an asked verdict, still learned %q", e.Learned)
	}
}

func TestKeyOf(t *testing.T) {
	for _, c := range []struct{ addr, local, domain string }{
		{"bob@example.com", "bob", "example.com"},
		{"Bob@example.com", "Bob", "example.com"},
		{"bob@example.com.", "bob", "example.com."},
		{"bob+x@example.com", "bob", "example.com"}, // the base of a sub-address
		{`"a b"@example.com`, "a b", "example.com"},
	} {
		if got, want := KeyOf(c.addr, c.local, c.domain), Key(c.local, c.domain); got != want {
			t.Errorf("KeyOf(%q, %q, %q) = %q, want %q", c.addr, c.local, c.domain, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = KeyOf("bob@example.com", "bob", "example.com") }); n != 0 {
		t.Errorf("KeyOf of a lower-case address allocates %v times", n)
	}
}
