package callout

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// label returns a DNS label of n octets.
func label(n int) string { return strings.Repeat("d", n) }

// domainOf returns a host name of exactly n octets (n >= 1) made of labels
// of at most 63 octets.
func domainOf(n int) string {
	var labels []string
	for n > 0 {
		l := min(n, 63)
		if n-l == 1 { // a lone dot is left: shorten this label
			l--
		}
		labels = append(labels, label(l))
		n -= l
		if n > 0 {
			n-- // the dot
		}
	}
	return strings.Join(labels, ".")
}

func TestDomainOf(t *testing.T) {
	for n := 1; n <= 260; n++ {
		if d := domainOf(n); len(d) != n || (n <= 253 && CheckHostname(d) != nil) {
			t.Fatalf("domainOf(%d) = %q (%d octets, %v)", n, d, len(d), CheckHostname(d))
		}
	}
}

func TestParseAddress(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		local string // want; "" when an error is wanted
		dom   string
		wire  string
	}{
		{"plain", "bob@example.test", "bob", "example.test", "bob@example.test"},
		{"case kept", "Bob@Example.TEST", "Bob", "Example.TEST", "Bob@Example.TEST"},
		{"dot-atom", "first.last+tag@example.test", "first.last+tag", "example.test", "first.last+tag@example.test"},
		{"all atext", "!#$%&'*+-/=?^_`{|}~09azAZ@example.test", "!#$%&'*+-/=?^_`{|}~09azAZ", "example.test", "!#$%&'*+-/=?^_`{|}~09azAZ@example.test"},
		{"space is quoted", "john doe@example.com", "john doe", "example.com", `"john doe"@example.com`},
		{"quote is escaped", `a"b@example.com`, `a"b`, "example.com", `"a\"b"@example.com`},
		{"backslash is escaped", `a\b@example.com`, `a\b`, "example.com", `"a\\b"@example.com`},
		{"lone quote", `"@example.com`, `"`, "example.com", `"\""@example.com`},
		{"leading dot", ".bob@example.test", ".bob", "example.test", `".bob"@example.test`},
		{"trailing dot", "bob.@example.test", "bob.", "example.test", `"bob."@example.test`},
		{"double dot", "a..b@example.test", "a..b", "example.test", `"a..b"@example.test`},
		{"lone dot", ".@example.test", ".", "example.test", `"."@example.test`},
		{"angle brackets", "<a>@example.test", "<a>", "example.test", `"<a>"@example.test`},
		{"command in local part", "a> DATA@example.test", "a> DATA", "example.test", `"a> DATA"@example.test`},
		{"space only", " @example.test", " ", "example.test", `" "@example.test`},
		{"split at last @", "a@b@example.com", "a@b", "example.com", `"a@b"@example.com`},
		{"IPv4 literal", "bob@[192.0.2.1]", "bob", "[192.0.2.1]", "bob@[192.0.2.1]"},
		{"IPv6 literal", "bob@[IPv6:2001:db8::1]", "bob", "[IPv6:2001:db8::1]", "bob@[IPv6:2001:db8::1]"},
		{"IPv6 tag any case", "bob@[ipv6:2001:db8::1]", "bob", "[ipv6:2001:db8::1]", "bob@[ipv6:2001:db8::1]"},
		{"IPv4-mapped IPv6 literal", "bob@[IPv6:::ffff:192.0.2.1]", "bob", "[IPv6:::ffff:192.0.2.1]", "bob@[IPv6:::ffff:192.0.2.1]"},
		{"single label", "root@localhost", "root", "localhost", "root@localhost"},
		{"UTF-8 local part (NFC)", "jöhn@example.test", "jöhn", "example.test", "jöhn@example.test"},
		{"UTF-8 local part, dot-atom", "用户.名@example.test", "用户.名", "example.test", "用户.名@example.test"},
		{"U-label domain", "bob@bücher.example", "bob", "xn--bcher-kva.example", "bob@xn--bcher-kva.example"},
		{"U-label domain, capitals", "bob@BÜCHER.Example", "bob", "xn--bcher-kva.example", "bob@xn--bcher-kva.example"},
		{"A-label domain kept", "bob@xn--bcher-kva.example", "bob", "xn--bcher-kva.example", "bob@xn--bcher-kva.example"},
		{"digit labels", "bob@123.example", "bob", "123.example", "bob@123.example"},
		{"inner hyphens", "bob@a--b.example", "bob", "a--b.example", "bob@a--b.example"},
		{"label of 63", "bob@" + label(63) + ".test", "bob", label(63) + ".test", "bob@" + label(63) + ".test"},

		{"empty", "", "", "", ""},
		{"no @", "bob", "", "", ""},
		{"empty local part", "@example.test", "", "", ""},
		{"empty domain", "bob@", "", "", ""},
		{"only @", "@", "", "", ""},
		{"CR", "bo\rb@example.test", "", "", ""},
		{"LF", "bo\nb@example.test", "", "", ""},
		{"CRLF injection", "bob@example.test>\r\nDATA\r\n", "", "", ""},
		{"CRLF in local part", "a\r\nRSET\r\n@example.test", "", "", ""},
		{"NUL", "bo\x00b@example.test", "", "", ""},
		{"tab", "bo\tb@example.test", "", "", ""},
		{"DEL", "bo\x7fb@example.test", "", "", ""},
		{"invalid UTF-8 local part", "j\xffhn@example.test", "", "", ""},
		{"decomposed (NFD) local part", "jo\u0308hn@example.test", "", "", ""},
		{"C1 control in local part", "jo\u0085hn@example.test", "", "", ""},
		{"bidi control in local part", "jo\u202ehn@example.test", "", "", ""},
		{"invalid IDN domain", "bob@ex\u00e4mple--.test", "", "", ""},
		{"invalid UTF-8 domain", "bob@ex\xffmple.test", "", "", ""},
		{"Latin-1 octet", "j\xf6hn@example.test", "", "", ""},
		{"space in domain", "bob@exa mple.test", "", "", ""},
		{"underscore in domain", "bob@exa_mple.test", "", "", ""},
		{"angle in domain", "bob@example.test>", "", "", ""},
		{"leading hyphen", "bob@-example.test", "", "", ""},
		{"trailing hyphen", "bob@example-.test", "", "", ""},
		{"empty label", "bob@example..test", "", "", ""},
		{"leading dot in domain", "bob@.example.test", "", "", ""},
		{"trailing dot in domain", "bob@example.test.", "", "", ""},
		{"label of 64", "bob@" + label(64) + ".test", "", "", ""},
		{"literal unclosed", "bob@[192.0.2.1", "", "", ""},
		{"literal empty", "bob@[]", "", "", ""},
		{"literal trailing junk", "bob@[192.0.2.1]x", "", "", ""},
		{"literal bad IPv4", "bob@[192.0.2.256]", "", "", ""},
		{"literal short IPv4", "bob@[192.0.2]", "", "", ""},
		{"literal leading zero", "bob@[192.0.2.01]", "", "", ""},
		{"literal name", "bob@[mx.example.test]", "", "", ""},
		{"IPv6 without tag", "bob@[2001:db8::1]", "", "", ""},
		{"IPv6 tag, IPv4 address", "bob@[IPv6:192.0.2.1]", "", "", ""},
		{"IPv6 tag only", "bob@[IPv6:]", "", "", ""},
		{"IPv6 bad", "bob@[IPv6:2001:db8:::1]", "", "", ""},
		{"IPv6 zone", "bob@[IPv6:fe80::1%eth0]", "", "", ""},
		{"general literal", "bob@[x-tag:stuff]", "", "", ""},
		{"literal CRLF", "bob@[192.0.2.1\r\n]", "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAddress(tc.in)
			if tc.local == "" {
				if err == nil {
					t.Fatalf("ParseAddress(%q) = %#v, want an error", tc.in, a)
				}
				if !errors.Is(err, ErrInvalidAddress) {
					t.Errorf("ParseAddress(%q): error %v does not wrap ErrInvalidAddress", tc.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAddress(%q): %v", tc.in, err)
			}
			if a.Local != tc.local || a.Domain != tc.dom {
				t.Errorf("ParseAddress(%q) = %q, %q; want %q, %q", tc.in, a.Local, a.Domain, tc.local, tc.dom)
			}
			if got := a.Wire(); got != tc.wire {
				t.Errorf("Wire() = %s, want %s", got, tc.wire)
			}
			if got, want := a.String(), tc.local+"@"+tc.dom; got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
			checkWire(t, a)
		})
	}
}

