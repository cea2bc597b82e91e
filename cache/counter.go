package cache

import (
	"container/heap"
	"context"
	"hash/maphash"
	"slices"
	"sync"
	"time"
)

// Counter counts distinct members per key in fixed windows: a key's window
// starts at its first member and lasts the window given then; the count
// starts again after it. A member counted twice in a window counts once.
// (The directory-harvest limit counts the distinct unknown recipients of
// each client network this way: a mailing list that keeps writing to one
// departed user is one unknown recipient, not twenty.)
type Counter interface {
	// Add counts member for key and returns the distinct members so far
	// in its window and the time left in it.
	Add(ctx context.Context, key, member string, window time.Duration) (n int64, left time.Duration, err error)
	// Count returns key's count and the time left in its window (0, 0
	// when it has none).
	Count(ctx context.Context, key string) (n int64, left time.Duration, err error)
}

// MemoryCounter is a Counter in this process's memory, bounded: beyond
// max keys the key whose window ends first goes. A min-heap of window ends
// finds it (windows may differ per key, so the order keys begin in is not
// the order they end in); an entry of the heap whose key has begun a new
// window since is stale and skipped.
type MemoryCounter struct {
	mu   sync.Mutex
	max  int
	now  func() time.Time
	keys map[string]counted
	ends endHeap
	seed maphash.Seed
}

type counted struct {
	members []uint64 // hashes of the distinct members, at most maxMembers
	n       int64
	until   time.Time
}

// maxMembers bounds the members remembered per key; beyond it every Add
// counts (the limits counted against are far lower).
const maxMembers = 1024

type queued struct {
	key   string
	until time.Time
}

// NewMemoryCounter returns a MemoryCounter holding at most limit keys
// (at least 1).
func NewMemoryCounter(limit int) *MemoryCounter {
	return &MemoryCounter{max: max(limit, 1), now: time.Now, keys: make(map[string]counted), seed: maphash.MakeSeed()}
}

// Add implements Counter.
func (c *MemoryCounter) Add(_ context.Context, key, member string, window time.Duration) (int64, time.Duration, error) {
	h := maphash.String(c.seed, member)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if e, ok := c.keys[key]; ok && now.Before(e.until) {
		if !slices.Contains(e.members, h) {
			if len(e.members) < maxMembers {
				e.members = append(e.members, h)
			}
			e.n++
			c.keys[key] = e
		}
		return e.n, e.until.Sub(now), nil
	}
	// Ended windows go first, then, while full, the one ending soonest.
	for len(c.ends) > 0 && !now.Before(c.ends[0].until) {
		c.pop()
	}
	for len(c.keys) >= c.max && len(c.ends) > 0 {
		c.pop()
	}
	until := now.Add(window)
	c.keys[key] = counted{members: []uint64{h}, n: 1, until: until}
	heap.Push(&c.ends, queued{key, until})
	// Stale entries pile up only when keys begin new windows while old
	// ends sit deeper in the heap; rebuild from the live keys then.
	if len(c.ends) > 2*len(c.keys)+1024 {
		c.ends = c.ends[:0]
		for k, e := range c.keys {
			c.ends = append(c.ends, queued{k, e.until})
		}
		heap.Init(&c.ends)
	}
	return 1, window, nil
}

// Count implements Counter.
func (c *MemoryCounter) Count(_ context.Context, key string) (int64, time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if e, ok := c.keys[key]; ok && now.Before(e.until) {
		return e.n, e.until.Sub(now), nil
	}
	return 0, 0, nil
}

// Len is the number of keys held (some may have ended and not been
// dropped yet).
func (c *MemoryCounter) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.keys)
}

// pop drops the key whose window ends first, unless its entry is stale
// (the key began a new window since, queued on its own).
func (c *MemoryCounter) pop() {
	q := heap.Pop(&c.ends).(queued)
	if e, ok := c.keys[q.key]; ok && e.until.Equal(q.until) {
		delete(c.keys, q.key)
	}
}

// endHeap orders window ends, soonest first (container/heap).
type endHeap []queued

func (h endHeap) Len() int           { return len(h) }
func (h endHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h endHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *endHeap) Push(x any)        { *h = append(*h, x.(queued)) }
func (h *endHeap) Pop() any {
	old := *h
	q := old[len(old)-1]
	*h = old[:len(old)-1]
	return q
}
