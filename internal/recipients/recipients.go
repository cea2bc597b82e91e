package recipients

import (
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"strings"

	"github.com/calloutd/calloutd/callout"
)

// MaxSize is the largest list Load and Parse accept, in bytes: some twenty
// million entries. A bigger file is far more likely a log or a dump named by
// mistake than a list, and loading it would cost the daemon that much memory
// again. It also keeps every offset into the text within 32 bits.
const MaxSize = 512 << 20

// ErrTooLarge is wrapped by the error for a list bigger than MaxSize.
var ErrTooLarge = errors.New("recipient list too large")

// errWhitespace is wrapped by the error for a line with more than one word
// before its comment: most likely two entries on one line, or a quoted
// local part with a space, neither of which the format has.
var errQuoted = errors.New("a quoted local part never matches: write it unquoted, as Postfix hands it over")

var errWhitespace = errors.New("whitespace inside an entry (one entry a line; '#' after whitespace starts a comment)")

// List is an immutable, loaded recipient list; safe for concurrent use.
type List struct {
	name    string
	addrs   table // "local@domain"
	domains table // "domain", from "@domain"
}

// Load reads and parses the list in the file at path. On any error, a bad
// line included, it returns no list, so that a reload keeps the old one.
func Load(path string) (*List, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b strings.Builder
	if fi, err := f.Stat(); err == nil {
		if fi.Size() > MaxSize {
			return nil, tooLarge(path, fi.Size())
		}
		b.Grow(int(fi.Size()))
	}
	// The file goes through a small buffer into the one string the list
	// keeps, lower-cased on the way: reading it whole first would allocate
	// its size twice.
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		writeLower(&b, buf[:n])
		if b.Len() > MaxSize {
			// Stat gave no size or a wrong one (a pipe, a file growing).
			return nil, tooLarge(path, int64(b.Len()))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return parse(path, b.String())
}

// Parse is Load without the file (name is used in errors), for tests and
// reloads. It keeps no reference to data.
func Parse(name string, data []byte) (*List, error) {
	if len(data) > MaxSize {
		return nil, tooLarge(name, int64(len(data)))
	}
	var b strings.Builder
	b.Grow(len(data))
	for len(data) > 0 {
		var buf [4096]byte
		n := copy(buf[:], data)
		data = data[n:]
		writeLower(&b, buf[:n])
	}
	return parse(name, b.String())
}

func tooLarge(name string, size int64) error {
	return fmt.Errorf("%s: %w: %d bytes or more, limit %d", name, ErrTooLarge, size, MaxSize)
}

// writeLower lower-cases the ASCII letters of p, in place, and appends it to
// b. Unlike strings.ToLower it never changes the length of the text, which
// non-ASCII in a comment could otherwise do, so line offsets hold.
func writeLower(b *strings.Builder, p []byte) {
	for i, c := range p {
		if 'A' <= c && c <= 'Z' {
			p[i] = c + 'a' - 'A'
		}
	}
	b.Write(p)
}

// parse builds the list from s, the lower-cased text of a file.
func parse(name, s string) (*List, error) {
	seed := maphash.MakeSeed()
	l := &List{
		name: name,
		// Sized up front, so that the table is allocated once rather than
		// grown and rehashed a dozen times on a big list.
		addrs:   newTable(s, seed, countAddrs(s)),
		domains: newTable(s, seed, 0),
	}
	var q queue
	pos := 0
	// Editors on Windows may start a UTF-8 file with a byte order mark.
	if strings.HasPrefix(s, "\uFEFF") {
		pos = len("\uFEFF")
	}
	for n := 1; pos < len(s); n++ {
		end := strings.IndexByte(s[pos:], '\n')
		if end < 0 {
			end = len(s)
		} else {
			end += pos
		}
		if err := l.addLine(&q, s, pos, end); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		pos = end + 1
	}
	l.addrs.flush(&q)
	return l, nil
}

// countAddrs returns the number of lines of s that start, after white
// space, with something other than a comment or an @domain: the number of
// address entries of a valid list, counting duplicates. Counting lines alone
// would be cheaper, but wildly wrong for a file of blank lines or comments.
func countAddrs(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i < len(s) && s[i] != '\n' && s[i] != '#' && s[i] != '@' {
			n++
		}
		j := strings.IndexByte(s[i:], '\n')
		if j < 0 {
			break
		}
		i += j
	}
	return n
}

