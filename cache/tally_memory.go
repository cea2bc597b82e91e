package cache

import (
	"container/heap"
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// MemoryTally is a Tally in this process's memory, for a daemon without
// Redis: distinct members in a HyperLogLog sketch per key (see hll: exact
// up to 1536 members, then 0.81% standard error in 12 KiB, as Redis's
// PFCOUNT), sums in plain integers.
//
// Each key lives ttl after its last write; a ttl of 0 or less deletes the
// key, as Redis's PEXPIRE does. Expired keys read as missing. They are
// dropped when a call comes upon them and, a few at a time, from the head
// of a min-heap of expiries at every call, so no call walks every key and
// memory is given back as keys expire while the tally is in use.
//
// The tally is bounded: beyond max keys the key that expires first goes
// (the same heap finds it; each key has one entry in it, moved when the
// key is written, so there are no stale entries to skip).
//
// A key holds distinct members or counts, never both: adding or reading
// one kind on a live key of the other is an error, as with Redis (PFADD on
// a count is WRONGTYPE, a sketch is not an integer). The daemon's keys name
// their kind, so this does not happen in use.
//
// A key takes about 230 bytes with 10 members (BenchmarkTallyFootprint)
// and at most 12.2 KiB however many: maxKeys × 12.2 KiB bounds the memory,
// and it takes one key per domain, kind and day of the window to count a
// window whole (3 kinds × 30 days × domains with the daemon's defaults).
//
// One mutex guards the tally: adds are a map lookup and a few register
// writes (members are hashed before it is taken), and a count of several
// keys merges them under it into a sketch of its own, estimated after
// (some 0.3 ms for 30 dense days).
type MemoryTally struct {
	mu   sync.Mutex
	max  int
	now  func() time.Time // for tests
	keys map[string]*tallied
	exp  tallyHeap
}

// tallied is one key of a MemoryTally.
type tallied struct {
	key      string
	until    time.Time
	at       int // index in MemoryTally.exp
	distinct bool
	n        int64 // counts
	set      hll   // distinct members
}

// tallySweep is how many expired keys a call drops at most from the head
// of the heap, besides those it looks up: more than one, so that expiries
// keep up with calls that add keys, few, so that no call is slow when many
// keys expire together (30 days after a busy day).
const tallySweep = 16

var _ Tally = (*MemoryTally)(nil)

// NewMemoryTally returns a MemoryTally holding at most maxKeys keys (at
// least 1).
func NewMemoryTally(maxKeys int) *MemoryTally {
	return &MemoryTally{max: max(maxKeys, 1), now: time.Now, keys: make(map[string]*tallied)}
}

// AddDistinct implements Tally. No members is a no-op (the key's expiry is
// not renewed).
func (t *MemoryTally) AddDistinct(_ context.Context, key string, members []string, ttl time.Duration) error {
	if len(members) == 0 {
		return nil
	}
	// Hashed and sorted before locking; batches of up to 128 members
	// need no allocation.
	var buf [128]uint64
	hs := hashMembers(members, buf[:])
	t.mu.Lock()
	defer t.mu.Unlock()
	e, err := t.write(key, ttl, true)
	if e != nil {
		e.set.addSorted(hs)
	}
	return err
}

// CountDistinct implements Tally. The stored sketches are left as they are.
func (t *MemoryTally) CountDistinct(_ context.Context, keys []string) (int64, error) {
	t.mu.Lock()
	now := t.now()
	t.sweep(now)
	var buf [32]*tallied // a month of days
	sets := buf[:0]
	for _, k := range keys {
		switch e := t.lookup(k, now); {
		case e == nil:
		case !e.distinct:
			t.mu.Unlock()
			return 0, kindError(e)
		default:
			sets = append(sets, e)
		}
	}
	switch len(sets) {
	case 0:
		t.mu.Unlock()
		return 0, nil
	case 1:
		n := sets[0].set.count()
		t.mu.Unlock()
		return n, nil
	}
	// Merge into a sketch of our own, a dense one first if any (then the
	// others only raise its registers), and estimate after unlocking.
	for i, e := range sets {
		if e.set.dense != nil {
			sets[0], sets[i] = e, sets[0]
			break
		}
	}
	var union hll
	for _, e := range sets {
		union.merge(&e.set)
	}
	t.mu.Unlock()
	return union.count(), nil
}

// AddCount implements Tally. A sum that would overflow is an error (as
// Redis's INCRBY), the key's expiry renewed all the same.
func (t *MemoryTally) AddCount(_ context.Context, key string, n int64, ttl time.Duration) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, err := t.write(key, ttl, false)
	if e == nil {
		return err
	}
	if n > 0 && e.n > math.MaxInt64-n || n < 0 && e.n < math.MinInt64-n {
		return fmt.Errorf("cache: tally key %q: adding %d to %d overflows", key, n, e.n)
	}
	e.n += n
	return nil
}

