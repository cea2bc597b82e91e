package recipients

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/calloutd/calloutd/callout"
)

type lookup struct {
	local, domain string
	want          bool
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    string
		len     int
		lookups []lookup
	}{
		{
			name: "addresses",
			data: "bob@example.com\nalice@example.org\n",
			len:  2,
			lookups: []lookup{
				{"bob", "example.com", true},
				{"alice", "example.org", true},
				{"bob", "example.org", false},
				{"carol", "example.com", false},
				{"bo", "bexample.com", false}, // not just the concatenation
			},
		},
		{
			name: "no final newline",
			data: "bob@example.com\nalice@example.org",
			len:  2,
			lookups: []lookup{
				{"alice", "example.org", true},
			},
		},
		{
			name: "domain wildcard",
			data: "@example.com\nbob@example.org\n",
			len:  2,
			lookups: []lookup{
				{"anyone", "example.com", true},
				{"Bob", "EXAMPLE.COM", true},
				{"bob", "example.org", true},
				{"alice", "example.org", false},
				{"bob", "mail.example.com", false}, // not a subdomain
				{"bob", "notexample.com", false},
				{"bob", "example.com.au", false},
			},
		},
		{
			name: "comments",
			data: "# the list\n" +
				"   # indented comment\n" +
				"bob@example.com  # Bob\n" +
				"alice@example.com\t#Alice\n" +
				"@example.org # all of it\n" +
				"a#b@example.com\n" + // '#' inside an entry is part of it
				"#carol@example.com\n",
			len: 4,
			lookups: []lookup{
				{"bob", "example.com", true},
				{"alice", "example.com", true},
				{"x", "example.org", true},
				{"a#b", "example.com", true},
				{"a", "example.com", false},
				{"carol", "example.com", false},
				{"#carol", "example.com", false},
			},
		},
		{
			name: "blank lines and white space",
			data: "\n\n   \n\t bob@example.com \t\n\n \v\f\n  @example.org",
			len:  2,
			lookups: []lookup{
				{"bob", "example.com", true},
				{"x", "example.org", true},
			},
		},
		{
			name: "CRLF",
			data: "# list\r\nbob@example.com\r\n@example.org\r\nalice@example.com # Alice\r\n\r\n",
			len:  3,
			lookups: []lookup{
				{"bob", "example.com", true},
				{"x", "example.org", true},
				{"alice", "example.com", true},
			},
		},
		{
			name: "byte order mark",
			data: "\uFEFFbob@example.com\n",
			len:  1,
			lookups: []lookup{
				{"bob", "example.com", true},
			},
		},
		{
			name: "case",
			data: "Bob.Smith@Example.COM\n@Example.ORG\nalice@example.net\n",
			len:  3,
			lookups: []lookup{
				{"bob.smith", "example.com", true},
				{"BOB.SMITH", "EXAMPLE.COM", true},
				{"bOb.sMiTh", "eXaMpLe.CoM", true},
				{"x", "EXAMPLE.org", true},
				{"ALICE", "Example.Net", true},
			},
		},
		{
			name: "trailing dot",
			data: "bob@example.com.\n@example.org.\nalice@example.net\n",
			len:  3,
			lookups: []lookup{
				{"bob", "example.com", true},
				{"bob", "example.com.", true},
				{"x", "example.org", true},
				{"x", "example.org.", true},
				{"alice", "example.net.", true},
				{"alice", "example.net..", false},
			},
		},
		{
			name: "duplicates count once",
			data: "bob@example.com\nBOB@example.com.\n@example.org\n@EXAMPLE.ORG.\n",
			len:  2,
			lookups: []lookup{
				{"bob", "example.com", true},
			},
		},
		{
			name: "address literal and odd local parts",
			data: "postmaster@[192.0.2.1]\nroot@[IPv6:2001:db8::1]\n\"x\"!%&@example.com\na@b@example.com\n",
			len:  4,
			lookups: []lookup{
				{"postmaster", "[192.0.2.1]", true},
				{"root", "[ipv6:2001:db8::1]", true},
				{"ROOT", "[IPV6:2001:DB8::1]", true},
				{"root", "[ipv6:2001:db8:0::1]", false}, // the same address, written otherwise
				{`"x"!%&`, "example.com", true},
				{"a@b", "example.com", true},
				{"a", "b@example.com", true}, // the same string; ParseAddress never splits so
			},
		},
		{
			name:    "empty",
			data:    "",
			len:     0,
			lookups: []lookup{{"bob", "example.com", false}, {"", "", false}},
		},
		{
			name:    "only comments",
			data:    "# nothing yet\n\n",
			len:     0,
			lookups: []lookup{{"bob", "example.com", false}},
		},
		{
			name: "non-ASCII in comments",
			data: "# Ünïcödé İ ẞ \xff\nbob@example.com # Bøb\n",
			len:  1,
			lookups: []lookup{
				{"bob", "example.com", true},
				{"bøb", "example.com", false},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Parse("list.txt", []byte(tc.data))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := l.Len(); got != tc.len {
				t.Errorf("Len: got %d, want %d", got, tc.len)
			}
			if got := l.Path(); got != "list.txt" {
				t.Errorf("Path: got %q, want %q", got, "list.txt")
			}
			for _, lk := range tc.lookups {
				if got := l.Contains(lk.local, lk.domain); got != lk.want {
					t.Errorf("Contains(%q, %q): got %v, want %v", lk.local, lk.domain, got, lk.want)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want string // the error starts with it (quoting the entry lower-cased)
		is   error  // and wraps it, if not nil
	}{
		{"no at", "bob\n", `list.txt:1: "bob": invalid address`, callout.ErrInvalidAddress},
		{"empty local", "@example.com\n@@example.com\n", `list.txt:2: "@@example.com": domain has invalid character`, nil},
		{"empty domain", "bob@\n", `list.txt:1: "bob@": invalid address: empty domain`, callout.ErrInvalidAddress},
		{"bare at", "@\n", `list.txt:1: "@": empty domain`, nil},
		{"bare dot", ".\n", `list.txt:1: ".": invalid address`, callout.ErrInvalidAddress},
		{"two trailing dots", "bob@example.com..\n", `list.txt:1: "bob@example.com..": invalid address`, callout.ErrInvalidAddress},
		{"bad domain", "# ok\n\nbob@exa_mple.com\n", `list.txt:3: "bob@exa_mple.com": invalid address`, callout.ErrInvalidAddress},
		{"bad wildcard domain", "bob@example.com\n@-example.com\n", `list.txt:2: "@-example.com": domain label starts or ends with a hyphen`, nil},
		{"wildcard literal", "@[192.0.2.1]\n", `list.txt:1: "@[192.0.2.1]": domain has invalid character`, nil},
		{"two entries", "bob@example.com alice@example.com\n", `list.txt:1: "bob@example.com alice@example.com": whitespace inside an entry`, errWhitespace},
		{"two wildcards", "@example.com @example.org # two\n", `list.txt:1: "@example.com @example.org # two": whitespace inside an entry`, errWhitespace},
		{"comment without space", "bob@example.com# Bob\n", `list.txt:1: "bob@example.com# bob": whitespace inside an entry`, errWhitespace},
		{"hash after entry", "bob@example.com#Bob\n", `list.txt:1: "bob@example.com#bob": invalid address: domain has invalid character '#'`, callout.ErrInvalidAddress},
		{"quoted local with space", `"john doe"@example.com` + "\n", `list.txt:1: "\"john doe\"@example.com": whitespace inside an entry`, errWhitespace},
		{"invalid UTF-8", "b\xffb@example.com\n", `list.txt:1: "b\xffb@example.com": invalid address: local part is not valid UTF-8`, callout.ErrInvalidAddress},
		{"quoted local part", "\"john\"@example.com\n", `list.txt:1: "\"john\"@example.com": a quoted local part never matches`, errQuoted},
		{"control character", "b\x00b@example.com\n", `list.txt:1: "b\x00b@example.com": invalid address`, callout.ErrInvalidAddress},
		{"lone CR", "bob@example.com\ralice@example.com\n", `list.txt:1: "bob@example.com\ralice@example.com": whitespace inside an entry`, errWhitespace},
		{"CRLF line numbers", "a@example.com\r\n\r\nb@example.com\r\nbad\r\n", `list.txt:4: "bad": invalid address`, callout.ErrInvalidAddress},
		{"first bad line only", "ok@example.com\nbad1\nbad2\n", `list.txt:2: "bad1": `, nil},
		{"too long", strings.Repeat("a", 65) + "@example.com", `list.txt:1: "aaaa`, callout.ErrInvalidAddress},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Parse("list.txt", []byte(tc.data))
			if err == nil {
				t.Fatalf("Parse: got a list of %d entries, want an error", l.Len())
			}
			if l != nil {
				t.Errorf("Parse: got a list with the error, want nil")
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("Parse error:\ngot  %s\nwant %s...", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Parse error %q does not wrap %q", err, tc.is)
			}
		})
	}
}

// TestParseKeepsData: the list must not alias or modify the caller's buffer.
func TestParseKeepsData(t *testing.T) {
	data := []byte("Bob@Example.com\n")
	l, err := Parse("list.txt", data)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "Bob@Example.com\n" {
		t.Errorf("Parse modified its input: %q", data)
	}
	copy(data, "Eve@Example.org\n")
	if !l.Contains("bob", "example.com") || l.Contains("eve", "example.org") {
		t.Errorf("the list changed with the buffer given to Parse")
	}
}

// TestSizing: the address table is sized by the entries, not the lines, so
// that a file of blank lines or comments costs no table; and a list is not
// grown while it loads.
func TestSizing(t *testing.T) {
	l, err := Parse("list.txt", []byte(strings.Repeat("\n  \t\r\n# comment\n@example.org\n", 100_000)))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(l.addrs.slots); n != 0 {
		t.Errorf("no address: got a table of %d slots", n)
	}
	l, err = Parse("list.txt", genList(10_000))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(l.addrs.slots), slotsFor(l.addrs.n); got != want {
		t.Errorf("%d addresses: got a table of %d slots, want %d", l.addrs.n, got, want)
	}
	for _, tc := range []struct{ n, want int }{{0, 8}, {6, 8}, {7, 16}, {12, 16}, {13, 32}, {768, 1024}, {769, 2048}} {
		if got := slotsFor(tc.n); got != tc.want {
			t.Errorf("slotsFor(%d): got %d, want %d", tc.n, got, tc.want)
		}
	}
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoad(t *testing.T) {
	path := writeFile(t, "mailstore.txt", []byte("bob@example.com\n@example.org\n"))
	l, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if l.Len() != 2 || !l.Contains("bob", "example.com") || !l.Contains("x", "example.org") {
		t.Errorf("Load: got a list of %d entries without the ones in the file", l.Len())
	}
	if l.Path() != path {
		t.Errorf("Path: got %q, want %q", l.Path(), path)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()

	missing := filepath.Join(dir, "missing.txt")
	if _, err := Load(missing); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load of a missing file: got %v, want an fs.ErrNotExist naming it", err)
	}

	if _, err := Load(dir); err == nil {
		t.Errorf("Load of a directory: got no error")
	}

	bad := writeFile(t, "bad.txt", []byte("bob@example.com\n\nnot an address\n"))
	if _, err := Load(bad); err == nil || !strings.HasPrefix(err.Error(), bad+":3: ") {
		t.Errorf("Load of a bad file: got %v, want an error starting %q", err, bad+":3: ")
	}

	// Sparse, so the test costs no disk: the size alone refuses it.
	big := filepath.Join(dir, "big.txt")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Load(big); !errors.Is(err, ErrTooLarge) || !strings.HasPrefix(err.Error(), big+": ") {
		t.Errorf("Load of a file over MaxSize: got %v, want ErrTooLarge naming it", err)
	}
}

func TestNil(t *testing.T) {
	var l *List
	if l.Contains("bob", "example.com") {
		t.Errorf("nil list: Contains: got true")
	}
	if l.Len() != 0 {
		t.Errorf("nil list: Len: got %d", l.Len())
	}
	if l.Path() != "" {
		t.Errorf("nil list: Path: got %q", l.Path())
	}
}

// TestConcurrent is for the race detector: lookups share the list.
func TestConcurrent(t *testing.T) {
	l, err := Parse("list.txt", genList(10_000))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < 10_000; i += 4 {
				want := i%100 > 1
				if got := l.Contains("user."+strconv.Itoa(i), "example"+strconv.Itoa(i%1000)+".com"); got != want {
					t.Errorf("Contains(user.%d): got %v, want %v", i, got, want)
				}
			}
		})
	}
	wg.Wait()
}