func TestParseAddressLimits(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"local part of 64", label(64) + "@example.test", true},
		{"local part of 65", label(65) + "@example.test", false},
		// The limit applies to the local part as sent: quotes and escapes count.
		{"quoted local part of 64 on the wire", "a b" + label(59) + "@example.test", true},
		{"quoted local part of 65 on the wire", "a b" + label(60) + "@example.test", false},
		{"escaped local part of 64 on the wire", strings.Repeat(`"`, 31) + "@example.test", true},
		{"escaped local part of 66 on the wire", strings.Repeat(`"`, 32) + "@example.test", false},
		{"address of 254", label(64) + "@" + domainOf(254-65), true},
		{"address of 255", label(64) + "@" + domainOf(255-65), false},
		{"short local, address of 254", "b@" + domainOf(252), true},
		{"short local, domain of 253", "b@" + domainOf(253), false},
		{"domain of 254", "b@" + domainOf(254), false},
		{"domain of 300", "b@" + domainOf(300), false},
		{"local part of 1000", label(1000) + "@example.test", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAddress(tc.in)
			if tc.ok != (err == nil) {
				t.Fatalf("ParseAddress(%d octets, wire %d): got error %v, want ok=%v", len(tc.in), len(a.Wire()), err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidAddress) {
					t.Errorf("error %v does not wrap ErrInvalidAddress", err)
				}
				return
			}
			checkWire(t, a)
		})
	}
}