// SumCounts implements Tally.
func (t *MemoryTally) SumCounts(_ context.Context, keys []string) (int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.sweep(now)
	var sum int64
	for _, k := range keys {
		e := t.lookup(k, now)
		switch {
		case e == nil:
		case e.distinct:
			return 0, kindError(e)
		default:
			sum += e.n
		}
	}
	return sum, nil
}

// Len is the number of keys held (some may have expired and not been
// dropped yet).
func (t *MemoryTally) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.keys)
}

// write returns key's entry of the kind asked, created if missing, to be
// written now: its expiry is renewed to ttl from now. It returns nil when
// ttl deletes the key, or with an error when the key holds the other kind.
// Called with t.mu held.
func (t *MemoryTally) write(key string, ttl time.Duration, distinct bool) (*tallied, error) {
	now := t.now()
	t.sweep(now)
	e := t.lookup(key, now)
	if ttl <= 0 {
		if e != nil {
			t.drop(e)
		}
		return nil, nil
	}
	until := now.Add(ttl)
	if e != nil {
		if e.distinct != distinct {
			return nil, kindError(e)
		}
		e.until = until
		heap.Fix(&t.exp, e.at)
		return e, nil
	}
	for len(t.keys) >= t.max && len(t.exp) > 0 {
		t.drop(t.exp[0])
	}
	e = &tallied{key: key, until: until, distinct: distinct}
	t.keys[key] = e
	heap.Push(&t.exp, e)
	return e, nil
}

// lookup returns key's entry, or nil when it is missing or expired
// (dropping it then). Called with t.mu held.
func (t *MemoryTally) lookup(key string, now time.Time) *tallied {
	e := t.keys[key]
	if e != nil && !now.Before(e.until) {
		t.drop(e)
		return nil
	}
	return e
}

// sweep drops up to tallySweep expired keys, those expiring first.
// Called with t.mu held.
func (t *MemoryTally) sweep(now time.Time) {
	for i := 0; i < tallySweep && len(t.exp) > 0 && !now.Before(t.exp[0].until); i++ {
		t.drop(t.exp[0])
	}
}

// drop removes e. Called with t.mu held.
func (t *MemoryTally) drop(e *tallied) {
	heap.Remove(&t.exp, e.at)
	delete(t.keys, e.key)
}

func kindError(e *tallied) error {
	if e.distinct {
		return fmt.Errorf("cache: tally key %q holds distinct members, not counts", e.key)
	}
	return fmt.Errorf("cache: tally key %q holds counts, not distinct members", e.key)
}

// tallyHeap orders keys by expiry, soonest first (container/heap), each
// keeping its index up to date for heap.Fix and heap.Remove.
type tallyHeap []*tallied

func (h tallyHeap) Len() int           { return len(h) }
func (h tallyHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h tallyHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].at, h[j].at = i, j
}
func (h *tallyHeap) Push(x any) {
	e := x.(*tallied)
	e.at = len(*h)
	*h = append(*h, e)
}
func (h *tallyHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil // let the key be collected
	*h = old[:len(old)-1]
	return e
}
