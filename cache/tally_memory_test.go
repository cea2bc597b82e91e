package cache_test

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/calloutd/calloutd/cache"
)

// MemoryTally: the licence count's store without Redis. (Its clock-driven
// behaviour is tested inside the package, in hll_test.go.)

var _ cache.Tally = (*cache.MemoryTally)(nil)

// tallyMembers returns the addresses user<from>@domain .. user<to-1>@domain.
func tallyMembers(domain string, from, to int) []string {
	out := make([]string, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, "user"+strconv.Itoa(i)+"@"+domain)
	}
	return out
}

func tallyAdd(t testing.TB, tl cache.Tally, key string, members []string) {
	t.Helper()
	if err := tl.AddDistinct(context.Background(), key, members, time.Hour); err != nil {
		t.Fatalf("AddDistinct(%q): %v", key, err)
	}
}

func tallyCount(t testing.TB, tl cache.Tally, keys ...string) int64 {
	t.Helper()
	n, err := tl.CountDistinct(context.Background(), keys)
	if err != nil {
		t.Fatalf("CountDistinct(%q): %v", keys, err)
	}
	return n
}

func tallySum(t testing.TB, tl cache.Tally, keys ...string) int64 {
	t.Helper()
	n, err := tl.SumCounts(context.Background(), keys)
	if err != nil {
		t.Fatalf("SumCounts(%q): %v", keys, err)
	}
	return n
}

// Small sets count exactly, whatever the repeats: one add per member, the
// same members again, and all of them in one batch with repeats.
func TestMemoryTallySparseExact(t *testing.T) {
	tl := cache.NewMemoryTally(100)
	if n := tallyCount(t, tl, "stats:{example.com}:valid:20261202"); n != 0 {
		t.Fatalf("missing key: %d, want 0", n)
	}
	for _, n := range []int{1, 37, 500} {
		key := fmt.Sprintf("stats:{n%d.example}:valid:20261202", n)
		ms := tallyMembers("n.example", 0, n)
		for range 3 {
			for _, m := range ms {
				tallyAdd(t, tl, key, []string{m})
			}
		}
		tallyAdd(t, tl, key, append(append([]string{}, ms...), ms...))
		if got := tallyCount(t, tl, key); got != int64(n) {
			t.Errorf("%d distinct members: count %d", n, got)
		}
	}
}

// Large sets: within three standard errors (0.81% each) of the truth.
func TestMemoryTallyAccuracy(t *testing.T) {
	tl := cache.NewMemoryTally(100)
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		key := fmt.Sprintf("stats:{big%d.example}:valid:20261202", n)
		for from := 0; from < n; from += 10_000 {
			tallyAdd(t, tl, key, tallyMembers("big.example", from, min(from+10_000, n)))
		}
		got := tallyCount(t, tl, key)
		rel := (float64(got) - float64(n)) / float64(n)
		t.Logf("n=%d: estimate %d, error %+.3f%%", n, got, 100*rel)
		if math.Abs(rel) >= 0.025 {
			t.Errorf("n=%d: estimate %d, error %.3f%%, want under 2.5%%", n, got, 100*rel)
		}
	}
}

// A month of day keys counted together is the union of their members:
// exactly while small, within the error when large.
func TestMemoryTallyUnion(t *testing.T) {
	for _, c := range []struct {
		name        string
		step, width int // day d has members [d*step, d*step+width)
		exact       bool
	}{
		{"small", 10, 50, true},          // 50 a day, 340 in all
		{"sparse days", 40, 1000, false}, // sparse days, a dense union (2160)
		{"large", 5000, 20_000, false},   // 165000 in all
	} {
		t.Run(c.name, func(t *testing.T) {
			tl := cache.NewMemoryTally(100)
			var keys []string
			for d := range 30 {
				key := fmt.Sprintf("stats:{example.com}:valid:202611%02d", d+1)
				keys = append(keys, key)
				tallyAdd(t, tl, key, tallyMembers("example.com", d*c.step, d*c.step+c.width))
			}
			want := 29*c.step + c.width
			// Missing keys in the list change nothing, nor do repeats.
			got := tallyCount(t, tl, append(append(keys, "stats:{example.com}:valid:20261201"), keys[3])...)
			rel := (float64(got) - float64(want)) / float64(want)
			t.Logf("union of 30 days, %d members: %d (%+.3f%%)", want, got, 100*rel)
			if c.exact && got != int64(want) || math.Abs(rel) >= 0.025 {
				t.Errorf("union: %d, want %d", got, want)
			}
			// The same members in one key give the same count.
			all := cache.NewMemoryTally(1)
			tallyAdd(t, all, "all", tallyMembers("example.com", 0, want))
			if one := tallyCount(t, all, "all"); one != got {
				t.Errorf("union %d, one key of the same members %d", got, one)
			}
		})
	}
}

