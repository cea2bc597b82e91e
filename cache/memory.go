package cache

import (
	"context"
	"hash/maphash"
	"math/bits"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Memory is an in-process Store bounded to a number of entries, evicting the
// least recently used. It is split into shards, each with its own lock, so
// that concurrent lookups of different addresses rarely wait for each other.
type Memory struct {
	seed      maphash.Seed
	shards    []memShard
	mask      uint64
	evictions atomic.Uint64
	now       func() time.Time // for tests
}

type memShard struct {
	mu    sync.Mutex
	max   int
	items map[string]*memNode
	head  memNode // sentinel: head.next is the most recently used
}

type memNode struct {
	key        string
	entry      Entry
	expires    time.Time
	prev, next *memNode
}

// NewMemory returns a store holding at most maxEntries entries (at least 1).
// Small stores get one shard, so their LRU order is exact; large ones up to
// 64 shards of at least 4096 entries each, LRU within a shard.
func NewMemory(maxEntries int) *Memory {
	maxEntries = max(maxEntries, 1)
	n := 1
	if per := maxEntries / 4096; per > 1 {
		n = min(1<<(bits.Len(uint(per))-1), 64)
	}
	m := &Memory{seed: maphash.MakeSeed(), shards: make([]memShard, n), mask: uint64(n - 1), now: time.Now}
	for i := range m.shards {
		s := &m.shards[i]
		// The first maxEntries%n shards hold one more, so that the
		// shards' bounds add up to exactly maxEntries.
		s.max = maxEntries / n
		if i < maxEntries%n {
			s.max++
		}
		s.items = make(map[string]*memNode)
		s.head.next, s.head.prev = &s.head, &s.head
	}
	return m
}

func (m *Memory) shard(key string) *memShard {
	return &m.shards[maphash.String(m.seed, key)&m.mask]
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, key string) (Entry, bool, error) {
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.items[key]
	if n == nil {
		return Entry{}, false, nil
	}
	if !m.now().Before(n.expires) {
		s.remove(n)
		return Entry{}, false, nil
	}
	s.unlink(n)
	s.pushFront(n)
	e := n.entry
	e.Expires = n.expires
	return e, true, nil
}

// Set implements Store.
func (m *Memory) Set(_ context.Context, key string, e Entry, ttl time.Duration) error {
	if ttl <= 0 {
		return nil
	}
	e.Expires = time.Time{}
	expires := m.now().Add(ttl)
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.items[key]; n != nil {
		n.entry, n.expires = e, expires
		s.unlink(n)
		s.pushFront(n)
		return nil
	}
	for len(s.items) >= s.max {
		s.remove(s.head.prev)
		m.evictions.Add(1)
	}
	n := &memNode{key: key, entry: e, expires: expires}
	s.items[key] = n
	s.pushFront(n)
	return nil
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, key string) error {
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.items[key]; n != nil {
		s.remove(n)
	}
	return nil
}

// DeleteFunc removes every entry whose key f approves (flushing a domain or
// everything) and returns how many it removed.
func (m *Memory) DeleteFunc(f func(key string) bool) int {
	removed := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for k, n := range s.items {
			if f(k) {
				s.remove(n)
				removed++
			}
		}
		s.mu.Unlock()
	}
	return removed
}

// Flush implements Flusher.
func (m *Memory) Flush(_ context.Context, domain string) (int, error) {
	if domain == "" {
		return m.DeleteFunc(func(string) bool { return true }), nil
	}
	suffix := "@" + domain
	return m.DeleteFunc(func(k string) bool { return strings.HasSuffix(k, suffix) }), nil
}

// Len returns the number of entries held, expired ones included until they
// are looked up or evicted.
func (m *Memory) Len() int {
	total := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		total += len(s.items)
		s.mu.Unlock()
	}
	return total
}

// Evictions returns how many entries were evicted to make room.
func (m *Memory) Evictions() uint64 { return m.evictions.Load() }

// Close implements Store; the memory is left to the garbage collector.
func (m *Memory) Close() error { return nil }

func (s *memShard) pushFront(n *memNode) {
	n.prev, n.next = &s.head, s.head.next
	s.head.next.prev = n
	s.head.next = n
}

func (s *memShard) unlink(n *memNode) {
	n.prev.next, n.next.prev = n.next, n.prev
	n.prev, n.next = nil, nil
}

func (s *memShard) remove(n *memNode) {
	s.unlink(n)
	delete(s.items, n.key)
}

// Nonblocking implements cache.Nonblocking: the memory store never waits on
// I/O.
func (m *Memory) Nonblocking() {}
