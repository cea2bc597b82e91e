package cache

import (
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"testing"
	"time"
)

// hllRandom returns the i-th of a stream of uniformly distributed hashes
// (splitmix64 of a counter): the sketch's own tests do not depend on
// hashMember.
func hllRandom(stream, i uint64) uint64 {
	return mix64(stream<<40 + i)
}

// The member hash is FNV-1a 64 as hash/fnv computes it, then mixed.
func TestHLLHashMember(t *testing.T) {
	for _, s := range []string{"", "a", "bob@example.com", "user0000017@example.org"} {
		f := fnv.New64a()
		f.Write([]byte(s))
		if got, want := hashMember(s), mix64(f.Sum64()); got != want {
			t.Errorf("hashMember(%q) = %#x, want %#x", s, got, want)
		}
	}
	if hashMember("user17@example.com") == hashMember("user18@example.com") {
		t.Error("two members hash alike")
	}
}

// The top 14 bits pick the register; the rank is 1 + the zeros after them,
// at most 51.
func TestHLLPlace(t *testing.T) {
	for _, c := range []struct {
		h    uint64
		reg  int
		rank uint8
	}{
		{0, 0, 51},
		{math.MaxUint64, hllM - 1, 1},
		{1 << 49, 0, 1},
		{1 << 48, 0, 2},
		{1, 0, 50},
		{0x3fff<<50 | 1<<20, hllM - 1, 30},
	} {
		if reg, rank := hllPlace(c.h); reg != c.reg || rank != c.rank {
			t.Errorf("hllPlace(%#x) = %d, %d; want %d, %d", c.h, reg, rank, c.reg, c.rank)
		}
	}
}

// Registers packed four to three bytes keep their own values: each set to
// its own rank, read back, neighbours untouched; a lower rank changes
// nothing.
func TestHLLRegisters(t *testing.T) {
	s := hll{dense: new(hllRegisters)}
	rankOf := func(r int) uint8 { return uint8(r*7%50) + 1 }
	for r := range hllM {
		rank := rankOf(r)
		h := uint64(r)<<hllQ | 1<<(hllQ-rank)
		if reg, got := hllPlace(h); reg != r || got != rank {
			t.Fatalf("hllPlace(%#x) = %d, %d; want %d, %d", h, reg, got, r, rank)
		}
		s.set(h)
		s.set(uint64(r)<<hllQ | 1<<(hllQ-1)) // rank 1
	}
	for r := range hllM {
		if got := s.dense.get(r); got != rankOf(r) {
			t.Fatalf("register %d = %d, want %d", r, got, rankOf(r))
		}
	}
}

// A sparse sketch counts exactly, whatever the repeats and the order, and
// holds no more memory than a dense one.
func TestHLLSparseExact(t *testing.T) {
	var s hll
	if n := s.count(); n != 0 {
		t.Fatalf("empty: count %d", n)
	}
	for i := range uint64(hllSparse) {
		s.add(hllRandom(1, i))
		s.add(hllRandom(1, i/2)) // a repeat
		if n := s.count(); n != int64(i+1) {
			t.Fatalf("after %d: count %d", i+1, n)
		}
		if s.dense != nil {
			t.Fatalf("dense at %d hashes, want sparse up to %d", i+1, hllSparse)
		}
		if c := cap(s.sparse); c*8 > hllBytes {
			t.Fatalf("sparse capacity %d hashes: %d bytes, more than dense (%d)", c, c*8, hllBytes)
		}
	}
	for i := 1; i < len(s.sparse); i++ {
		if s.sparse[i-1] >= s.sparse[i] {
			t.Fatalf("sparse hashes not sorted and distinct at %d", i)
		}
	}
	// One more goes dense; the estimate stays close to the exact count.
	s.add(hllRandom(1, hllSparse))
	if s.dense == nil || s.sparse != nil {
		t.Fatal("still sparse beyond hllSparse hashes")
	}
	if n := s.count(); math.Abs(float64(n)-(hllSparse+1)) > 0.02*(hllSparse+1) {
		t.Errorf("just dense: count %d, want about %d", n, hllSparse+1)
	}
}