// Counting keys together merges into a sketch of its own: the stored ones
// count the same before and after, in every form (sparse, dense).
func TestMemoryTallyCountLeavesKeys(t *testing.T) {
	tl := cache.NewMemoryTally(100)
	sizes := map[string]int{"tiny": 3, "sparse": 1200, "dense": 50_000, "dense2": 2000}
	before := map[string]int64{}
	for key, n := range sizes {
		tallyAdd(t, tl, key, tallyMembers(key+".example", 0, n))
		before[key] = tallyCount(t, tl, key)
	}
	for _, keys := range [][]string{
		{"tiny", "sparse"}, {"sparse", "tiny"}, {"sparse", "dense"}, {"dense", "sparse"},
		{"dense", "dense2"}, {"tiny", "sparse", "dense", "dense2"},
	} {
		u1 := tallyCount(t, tl, keys...)
		u2 := tallyCount(t, tl, keys...)
		if u1 != u2 {
			t.Errorf("%q: %d then %d", keys, u1, u2)
		}
		for key, n := range before {
			if got := tallyCount(t, tl, key); got != n {
				t.Fatalf("after counting %q: %s counts %d, was %d", keys, key, got, n)
			}
		}
	}
	if got := tallyCount(t, tl, "tiny", "sparse"); got != 1203 {
		t.Errorf("tiny+sparse: %d, want 1203", got)
	}
}