func TestContainsAllocs(t *testing.T) {
	l, err := Parse("list.txt", []byte("bob@example.com\n@example.org\n"))
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		local, domain string
		max           float64
	}{
		{"bob", "example.com", 0},
		{"Bob", "Example.COM.", 0},
		{"alice", "example.org", 0},
		{"alice", "example.net", 0},
		{long, "example.net", 1}, // longer than any entry: the key goes to the heap
	} {
		if n := testing.AllocsPerRun(100, func() { l.Contains(tc.local, tc.domain) }); n > tc.max {
			t.Errorf("Contains(%.20q, %q): %v allocations, want at most %v", tc.local, tc.domain, n, tc.max)
		}
	}
}

// genList returns a list of n lines in the shape of a real one: mostly
// mixed-case addresses, some with a trailing comment, a comment line and
// an @domain every hundred.
func genList(n int) []byte {
	b := make([]byte, 0, n*32)
	for i := range n {
		switch i % 100 {
		case 0:
			b = append(b, "# block "...)
			b = strconv.AppendInt(b, int64(i/100), 10)
		case 1:
			b = append(b, "@Dept"...)
			b = strconv.AppendInt(b, int64(i/100), 10)
			b = append(b, ".Example.NET"...)
		default:
			b = genAddr(b, i)
			if i%7 == 0 {
				b = append(b, "  # note"...)
			}
		}
		b = append(b, '\n')
	}
	return b
}