// Batches (addSorted) give the sketch single adds give.
func TestHLLAddSortedBatches(t *testing.T) {
	var one, batch hll
	var hs []uint64
	for i := range uint64(3000) {
		h := hllRandom(2, i%1200) // 1200 distinct, each more than once
		one.add(h)
		hs = append(hs, h)
		if len(hs) == 100 || i == 2999 {
			batch.addSorted(hashSortDistinct(hs))
			hs = hs[:0]
		}
	}
	if !equalSketch(&one, &batch) || one.count() != 1200 {
		t.Fatalf("batches: count %d, singles %d, want 1200 both and equal sketches", batch.count(), one.count())
	}
	// A batch beyond the sparse size goes dense at once.
	var big hll
	for i := range uint64(5000) {
		hs = append(hs, hllRandom(3, i))
	}
	big.addSorted(hashSortDistinct(hs))
	if big.dense == nil {
		t.Fatal("5000 hashes in one batch: still sparse")
	}
}

func hashSortDistinct(hs []uint64) []uint64 {
	out := append([]uint64(nil), hs...)
	for i := 1; i < len(out); i++ { // insertion sort: small batches
		for j := i; j > 0 && out[j-1] > out[j]; j-- {
			out[j-1], out[j] = out[j], out[j-1]
		}
	}
	w := 0
	for i, h := range out {
		if i == 0 || h != out[w-1] {
			out[w] = h
			w++
		}
	}
	return out[:w]
}

func equalSketch(a, b *hll) bool {
	if (a.dense == nil) != (b.dense == nil) {
		return false
	}
	if a.dense != nil {
		return *a.dense == *b.dense
	}
	if len(a.sparse) != len(b.sparse) {
		return false
	}
	for i := range a.sparse {
		if a.sparse[i] != b.sparse[i] {
			return false
		}
	}
	return true
}

func cloneSketch(s *hll) hll {
	c := hll{sparse: append([]uint64(nil), s.sparse...)}
	if s.dense != nil {
		c.dense = new(hllRegisters)
		*c.dense = *s.dense
	}
	return c
}

// A sketch turned dense has the registers of one dense from the start.
func TestHLLToDense(t *testing.T) {
	var s, d hll
	d.dense = new(hllRegisters)
	for i := range uint64(1000) {
		s.add(hllRandom(4, i))
		d.add(hllRandom(4, i))
	}
	s.toDense()
	if !equalSketch(&s, &d) {
		t.Fatal("sparse turned dense differs from dense")
	}
	for r := range hllM { // every register within the six bits
		if v := d.dense.get(r); v > hllQ+1 {
			t.Fatalf("register %d = %d", r, v)
		}
	}
}

// merge gives the union for every pair of forms, leaving its argument
// untouched and sharing nothing with it.
func TestHLLMerge(t *testing.T) {
	build := func(stream uint64, from, to uint64) hll {
		var s hll
		for i := from; i < to; i++ {
			s.add(hllRandom(stream, i))
		}
		return s
	}
	for _, c := range []struct {
		name        string
		a, b        [2]uint64 // ranges of one stream
		wantSparse  bool
		wantExactly bool
	}{
		{"sparse+sparse", [2]uint64{0, 600}, [2]uint64{400, 1000}, true, true},
		{"sparse+sparse=dense", [2]uint64{0, 1000}, [2]uint64{800, 2000}, false, false},
		{"sparse+dense", [2]uint64{0, 1000}, [2]uint64{500, 20000}, false, false},
		{"dense+sparse", [2]uint64{0, 20000}, [2]uint64{19500, 20500}, false, false},
		{"dense+dense", [2]uint64{0, 60000}, [2]uint64{30000, 90000}, false, false},
		{"empty+sparse", [2]uint64{0, 0}, [2]uint64{0, 10}, true, true},
		{"empty+dense", [2]uint64{0, 0}, [2]uint64{0, 5000}, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := build(5, c.a[0], c.a[1])
			b := build(5, c.b[0], c.b[1])
			bBefore := cloneSketch(&b)
			all := build(5, min(c.a[0], c.b[0]), max(c.a[1], c.b[1]))
			if c.a[0] == c.a[1] {
				all = build(5, c.b[0], c.b[1])
			}
			a.merge(&b)
			if !equalSketch(&b, &bBefore) {
				t.Fatal("merge changed its argument")
			}
			if (a.dense == nil) != c.wantSparse {
				t.Fatalf("union dense = %v", a.dense != nil)
			}
			if c.wantExactly && a.count() != all.count() {
				t.Fatalf("union count %d, want %d", a.count(), all.count())
			}
			// The union's registers are those of a sketch of all members.
			all.toDense()
			u := cloneSketch(&a)
			u.toDense()
			if !equalSketch(&u, &all) {
				t.Fatal("union registers differ from the sketch of every member")
			}
			// Writing to the union leaves b alone (no shared memory).
			for i := range uint64(3000) {
				a.add(hllRandom(6, i))
			}
			if !equalSketch(&b, &bBefore) {
				t.Fatal("adding to the union changed the merged sketch")
			}
		})
	}
}