// addLine adds the entry, if any, on the line s[i:j]. A bad entry is quoted
// in its error lower-cased, as the list holds it; the line number locates it.
func (l *List) addLine(q *queue, s string, i, j int) error {
	for i < j && isSpace(s[i]) {
		i++
	}
	for j > i && isSpace(s[j-1]) {
		j--
	}
	if i == j || s[i] == '#' {
		return nil
	}
	k := i
	for k < j && !isSpace(s[k]) {
		k++
	}
	// A '#' inside an entry is part of it: '#' is a valid local-part
	// character, and "a#b@example.com" a valid address. Only one after
	// white space starts a comment.
	r := k
	for r < j && isSpace(s[r]) {
		r++
	}
	if r < j && s[r] != '#' {
		return fmt.Errorf("%q: %w", s[i:j], errWhitespace)
	}
	entry := s[i:k]
	key := strings.TrimSuffix(entry, ".")
	if domain, ok := strings.CutPrefix(key, "@"); ok {
		if err := callout.CheckHostname(domain); err != nil {
			return fmt.Errorf("%q: %w", entry, err)
		}
		l.domains.insert(i+1, len(domain))
		return nil
	}
	a, err := callout.ParseAddress(key)
	if err != nil {
		return fmt.Errorf("%q: %w", entry, err)
	}
	// Postfix hands over recipients unquoted and with A-label domains:
	// an entry written otherwise would never match.
	if len(a.Local) > 1 && a.Local[0] == '"' && a.Local[len(a.Local)-1] == '"' {
		return fmt.Errorf("%q: %w", entry, errQuoted)
	}
	if a.String() != key {
		return fmt.Errorf("%q: write it as %s (internationalised domains as A-labels)", entry, a.String())
	}
	l.addrs.add(q, i, len(key))
	return nil
}

// isSpace is ASCII white space; '\r' among it makes CRLF files work.
// Anything else unprintable is left to the address checks, which refuse it.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'
}

// Contains tells whether local@domain is in the list (an address entry, or an
// @domain entry for domain). local and domain are as callout.ParseAddress
// returns them (any case; domain may have a trailing dot).
func (l *List) Contains(local, domain string) bool {
	if l == nil {
		return false
	}
	domain = strings.TrimSuffix(domain, ".")
	if len(local)+1+len(domain) > maxKey {
		return false // longer than any entry can be
	}
	// The lower-cased key is built on the stack: no allocation, whatever
	// the case of the input.
	var buf [maxKey]byte
	key := appendLower(buf[:0], local)
	key = append(key, '@')
	at := len(key)
	key = appendLower(key, domain)
	return l.domains.contains(key[at:]) || l.addrs.contains(key)
}

func appendLower(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}

// Len is the number of entries (addresses + domains). An entry listed twice,
// in whatever case or with and without the trailing dot, counts once.
func (l *List) Len() int {
	if l == nil {
		return 0
	}
	return l.addrs.n + l.domains.n
}

// Path returns the file the list was loaded from, or the name given to Parse.
func (l *List) Path() string {
	if l == nil {
		return ""
	}
	return l.name
}

// maxKey bounds the length of an entry, which a slot holds in 8 bits.
// Validation keeps entries shorter: ParseAddress refuses an address over
// callout.MaxPathLength (254) octets, CheckHostname a domain over 253.
const maxKey = 255