// genAddr appends the address genList puts on line i (i%100 > 1).
func genAddr(b []byte, i int) []byte {
	b = append(b, "User."...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, "@Example"...)
	b = strconv.AppendInt(b, int64(i%1000), 10)
	return append(b, ".com"...)
}

func TestLoad1M(t *testing.T) {
	const n = 1_000_000
	path := writeFile(t, "big.txt", genList(n))
	l, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	// Every hundred lines: a comment, an @domain and 98 addresses.
	if want := n / 100 * 99; l.Len() != want {
		t.Errorf("Len: got %d, want %d", l.Len(), want)
	}
	for _, lk := range []lookup{
		{"user.2", "example2.com", true},
		{"USER.999999", "EXAMPLE999.COM", true},
		{"user.500007", "example7.com.", true},
		{"user.500007", "example8.com", false},
		{"user.1000000", "example0.com", false},
		{"user.100", "example100.com", false}, // a comment line
		{"anyone", "dept0.example.net", true},
		{"anyone", "DEPT9999.example.net", true},
		{"anyone", "dept10000.example.net", false},
		{"anyone", "x.dept1.example.net", false},
	} {
		if got := l.Contains(lk.local, lk.domain); got != lk.want {
			t.Errorf("Contains(%q, %q): got %v, want %v", lk.local, lk.domain, got, lk.want)
		}
	}
}

