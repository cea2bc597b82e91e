package cache

import (
	"context"
	"hash/maphash"
	"math"
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
	interned  interner
}

type memShard struct {
	mu    sync.Mutex
	max   int
	items map[string]*memNode
	head  memNode // sentinel: head.next is the most recently used
}

// memNode is one entry, kept compact (88 bytes): a million cached verdicts
// must fit in little memory. The few distinct verdict words, codes, routes,
// servers and reasons are one interned "meta" index; reply texts are
// interned too while there are few distinct ones (most backends word every
// "user unknown" alike); times are Unix nanoseconds.
type memNode struct {
	key        string
	text       string
	prev, next *memNode
	verified   int64 // Unix ns; noTime for the zero time
	expires    int64 // Unix ns
	routes     uint64
	own        *entryMeta // when the interned metas are full
	meta       uint32
	code       uint16
}

// noTime stands for the zero time.Time in memNode.verified.
const noTime = math.MinInt64

// entryMeta is the low-cardinality part of an Entry.
type entryMeta struct {
	verdict, enhanced, route, server, reason string
	local                                    bool
	learned                                  string // queue id: never interned
}

// interner hands out indices of entryMeta values and canonical copies of
// reply texts. Reads (Get) load a snapshot without locking.
type interner struct {
	mu      sync.Mutex
	metas   atomic.Pointer[[]entryMeta]
	metaIdx map[entryMeta]uint32
	texts   map[string]string
}

// maxTexts bounds the interned reply texts, and maxMetas the interned
// metas; beyond them (texts that name the recipient, a backend inventing
// enhanced codes) each entry keeps its own.
const (
	maxTexts = 4096
	maxMetas = 65536
)

// meta returns m's index, ok false when the table is full.
func (in *interner) meta(m entryMeta) (uint32, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if i, ok := in.metaIdx[m]; ok {
		return i, true
	}
	if len(in.metaIdx) >= maxMetas {
		return 0, false
	}
	if in.metaIdx == nil {
		in.metaIdx = make(map[entryMeta]uint32)
	}
	var list []entryMeta
	if p := in.metas.Load(); p != nil {
		list = *p
	}
	i := uint32(len(list))
	// Readers index only below the length of the snapshot they loaded,
	// so appending in place (amortised) never touches what they read.
	grown := append(list, m)
	in.metas.Store(&grown)
	in.metaIdx[m] = i
	return i, true
}

func (in *interner) text(t string) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if c, ok := in.texts[t]; ok {
		return c
	}
	if in.texts == nil {
		in.texts = make(map[string]string)
	}
	t = strings.Clone(t) // never keep the caller's (larger) backing array
	if len(in.texts) < maxTexts {
		in.texts[t] = t
	}
	return t
}

func (in *interner) lookup(i uint32) entryMeta { return (*in.metas.Load())[i] }

func (m *Memory) pack(n *memNode, e *Entry, expires time.Time) {
	n.text = m.interned.text(e.Text)
	md := entryMeta{e.Verdict, e.Enhanced, e.Route, e.Server, e.Reason, e.Local, e.Learned}
	var ok bool
	// A learned entry's queue id is its own: interning it would fill the
	// table with values used once.
	if e.Learned != "" {
		n.meta = 0
		own := md
		n.own = &own
	} else if n.meta, ok = m.interned.meta(md); !ok {
		own := md
		n.own = &own
	}
	n.code = uint16(min(max(e.Code, 0), math.MaxUint16))
	n.routes = e.Routes
	n.verified = noTime
	if !e.Verified.IsZero() {
		n.verified = e.Verified.UnixNano()
	}
	n.expires = expires.UnixNano()
}

func (m *Memory) unpack(n *memNode) Entry {
	var md entryMeta
	if n.own != nil {
		md = *n.own
	} else {
		md = m.interned.lookup(n.meta)
	}
	e := Entry{
		Verdict: md.verdict, Code: int(n.code), Enhanced: md.enhanced, Text: n.text, Route: md.route,
		Server: md.server, Reason: md.reason, Routes: n.routes, Local: md.local, Learned: md.learned,
		Expires: time.Unix(0, n.expires).UTC(),
	}
	if n.verified != noTime {
		e.Verified = time.Unix(0, n.verified).UTC()
	}
	return e
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
	e, ok := m.GetAt(key, m.now())
	return e, ok, nil
}

// GetAt implements ReaderAt.
func (m *Memory) GetAt(key string, now time.Time) (Entry, bool) {
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.items[key]
	if n == nil {
		return Entry{}, false
	}
	if now.UnixNano() >= n.expires {
		s.remove(n)
		return Entry{}, false
	}
	s.unlink(n)
	s.pushFront(n)
	return m.unpack(n), true
}

// Set implements Store.
func (m *Memory) Set(_ context.Context, key string, e Entry, ttl time.Duration) error {
	if ttl <= 0 {
		return nil
	}
	expires := m.now().Add(ttl)
	var packed memNode
	m.pack(&packed, &e, expires) // interning outside the shard's lock
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.items[key]; n != nil {
		packed.key, packed.prev, packed.next = n.key, n.prev, n.next
		*n = packed
		s.unlink(n)
		s.pushFront(n)
		return nil
	}
	for len(s.items) >= s.max {
		s.remove(s.head.prev)
		m.evictions.Add(1)
	}
	n := new(memNode)
	*n = packed
	n.key = key
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