// table is a set of substrings of one text: an open-addressing hash table
// with linear probing whose slots are uint64s, each
//
//	offset+1 (32 bits) | hash tag (24 bits) | length (8 bits)
//
// and 0 when empty; the tag spares most probes a visit to the text. It
// replaced a map[string]struct{} of the same substrings, which on a
// million-entry list (BenchmarkLoad1M) loaded in 400 ms instead of 175, kept
// 85 bytes an entry instead of 45 (text included), and, holding a million
// pointers, added 9 ms to every garbage collection cycle of the daemon: the
// table holds none, so the collector does not look into it.
type table struct {
	s     string
	seed  maphash.Seed
	slots []uint64 // a power of two long, or empty
	n     int
}

func newTable(s string, seed maphash.Seed, hint int) table {
	t := table{s: s, seed: seed}
	if hint > 0 {
		t.slots = make([]uint64, slotsFor(hint))
	}
	return t
}

// slotsFor returns the table size for n entries: at most three quarters
// full, where linear probing stays short.
func slotsFor(n int) int {
	size := 8
	for size/4*3 < n {
		size *= 2
	}
	return size
}

// split divides a hash between the start slot, from its low bits, and the
// tag, from its high ones, so that the two are independent.
func (t *table) split(h uint64) (i int, tag uint64) {
	return int(h & uint64(len(t.slots)-1)), h >> 40 << 8
}

// insert adds s[off:off+n] unless it is there already.
func (t *table) insert(off, n int) {
	t.place(maphash.String(t.seed, t.s[off:off+n]), off, n)
}

// place is insert with the hash of the entry computed.
func (t *table) place(h uint64, off, n int) {
	if n > maxKey {
		panic("recipients: entry longer than validation allows")
	}
	if (t.n+1)*4 > len(t.slots)*3 {
		t.grow()
	}
	i, tag := t.split(h)
	for mask := len(t.slots) - 1; ; i = (i + 1) & mask {
		e := t.slots[i]
		if e == 0 {
			t.slots[i] = uint64(off+1)<<32 | tag | uint64(n)
			t.n++
			return
		}
		if e&0xffffffff == tag|uint64(n) && t.text(e) == t.s[off:off+n] {
			return
		}
	}
}

// queue holds entries hashed but not yet placed. On a big list nearly
// every placement misses the CPU caches; placed in a batch, with the hashes
// computed, the misses of successive entries overlap instead of each
// waiting on the parsing of its line.
type queue struct {
	n   int
	h   [64]uint64
	off [64]int
	len [64]int
}

func (t *table) add(q *queue, off, n int) {
	q.h[q.n], q.off[q.n], q.len[q.n] = maphash.String(t.seed, t.s[off:off+n]), off, n
	if q.n++; q.n == len(q.h) {
		t.flush(q)
	}
}

func (t *table) flush(q *queue) {
	for k := range q.n {
		t.place(q.h[k], q.off[k], q.len[k])
	}
	q.n = 0
}

func (t *table) contains(key []byte) bool {
	if t.n == 0 || len(key) > maxKey {
		return false
	}
	i, tag := t.split(maphash.Bytes(t.seed, key))
	for mask := len(t.slots) - 1; ; i = (i + 1) & mask {
		e := t.slots[i]
		if e == 0 {
			return false
		}
		if e&0xffffffff == tag|uint64(len(key)) && t.text(e) == string(key) {
			return true
		}
	}
}

// text returns the entry in slot value e.
func (t *table) text(e uint64) string {
	off := int(e>>32) - 1
	return t.s[off : off+int(e&0xff)]
}

func (t *table) grow() {
	old := t.slots
	t.slots = make([]uint64, max(8, 2*len(old)))
	mask := len(t.slots) - 1
	for _, e := range old {
		if e == 0 {
			continue
		}
		i, _ := t.split(maphash.String(t.seed, t.text(e)))
		for t.slots[i] != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = e
	}
}