// σ and τ at their ends; the estimate of nothing is 0.
func TestHLLEstimatorEdges(t *testing.T) {
	if v := hllSigma(0); v != 0 {
		t.Errorf("σ(0) = %v", v)
	}
	if v := hllSigma(1); !math.IsInf(v, 1) {
		t.Errorf("σ(1) = %v", v)
	}
	if v := hllTau(0); v != 0 {
		t.Errorf("τ(0) = %v", v)
	}
	if v := hllTau(1); v != 0 {
		t.Errorf("τ(1) = %v", v)
	}
	// σ(x) = x + x² + 2x⁴ + 4x⁸ + ...
	if v, want := hllSigma(0.5), 0.5+0.25+2*0.0625+4*math.Pow(0.5, 8)+8*math.Pow(0.5, 16)+16*math.Pow(0.5, 32); math.Abs(v-want) > 1e-12 {
		t.Errorf("σ(0.5) = %v, want %v", v, want)
	}
	var c [64]int
	c[0] = hllM
	if v := hllEstimate(&c); v != 0 {
		t.Errorf("estimate of empty registers = %v", v)
	}
	// One register at 1: one element.
	c[0], c[1] = hllM-1, 1
	if v := hllEstimate(&c); math.Abs(v-1) > 0.01 {
		t.Errorf("estimate of one register at 1 = %v, want about 1", v)
	}
	// Every register saturated: infinity, which count caps.
	c = [64]int{}
	c[hllQ+1] = hllM
	if v := hllEstimate(&c); !math.IsInf(v, 1) {
		t.Errorf("estimate of saturated registers = %v, want +Inf", v)
	}
	s := hll{dense: new(hllRegisters)}
	for r := range hllM {
		s.set(uint64(r) << hllQ) // register r, rank 51
	}
	if n := s.count(); n != 1<<62 {
		t.Errorf("count of saturated registers = %d, want 1<<62", n)
	}
	// Partly saturated: huge and finite.
	c[hllQ+1], c[hllQ] = hllM/2, hllM/2
	if v := hllEstimate(&c); math.IsInf(v, 0) || math.IsNaN(v) || v < 1<<60 {
		t.Errorf("estimate of half-saturated registers = %v", v)
	}
}

// The dense estimate over many independent sketches: no bias to speak of,
// and a spread near the 1.04/√m = 0.81% standard error, across the range
// where the classic estimator switches to linear counting (n around
// 2.5 m = 41k) and beyond.
func TestHLLEstimatorBias(t *testing.T) {
	const trials = 24
	for _, n := range []int{2000, 10_000, 40_000, 200_000} {
		var sum, sumSq float64
		for tr := range trials {
			var s hll
			s.dense = new(hllRegisters)
			for i := range uint64(n) {
				s.set(hllRandom(uint64(100+tr), i))
			}
			e := (float64(s.count()) - float64(n)) / float64(n)
			sum += e
			sumSq += e * e
		}
		bias, rms := sum/trials, math.Sqrt(sumSq/trials)
		t.Logf("n=%d: bias %+.3f%%, rms error %.3f%% over %d sketches", n, 100*bias, 100*rms, trials)
		// The bias's own standard error is rms/√trials, about 0.17%.
		if math.Abs(bias) > 0.006 {
			t.Errorf("n=%d: bias %.3f%%", n, 100*bias)
		}
		if rms > 0.0081*1.5 {
			t.Errorf("n=%d: rms error %.3f%%, want about 0.81%% or less", n, 100*rms)
		}
	}
}

// hashMember on addresses alike but for a number (the worst case for
// FNV alone): estimates as good as from random hashes, over sets of
// members that differ by their domain.
func TestHLLHashAddresses(t *testing.T) {
	const sets, n = 24, 40_000
	var sum, sumSq float64
	for k := range sets {
		var s hll
		s.dense = new(hllRegisters)
		domain := fmt.Sprintf("@d%d.example", k)
		for i := range n {
			s.set(hashMember("user" + strconv.Itoa(i) + domain))
		}
		e := (float64(s.count()) - n) / n
		sum += e
		sumSq += e * e
	}
	bias, rms := sum/sets, math.Sqrt(sumSq/sets)
	t.Logf("n=%d: bias %+.3f%%, rms error %.3f%% over %d sets of addresses", n, 100*bias, 100*rms, sets)
	if math.Abs(bias) > 0.006 || rms > 0.0081*1.5 {
		t.Errorf("addresses: bias %.3f%%, rms error %.3f%%; want about 0 and 0.81%%", 100*bias, 100*rms)
	}
}