// FuzzParse: Parse never panics, and every entry of a list it accepts is
// found, in upper case as well.
func FuzzParse(f *testing.F) {
	f.Add([]byte("bob@example.com  # Bob\n@example.org.\r\n\n# x\n"))
	f.Add([]byte("a#b@[IPv6:2001:db8::1]\n"))
	f.Add([]byte("\uFEFF@\n"))
	f.Add([]byte("@aaaaaaa.aaa\r#0"))
	f.Add([]byte("!!!!+++!ғ!+++@0")) // non-ASCII letters keep their case
	f.Add([]byte("SSSSSSϡ.0@1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse("fuzz", data)
		if err != nil {
			return
		}
		for line := range strings.Lines(strings.TrimPrefix(string(data), "\uFEFF")) {
			fields := strings.FieldsFunc(line, func(r rune) bool { return strings.ContainsRune(" \t\r\v\f\n", r) })
			if len(fields) == 0 || fields[0][0] == '#' {
				continue
			}
			// Lists fold ASCII case only, as cache keys do: strings.ToUpper
			// would change letters outside ASCII too ("ғ" to "Ғ").
			entry := strings.Map(func(r rune) rune {
				if 'a' <= r && r <= 'z' {
					return r - 'a' + 'A'
				}
				return r
			}, fields[0])
			var ok bool
			if d, wild := strings.CutPrefix(entry, "@"); wild {
				ok = l.Contains("SOMEONE", d)
			} else {
				at := strings.LastIndexByte(entry, '@')
				ok = l.Contains(entry[:at], entry[at+1:])
			}
			if !ok {
				t.Errorf("entry %q of an accepted list is not found", entry)
			}
		}
	})
}

func BenchmarkLoad1M(b *testing.B) {
	const n = 1_000_000
	path := writeFile(b, "big.txt", genList(n))

	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(path); err != nil {
			b.Fatal(err)
		}
	}

	// What a loaded list keeps, text included, as opposed to what loading
	// it allocates.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l, err := Load(path)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(l.Len()), "heap-B/entry")
	runtime.KeepAlive(l)
}

func BenchmarkContains(b *testing.B) {
	const n = 1_000_000
	l, err := Parse("big.txt", genList(n))
	if err != nil {
		b.Fatal(err)
	}
	// But for hot, one address over and over, addresses from all over the
	// list, so that lookups miss the CPU caches as they would in a daemon.
	const keys = 1 << 12
	for _, bc := range []struct {
		name string
		addr func(i int) []byte
	}{
		{"hot", func(int) []byte { return []byte("user.1234@example234.com") }},
		{"hit-lower", func(i int) []byte { return []byte(strings.ToLower(string(genAddr(nil, i)))) }},
		{"hit-mixed", func(i int) []byte { return genAddr(nil, i) }},
		{"hit-domain", func(i int) []byte { return []byte("someone@dept" + strconv.Itoa(i/100) + ".example.net") }},
		{"miss", func(i int) []byte { return []byte("nobody" + strconv.Itoa(i) + "@example.com") }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var locals, domains [keys]string
			for k := range keys {
				i := (k*7919)%(n/100)*100 + 2 + k%98
				a := string(bc.addr(i))
				at := strings.LastIndexByte(a, '@')
				locals[k], domains[k] = a[:at], a[at+1:]
				if bc.name != "miss" && !l.Contains(locals[k], domains[k]) {
					b.Fatalf("Contains(%q, %q): false, want true", locals[k], domains[k])
				}
			}
			b.ReportAllocs()
			k := 0
			for b.Loop() {
				l.Contains(locals[k], domains[k])
				k = (k + 1) % keys
			}
		})
	}
}