// A key lives ttl after its last write. (Real time here; hll_test.go has
// the same with a clock of its own.)
func TestMemoryTallyExpiry(t *testing.T) {
	ctx := context.Background()
	tl := cache.NewMemoryTally(100)
	if err := tl.AddDistinct(ctx, "short", []string{"a", "b"}, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := tl.AddCount(ctx, "shortcount", 4, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	tallyAdd(t, tl, "long", []string{"a"})
	time.Sleep(150 * time.Millisecond)
	if n := tallyCount(t, tl, "short"); n != 0 {
		t.Errorf("expired set: %d, want 0", n)
	}
	if n := tallySum(t, tl, "shortcount"); n != 0 {
		t.Errorf("expired count: %d, want 0", n)
	}
	if n := tallyCount(t, tl, "long", "short"); n != 1 {
		t.Errorf("live set with an expired one: %d, want 1", n)
	}
	if n := tl.Len(); n != 1 {
		t.Errorf("Len %d, want 1: expired keys dropped", n)
	}
	// A ttl of 0 deletes, as PEXPIRE 0 does.
	if err := tl.AddDistinct(ctx, "long", []string{"b"}, 0); err != nil {
		t.Fatal(err)
	}
	if n := tallyCount(t, tl, "long"); n != 0 || tl.Len() != 0 {
		t.Errorf("after a zero ttl: count %d, Len %d; want 0, 0", n, tl.Len())
	}
}

// Beyond maxKeys, the key that expires first goes.
func TestMemoryTallyBound(t *testing.T) {
	ctx := context.Background()
	tl := cache.NewMemoryTally(3)
	for key, ttl := range map[string]time.Duration{"a": 3 * time.Hour, "b": time.Hour, "c": 2 * time.Hour} {
		if err := tl.AddDistinct(ctx, key, []string{"x@" + key}, ttl); err != nil {
			t.Fatal(err)
		}
	}
	if err := tl.AddCount(ctx, "d", 1, 4*time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := tl.Len(); n != 3 {
		t.Errorf("Len %d, want 3", n)
	}
	for key, want := range map[string]int64{"a": 1, "b": 0, "c": 1} {
		if n := tallyCount(t, tl, key); n != want {
			t.Errorf("%s: %d, want %d", key, n, want)
		}
	}
	if n := tallySum(t, tl, "d"); n != 1 {
		t.Errorf("d: %d, want 1", n)
	}
}

// Sums add up per key and across keys; missing keys are 0.
func TestMemoryTallyCounts(t *testing.T) {
	ctx := context.Background()
	tl := cache.NewMemoryTally(100)
	if n := tallySum(t, tl); n != 0 {
		t.Errorf("no keys: %d", n)
	}
	if n := tallySum(t, tl, "missing"); n != 0 {
		t.Errorf("missing key: %d", n)
	}
	for i, n := range []int64{5, 7, -2, 0} {
		key := "stats:{example.com}:callouts:2026120" + strconv.Itoa(1+i%2)
		if err := tl.AddCount(ctx, key, n, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if n := tallySum(t, tl, "stats:{example.com}:callouts:20261201"); n != 3 {
		t.Errorf("day 1: %d, want 3", n)
	}
	if n := tallySum(t, tl, "stats:{example.com}:callouts:20261201", "stats:{example.com}:callouts:20261202", "missing"); n != 10 {
		t.Errorf("both days: %d, want 10", n)
	}
	// Overflow is an error and changes nothing.
	if err := tl.AddCount(ctx, "big", math.MaxInt64, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := tl.AddCount(ctx, "big", 1, time.Hour); err == nil {
		t.Error("overflowing AddCount: no error")
	}
	if n := tallySum(t, tl, "big"); n != math.MaxInt64 {
		t.Errorf("after overflow: %d", n)
	}
}

// A key holds one kind: the other kind's calls on it are errors, as with
// Redis, and change nothing.
func TestMemoryTallyKinds(t *testing.T) {
	ctx := context.Background()
	tl := cache.NewMemoryTally(100)
	tallyAdd(t, tl, "set", []string{"a", "b"})
	if err := tl.AddCount(ctx, "count", 2, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := tl.AddCount(ctx, "set", 1, time.Hour); err == nil {
		t.Error("AddCount on a set: no error")
	}
	if err := tl.AddDistinct(ctx, "count", []string{"c"}, time.Hour); err == nil {
		t.Error("AddDistinct on a count: no error")
	}
	if _, err := tl.SumCounts(ctx, []string{"count", "set"}); err == nil {
		t.Error("SumCounts of a set: no error")
	}
	if _, err := tl.CountDistinct(ctx, []string{"set", "count"}); err == nil {
		t.Error("CountDistinct of a count: no error")
	}
	if n := tallyCount(t, tl, "set"); n != 2 {
		t.Errorf("set: %d, want 2", n)
	}
	if n := tallySum(t, tl, "count"); n != 2 {
		t.Errorf("count: %d, want 2", n)
	}
}

// Writers on overlapping keys and a reader at once (run with -race): no
// member or count lost.
func TestMemoryTallyConcurrent(t *testing.T) {
	const workers, each, keys = 8, 300, 4
	ctx := context.Background()
	tl := cache.NewMemoryTally(100)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			// Worker w adds members [w*100, w*100+each): neighbours overlap.
			for i := range each {
				m := w*100 + i
				key := "k" + strconv.Itoa(m%keys)
				if err := tl.AddDistinct(ctx, key, []string{"user" + strconv.Itoa(m)}, time.Hour); err != nil {
					t.Error(err)
					return
				}
				if err := tl.AddCount(ctx, "n"+strconv.Itoa(i%keys), 1, time.Hour); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	var reader sync.WaitGroup
	reader.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := tl.CountDistinct(ctx, []string{"k0", "k1", "k2", "k3"}); err != nil {
				t.Error(err)
				return
			}
			if _, err := tl.SumCounts(ctx, []string{"n0", "n1", "n2", "n3"}); err != nil {
				t.Error(err)
				return
			}
			_ = tl.Len()
		}
	})
	wg.Wait()
	close(done)
	reader.Wait()
	want := (workers-1)*100 + each // members 0 .. 999
	if n := tallyCount(t, tl, "k0", "k1", "k2", "k3"); n != int64(want) {
		t.Errorf("distinct: %d, want %d", n, want)
	}
	if n := tallyCount(t, tl, "k1"); n != int64(want/keys) {
		t.Errorf("k1: %d, want %d", n, want/keys)
	}
	if n := tallySum(t, tl, "n0", "n1", "n2", "n3"); n != workers*each {
		t.Errorf("sum: %d, want %d", n, workers*each)
	}
}

// BenchmarkTallyAddDistinct adds one member a call, as the cost per
// member: to a small (sparse) key, members already there; to a large
// (dense) key; and in batches of 100, as the daemon's flushes do.
func BenchmarkTallyAddDistinct(b *testing.B) {
	ctx := context.Background()
	members := tallyMembers("example.com", 0, 200_000)
	b.Run("sparse", func(b *testing.B) {
		tl := cache.NewMemoryTally(100)
		tallyAdd(b, tl, "k", members[:1000])
		one := make([]string, 1)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			one[0] = members[i%1000]
			_ = tl.AddDistinct(ctx, "k", one, time.Hour)
			i++
		}
	})
	b.Run("dense", func(b *testing.B) {
		tl := cache.NewMemoryTally(100)
		one := make([]string, 1)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			one[0] = members[i%len(members)]
			_ = tl.AddDistinct(ctx, "k", one, time.Hour)
			i++
		}
	})
	b.Run("batch100", func(b *testing.B) {
		tl := cache.NewMemoryTally(100)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			_ = tl.AddDistinct(ctx, "k", members[i:i+100], time.Hour)
			if i += 100; i+100 > len(members) {
				i = 0
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/member")
	})
}

// BenchmarkTallyCountDistinct counts a month of day keys, as a report
// does for one domain.
func BenchmarkTallyCountDistinct(b *testing.B) {
	for _, perDay := range []int{10, 1000, 20_000} {
		b.Run(strconv.Itoa(perDay)+"/day", func(b *testing.B) {
			tl := cache.NewMemoryTally(100)
			keys := make([]string, 30)
			for d := range keys {
				keys[d] = fmt.Sprintf("stats:{example.com}:valid:202611%02d", d+1)
				tallyAdd(b, tl, keys[d], tallyMembers("example.com", d*perDay/2, d*perDay/2+perDay))
			}
			b.ReportAllocs()
			for b.Loop() {
				tallyCount(b, tl, keys...)
			}
		})
	}
}

// BenchmarkTallyFootprint reports the heap a key takes, everything
// counted (map slot, entry, heap slot, sketch), the key's name aside: a
// sparse key of 10 members and a dense one.
func BenchmarkTallyFootprint(b *testing.B) {
	for _, c := range []struct {
		name          string
		keys, members int
	}{
		{"sparse10", 10_000, 10},
		{"dense", 500, 5000},
	} {
		b.Run(c.name, func(b *testing.B) {
			names := make([]string, c.keys)
			for i := range names {
				names[i] = fmt.Sprintf("stats:{d%05d.example}:valid:20261202", i)
			}
			members := tallyMembers("example.com", 0, c.keys+c.members)
			var perKey float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				tl := cache.NewMemoryTally(c.keys)
				for i, name := range names {
					tallyAdd(b, tl, name, members[i:i+c.members])
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perKey = float64(after.HeapAlloc-before.HeapAlloc) / float64(c.keys)
				runtime.KeepAlive(tl)
			}
			b.ReportMetric(perKey, "B/key")
		})
	}
}