// The clock-driven behaviour of MemoryTally: expiry from the last write,
// the bound, the sweep, the heap's bookkeeping.
func newTallyAt(maxKeys int) (*MemoryTally, *time.Time) {
	now := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	tl := NewMemoryTally(maxKeys)
	tl.now = func() time.Time { return now }
	return tl, &now
}

func checkTallyHeap(t *testing.T, tl *MemoryTally) {
	t.Helper()
	if len(tl.exp) != len(tl.keys) {
		t.Fatalf("heap %d entries, %d keys", len(tl.exp), len(tl.keys))
	}
	for i, e := range tl.exp {
		if e.at != i || tl.keys[e.key] != e {
			t.Fatalf("heap entry %d (%q) out of step", i, e.key)
		}
		if i > 0 && tl.exp[(i-1)/2].until.After(e.until) {
			t.Fatalf("heap order broken at %d", i)
		}
	}
}

func TestMemoryTallyExpiryClock(t *testing.T) {
	ctx := t.Context()
	tl, now := newTallyAt(100)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tl.AddDistinct(ctx, "d", []string{"a", "b"}, time.Hour))
	must(tl.AddCount(ctx, "c", 5, time.Hour))
	*now = now.Add(59 * time.Minute)
	must(tl.AddDistinct(ctx, "d", []string{"c"}, time.Hour)) // renewed
	*now = now.Add(time.Minute)                              // c's hour is up, d has 59 min left
	if n, err := tl.SumCounts(ctx, []string{"c"}); err != nil || n != 0 {
		t.Fatalf("expired count: %d, %v; want 0", n, err)
	}
	if n, err := tl.CountDistinct(ctx, []string{"d"}); err != nil || n != 3 {
		t.Fatalf("renewed set: %d, %v; want 3", n, err)
	}
	if tl.Len() != 1 {
		t.Fatalf("Len %d, want 1 (the expired key dropped)", tl.Len())
	}
	// An expired key is missing for every purpose: written again, it
	// starts empty, and may change kind.
	*now = now.Add(time.Hour)
	must(tl.AddCount(ctx, "d", 2, time.Hour))
	if n, err := tl.SumCounts(ctx, []string{"d"}); err != nil || n != 2 {
		t.Fatalf("key reused after expiry: %d, %v; want 2", n, err)
	}
	checkTallyHeap(t, tl)
}

// Keys expired are dropped a few per call without being looked up, so
// memory goes back while the tally is used for other keys.
func TestMemoryTallySweep(t *testing.T) {
	ctx := t.Context()
	tl, now := newTallyAt(10_000)
	for i := range 1000 {
		if err := tl.AddCount(ctx, fmt.Sprintf("old%d", i), 1, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	*now = now.Add(2 * time.Hour)
	calls := 0
	for tl.Len() > 1 && calls < 1000 {
		if err := tl.AddCount(ctx, "new", 1, time.Hour); err != nil {
			t.Fatal(err)
		}
		calls++
	}
	if tl.Len() != 1 {
		t.Fatalf("Len %d after %d calls, want 1", tl.Len(), calls)
	}
	if want := (1000 + tallySweep - 1) / tallySweep; calls > want {
		t.Errorf("%d calls to drop 1000 expired keys, want at most %d", calls, want)
	}
	checkTallyHeap(t, tl)
}

// The bound drops the key that expires first, not the oldest; renewing a
// key moves it in the heap.
func TestMemoryTallyBoundClock(t *testing.T) {
	ctx := t.Context()
	tl, now := newTallyAt(3)
	add := func(key string, ttl time.Duration) {
		t.Helper()
		if err := tl.AddDistinct(ctx, key, []string{key}, ttl); err != nil {
			t.Fatal(err)
		}
		checkTallyHeap(t, tl)
	}
	add("a", time.Hour)
	add("b", 2*time.Hour)
	add("c", 3*time.Hour)
	*now = now.Add(30 * time.Minute)
	add("a", 3*time.Hour) // a now ends last, b first
	add("d", time.Hour)
	for key, want := range map[string]int64{"a": 1, "b": 0, "c": 1, "d": 1} {
		if n, _ := tl.CountDistinct(ctx, []string{key}); n != want {
			t.Errorf("%s: %d, want %d", key, n, want)
		}
	}
	if tl.Len() != 3 {
		t.Errorf("Len %d, want 3", tl.Len())
	}
}