func TestCheckHostname(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"example.test", true},
		{"EXAMPLE.test", true},
		{"a", true},
		{"1.2.3.4", true},
		{"xn--bcher-kva.example", true},
		{domainOf(253), true},
		{domainOf(254), false},
		{"", false},
		{".", false},
		{"example.test.", false},
		{"a..b", false},
		{"-a.test", false},
		{"a-.test", false},
		{"a_b.test", false},
		{"a b.test", false},
		{"ä.test", false},
		{label(63) + ".test", true},
		{label(64) + ".test", false},
	} {
		if err := CheckHostname(tc.in); tc.ok != (err == nil) {
			t.Errorf("CheckHostname(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

// checkWire asserts what makes an accepted address safe on the wire: the
// mailbox is printable ASCII with no '<' or '>' outside a quoted string, so
// "RCPT TO:<" + Wire() + ">" is one command and nothing more; it parses as an
// RFC 5321 Mailbox whose unquoted local part and domain are the address's;
// and it keeps within the length limits.
func checkWire(t testing.TB, a Address) {
	t.Helper()
	w := a.Wire()
	quoted, escaped := false, false
	for i := 0; i < len(w); i++ {
		c := w[i]
		// UTF-8 only in an address that needs SMTPUTF8 (RFC 6531), and
		// never a control character: nothing can end the command line.
		if c < 0x20 || c == 0x7f || c >= 0x80 && !a.UTF8() {
			t.Fatalf("Wire() = %q has byte %#02x at %d", w, c, i)
		}
		switch {
		case escaped:
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case !quoted && (c == '<' || c == '>'):
			t.Fatalf("Wire() = %q has %q outside a quoted string at %d", w, c, i)
		}
	}
	if quoted || escaped {
		t.Fatalf("Wire() = %q ends inside a quoted string", w)
	}
	local, domain, err := parseMailbox(w)
	if err != nil {
		t.Fatalf("Wire() = %q is not an RFC 5321 Mailbox: %v", w, err)
	}
	if local != a.Local || domain != a.Domain {
		t.Fatalf("Wire() = %q reads as %q @ %q, want %q @ %q", w, local, domain, a.Local, a.Domain)
	}
	if !utf8.ValidString(w) {
		t.Fatalf("Wire() = %q is not valid UTF-8", w)
	}
	if len(w) > MaxPathLength {
		t.Fatalf("Wire() = %q is %d octets, limit %d", w, len(w), MaxPathLength)
	}
	if n := len(w) - len(a.Domain) - 1; n > MaxLocalPartLength {
		t.Fatalf("Wire() = %q has a local part of %d octets, limit %d", w, n, MaxLocalPartLength)
	}
	if b, err := ParseAddress(a.String()); err != nil || b != a {
		t.Fatalf("ParseAddress(%q) = %#v, %v; want %#v again", a.String(), b, err, a)
	}
}

// parseMailbox is an independent reading of RFC 5321 4.1.2's Mailbox:
//
//	Mailbox = Local-part "@" ( Domain / address-literal )
//	Local-part = Dot-string / Quoted-string
//
// It returns the local part unquoted. Only the syntax matters here; the
// address literal's content is checked by ParseAddress.
func parseMailbox(s string) (local, domain string, err error) {
	i := 0
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		for i = 1; ; i++ {
			if i == len(s) {
				return "", "", errors.New("unterminated quoted string")
			}
			c := s[i]
			if c == '"' {
				i++
				break
			}
			if c == '\\' { // quoted-pairSMTP = %d92 %d32-126
				i++
				if i == len(s) || s[i] < 32 || s[i] > 126 {
					return "", "", fmt.Errorf("bad quoted pair at %d", i)
				}
				b.WriteByte(s[i])
				continue
			}
			if c < 32 || c == 127 { // qtextSMTP = %d32-33 / %d35-91 / %d93-126 / UTF8-non-ascii
				return "", "", fmt.Errorf("bad qtext %#02x at %d", c, i)
			}
			b.WriteByte(c)
		}
		local = b.String()
	} else {
		at := strings.IndexByte(s, '@')
		if at < 0 {
			return "", "", errors.New("no @")
		}
		local = s[:at]
		for _, atom := range strings.Split(local, ".") {
			if atom == "" {
				return "", "", fmt.Errorf("empty atom in %q", local)
			}
			for j := 0; j < len(atom); j++ {
				if !isAtext(atom[j]) {
					return "", "", fmt.Errorf("%q is not atext", atom[j])
				}
			}
		}
		i = at
	}
	if i >= len(s) || s[i] != '@' {
		return "", "", fmt.Errorf("want @ at %d", i)
	}
	domain = s[i+1:]
	if strings.HasPrefix(domain, "[") {
		// address-literal = "[" ( IPv4-address-literal / IPv6-address-literal ) "]"
		inner, ok := strings.CutSuffix(domain[1:], "]")
		if !ok || inner == "" || strings.ContainsAny(inner, "[]\\") {
			return "", "", fmt.Errorf("bad address literal %q", domain)
		}
		return local, domain, nil
	}
	// Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str]
	for _, sub := range strings.Split(domain, ".") {
		if sub == "" || sub[0] == '-' || sub[len(sub)-1] == '-' {
			return "", "", fmt.Errorf("bad sub-domain %q", sub)
		}
		for j := 0; j < len(sub); j++ {
			c := sub[j]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return "", "", fmt.Errorf("bad sub-domain %q", sub)
			}
		}
	}
	return local, domain, nil
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"bob@example.test", "john doe@example.com", `a"b@example.com`, `a\b@example.com`,
		"a@b@example.com", ".bob@example.test", "bob@[192.0.2.1]", "bob@[IPv6:2001:db8::1]",
		"bob@example.test>\r\nDATA", "<a>@example.test", `"\"@x`, "bob@[IPv6:fe80::1%eth0]",
		label(64) + "@" + domainOf(189), " @x", "\"<\\>\"@x.y",
		"jöhn@bücher.example", "用户@例子.测试", "a\u0308@x.y", "j\xffhn@x.y", "\"jö hn\"@x.y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidAddress) {
				t.Fatalf("ParseAddress(%q): error %v does not wrap ErrInvalidAddress", s, err)
			}
			return
		}
		checkWire(t, a)
	})
}

func TestBase(t *testing.T) {
	for _, c := range []struct{ local, delims, want string }{
		{"bob+news", "+", "bob"},
		{"bob+news+more", "+", "bob"},
		{"bob-news", "+", "bob-news"},
		{"bob-news", "+-", "bob"},
		{"bob.smith+x", "+", "bob.smith"},
		{"+news", "+", "+news"}, // nothing before the delimiter
		{"bob", "+", "bob"},
		{"bob+x", "", "bob+x"},
		{"owner-list", "-", "owner-list"}, // Postfix keeps these whole
		{"list-request", "-", "list-request"},
		{"a-b", "-", "a"},
		{"Owner-List", "-", "Owner-List"},
		{"list+x-request", "+-", "list+x-request"},
		{"list+x-request", "+", "list"},
	} {
		got := Address{Local: c.local, Domain: "example.com"}.Base(c.delims)
		if got.Local != c.want || got.Domain != "example.com" {
			t.Errorf("Base(%q, %q) = %q, want %q", c.local, c.delims, got.Local, c.want)
		}
	}
}
