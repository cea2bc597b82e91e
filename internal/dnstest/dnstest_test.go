package dnstest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// resolver is Go's own stub resolver pointed at s. Test names end in a dot
// so that the search list of /etc/resolv.conf is not tried.
func resolver(s *Server) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.Addr())
	}}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestLookupMX(t *testing.T) {
	s := Start(t)
	// Mixed case and no trailing dot when set; the lookup uses neither.
	s.SetMX("Example.TEST", 300, MX{20, "mx2.example.test"}, MX{10, "MX1.example.test."})
	mxs, err := resolver(s).LookupMX(ctx(t), "example.test.")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mx := range mxs {
		got = append(got, fmt.Sprintf("%d %s", mx.Pref, mx.Host))
	}
	if want := []string{"10 mx1.example.test.", "20 mx2.example.test."}; !slices.Equal(got, want) {
		t.Errorf("LookupMX = %q, want %q", got, want)
	}
	want := []Query{{"example.test.", dnsmessage.TypeMX, false}}
	if q := s.Queries(); !slices.Equal(q, want) {
		t.Errorf("Queries = %v, want %v", q, want)
	}
}

func TestLookupIPAddr(t *testing.T) {
	s := Start(t)
	want := []netip.Addr{
		netip.MustParseAddr("192.0.2.1"),
		netip.MustParseAddr("192.0.2.2"),
		netip.MustParseAddr("2001:db8::1"),
	}
	s.SetAddrs("host.example.test", 60, want[2], want[0], want[1])
	addrs, err := resolver(s).LookupIPAddr(ctx(t), "host.example.test.")
	if err != nil {
		t.Fatal(err)
	}
	var got []netip.Addr
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		got = append(got, ip.Unmap())
	}
	slices.SortFunc(got, netip.Addr.Compare)
	if !slices.Equal(got, want) {
		t.Errorf("LookupIPAddr = %v, want %v", got, want)
	}
	var types []dnsmessage.Type
	for _, q := range s.Queries() {
		if q.TCP || q.Name != "host.example.test." {
			t.Errorf("unexpected query %v", q)
		}
		types = append(types, q.Type)
	}
	slices.Sort(types) // A and AAAA are asked in parallel
	if want := []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA}; !slices.Equal(types, want) {
		t.Errorf("query types = %v, want %v", types, want)
	}
}

func TestNotFound(t *testing.T) {
	s := Start(t)
	s.SetAddrs("a.example.test", 60, netip.MustParseAddr("192.0.2.1"))
	s.SetRcode("nx.example.test", dnsmessage.RCodeNameError)
	// Unknown, NXDOMAIN by SetRcode, and NODATA all look the same through
	// Go's resolver; the raw tests tell them apart.
	for _, name := range []string{"nope.example.test.", "nx.example.test.", "a.example.test."} {
		_, err := resolver(s).LookupMX(ctx(t), name)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Errorf("LookupMX(%s) = %v, want a DNSError with IsNotFound", name, err)
		}
	}
}

func TestServFail(t *testing.T) {
	s := Start(t)
	s.SetMX("example.test", 300, MX{10, "mx.example.test"})
	s.SetRcode("example.test", dnsmessage.RCodeServerFailure)
	mxs, err := resolver(s).LookupMX(ctx(t), "example.test.")
	var de *net.DNSError
	if !errors.As(err, &de) || de.IsNotFound || de.IsTimeout {
		t.Errorf("LookupMX = %v, %v; want a DNSError neither not-found nor timeout", mxs, err)
	}
}

func TestTruncateUDP(t *testing.T) {
	s := Start(t)
	s.SetMX("example.test", 300, MX{10, "mx.example.test"})
	s.TruncateUDP(true)
	mxs, err := resolver(s).LookupMX(ctx(t), "example.test.")
	if err != nil || len(mxs) != 1 || mxs[0].Host != "mx.example.test." {
		t.Fatalf("LookupMX = %v, %v", mxs, err)
	}
	want := []Query{
		{"example.test.", dnsmessage.TypeMX, false},
		{"example.test.", dnsmessage.TypeMX, true},
	}
	if q := s.Queries(); !slices.Equal(q, want) {
		t.Errorf("Queries = %v, want %v", q, want)
	}
}

func TestSilent(t *testing.T) {
	s := Start(t)
	s.SetMX("example.test", 300, MX{10, "mx.example.test"})
	s.Silent("example.test")
	c, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := resolver(s).LookupMX(c, "example.test.")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTimeout {
		t.Errorf("LookupMX = %v, want a DNSError with IsTimeout", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("LookupMX took %v, want about 200ms", d)
	}
	if q := s.Queries(); len(q) == 0 || q[0] != (Query{"example.test.", dnsmessage.TypeMX, false}) {
		t.Errorf("Queries = %v, want the MX query recorded", q)
	}

	// Over TCP too, and the connection stays usable for other names.
	s.SetAddrs("other.example.test", 60, netip.MustParseAddr("192.0.2.9"))
	conn := dialTCP(t, s)
	if err := writeTCP(conn, query(t, 1, "example.test.", dnsmessage.TypeMX, false)); err != nil {
		t.Fatal(err)
	}
	if err := writeTCP(conn, query(t, 2, "other.example.test.", dnsmessage.TypeA, false)); err != nil {
		t.Fatal(err)
	}
	if m := readTCP(t, conn); m.Header.ID != 2 || len(m.Answers) != 1 {
		t.Errorf("TCP answer = %+v, want only the answer to ID 2", m)
	}
}

// query packs a query for name, with an EDNS0 OPT record (payload 1232) when
// edns is set.
func query(t *testing.T, id uint16, name string, typ dnsmessage.Type, edns bool) []byte {
	t.Helper()
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}},
	}
	if edns {
		var h dnsmessage.ResourceHeader
		if err := h.SetEDNS0(1232, dnsmessage.RCodeSuccess, false); err != nil {
			t.Fatal(err)
		}
		m.Additionals = []dnsmessage.Resource{{Header: h, Body: &dnsmessage.OPTResource{}}}
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dialUDP(t *testing.T, s *Server) net.Conn {
	t.Helper()
	c, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	return c
}

func dialTCP(t *testing.T, s *Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	return c
}

func writeTCP(c net.Conn, msg []byte) error {
	_, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...))
	return err
}

func readUDP(t *testing.T, c net.Conn) (*dnsmessage.Message, int) {
	t.Helper()
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return &m, n
}

func readTCP(t *testing.T, c net.Conn) *dnsmessage.Message {
	t.Helper()
	var n [2]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf); err != nil {
		t.Fatal(err)
	}
	return &m
}

// exchangeUDP sends one query over UDP and returns the answer.
func exchangeUDP(t *testing.T, s *Server, q []byte) *dnsmessage.Message {
	t.Helper()
	c := dialUDP(t, s)
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	m, _ := readUDP(t, c)
	return m
}

// rrs renders records compactly for comparison.
func rrs(rs []dnsmessage.Resource) []string {
	var out []string
	for _, r := range rs {
		var v string
		switch b := r.Body.(type) {
		case *dnsmessage.MXResource:
			v = fmt.Sprintf("%d %s", b.Pref, b.MX)
		case *dnsmessage.AResource:
			v = netip.AddrFrom4(b.A).String()
		case *dnsmessage.AAAAResource:
			v = netip.AddrFrom16(b.AAAA).String()
		case *dnsmessage.OPTResource:
			v = fmt.Sprint(int(r.Header.Class))
		}
		out = append(out, fmt.Sprintf("%s %d %v %s", r.Header.Name, r.Header.TTL, r.Header.Type, v))
	}
	return out
}

func TestRawMXAdditional(t *testing.T) {
	s := Start(t)
	s.SetMX("example.test", 300,
		MX{10, "mx1.example.test"}, MX{20, "mx2.example.test"}, MX{30, "mx1.example.test"}, MX{40, "elsewhere.example.net"})
	s.SetAddrs("mx1.example.test", 60, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"))
	s.SetAddrs("mx2.example.test", 61, netip.MustParseAddr("192.0.2.2"))
	wantAns := []string{
		"ExAmple.test. 300 TypeMX 10 mx1.example.test.",
		"ExAmple.test. 300 TypeMX 20 mx2.example.test.",
		"ExAmple.test. 300 TypeMX 30 mx1.example.test.",
		"ExAmple.test. 300 TypeMX 40 elsewhere.example.net.",
	}
	wantAdd := []string{
		"mx1.example.test. 60 TypeA 192.0.2.1",
		"mx1.example.test. 60 TypeAAAA 2001:db8::1",
		"mx2.example.test. 61 TypeA 192.0.2.2",
	}
	check := func(t *testing.T, m *dnsmessage.Message, id uint16, edns bool) {
		t.Helper()
		h := m.Header
		if h.ID != id || !h.Response || !h.Authoritative || !h.RecursionDesired || !h.RecursionAvailable || h.Truncated || h.RCode != dnsmessage.RCodeSuccess {
			t.Errorf("header = %+v", h)
		}
		if len(m.Questions) != 1 || m.Questions[0].Name.String() != "ExAmple.test." || m.Questions[0].Type != dnsmessage.TypeMX {
			t.Errorf("questions = %v", m.Questions)
		}
		if got := rrs(m.Answers); !slices.Equal(got, wantAns) {
			t.Errorf("answers = %q, want %q", got, wantAns)
		}
		want := wantAdd
		if edns {
			want = append(slices.Clip(wantAdd), ". 0 TypeOPT 1232")
		}
		if got := rrs(m.Additionals); !slices.Equal(got, want) {
			t.Errorf("additionals = %q, want %q", got, want)
		}
	}
	t.Run("UDP", func(t *testing.T) {
		check(t, exchangeUDP(t, s, query(t, 0x1234, "ExAmple.test.", dnsmessage.TypeMX, false)), 0x1234, false)
		check(t, exchangeUDP(t, s, query(t, 0x1235, "ExAmple.test.", dnsmessage.TypeMX, true)), 0x1235, true)
	})
	t.Run("TCP", func(t *testing.T) {
		// Two queries on one connection, the second sent before the
		// first is answered.
		c := dialTCP(t, s)
		if err := writeTCP(c, query(t, 7, "ExAmple.test.", dnsmessage.TypeMX, false)); err != nil {
			t.Fatal(err)
		}
		if err := writeTCP(c, query(t, 8, "ExAmple.test.", dnsmessage.TypeMX, true)); err != nil {
			t.Fatal(err)
		}
		check(t, readTCP(t, c), 7, false)
		check(t, readTCP(t, c), 8, true)
	})
}

func TestRawRcodes(t *testing.T) {
	s := Start(t)
	s.SetAddrs("a.example.test", 60, netip.MustParseAddr("192.0.2.1"))
	s.SetMX("nodata.example.test", 60)
	s.SetMX("null.example.test", 60, MX{0, "."})
	s.SetMX("refused.example.test", 60, MX{0, "mx.example.test"})
	s.SetRcode("refused.example.test", dnsmessage.RCodeRefused)
	for _, tc := range []struct {
		name  string
		typ   dnsmessage.Type
		rcode dnsmessage.RCode
		ans   []string
	}{
		{"a.example.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"a.example.test. 60 TypeA 192.0.2.1"}},
		{"a.example.test.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, nil},
		{"a.example.test.", dnsmessage.TypeMX, dnsmessage.RCodeSuccess, nil},
		{"A.EXAMPLE.TEST.", dnsmessage.TypeTXT, dnsmessage.RCodeSuccess, nil},
		{"b.a.example.test.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"nodata.example.test.", dnsmessage.TypeMX, dnsmessage.RCodeSuccess, nil},
		{"nodata.example.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, nil},
		{"null.example.test.", dnsmessage.TypeMX, dnsmessage.RCodeSuccess, []string{"null.example.test. 60 TypeMX 0 ."}},
		{"refused.example.test.", dnsmessage.TypeMX, dnsmessage.RCodeRefused, nil},
		{"unknown.test.", dnsmessage.TypeMX, dnsmessage.RCodeNameError, nil},
	} {
		m := exchangeUDP(t, s, query(t, 99, tc.name, tc.typ, false))
		if m.Header.ID != 99 || !m.Header.Authoritative || m.Header.RCode != tc.rcode {
			t.Errorf("%s %v: header = %+v, want rcode %v", tc.name, tc.typ, m.Header, tc.rcode)
		}
		if got := rrs(m.Answers); !slices.Equal(got, tc.ans) || len(m.Additionals) != 0 {
			t.Errorf("%s %v: answers = %q, additionals %q; want %q and none", tc.name, tc.typ, got, rrs(m.Additionals), tc.ans)
		}
	}
}

func TestRawMalformed(t *testing.T) {
	s := Start(t)
	s.SetAddrs("a.example.test", 60, netip.MustParseAddr("192.0.2.1"))
	valid := query(t, 5, "a.example.test.", dnsmessage.TypeA, false)
	// An answer must not be answered: two servers could loop.
	resp := slices.Clone(valid)
	resp[2] |= 0x80
	c := dialUDP(t, s)
	for _, p := range [][]byte{{}, {1, 2, 3}, valid[:len(valid)-3], resp, valid} {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if m, _ := readUDP(t, c); m.Header.ID != 5 || len(m.Answers) != 1 {
		t.Errorf("answer = %+v, want the one to the valid query", m)
	}
	tc := dialTCP(t, s)
	for _, p := range [][]byte{{}, {1, 2, 3}, valid} {
		if err := writeTCP(tc, p); err != nil {
			t.Fatal(err)
		}
	}
	if m := readTCP(t, tc); m.Header.ID != 5 || len(m.Answers) != 1 {
		t.Errorf("TCP answer = %+v, want the one to the valid query", m)
	}
	if q := s.Queries(); len(q) != 2 {
		t.Errorf("Queries = %v, want only the two valid ones", q)
	}

	// A query with no question is well formed but not answerable.
	noq, err := (&dnsmessage.Message{Header: dnsmessage.Header{ID: 6}}).Pack()
	if err != nil {
		t.Fatal(err)
	}
	if m := exchangeUDP(t, s, noq); m.Header.ID != 6 || m.Header.RCode != dnsmessage.RCodeFormatError {
		t.Errorf("no-question answer = %+v, want FORMERR", m.Header)
	}
}

func TestRawSizes(t *testing.T) {
	s := Start(t)
	var mxs []MX
	for i := range 40 {
		host := fmt.Sprintf("mx%02d.example.test", i)
		mxs = append(mxs, MX{uint16(i), host})
		s.SetAddrs(host, 60, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	s.SetMX("twenty.example.test", 60, mxs[:20]...)
	s.SetMX("forty.example.test", 60, mxs...)
	for _, tc := range []struct {
		name       string
		edns, tcp  bool
		ans, add   int // OPT not counted
		truncated  bool
		maxUDPSize int
	}{
		// Without EDNS0 only 512 octets fit: the Additional section goes
		// first, then everything with TC set.
		{"twenty.example.test.", false, false, 20, 0, false, 512},
		{"forty.example.test.", false, false, 0, 0, true, 512},
		{"twenty.example.test.", true, false, 20, 20, false, 1232},
		{"forty.example.test.", true, false, 40, 0, false, 1232},
		{"forty.example.test.", false, true, 40, 40, false, 0},
	} {
		q := query(t, 1, tc.name, dnsmessage.TypeMX, tc.edns)
		var m *dnsmessage.Message
		if tc.tcp {
			c := dialTCP(t, s)
			if err := writeTCP(c, q); err != nil {
				t.Fatal(err)
			}
			m = readTCP(t, c)
		} else {
			c := dialUDP(t, s)
			if _, err := c.Write(q); err != nil {
				t.Fatal(err)
			}
			var n int
			if m, n = readUDP(t, c); n > tc.maxUDPSize {
				t.Errorf("%+v: %d octets over UDP", tc, n)
			}
		}
		add := len(m.Additionals)
		if tc.edns {
			add--
		}
		if len(m.Answers) != tc.ans || add != tc.add || m.Header.Truncated != tc.truncated {
			t.Errorf("%+v: %d answers, %d additionals, TC %v", tc, len(m.Answers), add, m.Header.Truncated)
		}
	}

	// TruncateUDP empties even a small answer, over UDP only.
	s.TruncateUDP(true)
	m := exchangeUDP(t, s, query(t, 2, "mx01.example.test.", dnsmessage.TypeA, false))
	if !m.Header.Truncated || len(m.Answers) != 0 || len(m.Questions) != 1 {
		t.Errorf("truncated answer = %+v", m)
	}
	c := dialTCP(t, s)
	if err := writeTCP(c, query(t, 3, "mx01.example.test.", dnsmessage.TypeA, false)); err != nil {
		t.Fatal(err)
	}
	if m := readTCP(t, c); m.Header.Truncated || len(m.Answers) != 1 {
		t.Errorf("TCP answer = %+v", m)
	}
}

func TestCanonicalName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Example.TEST", "example.test."},
		{"example.test.", "example.test."},
		{".", "."},
		{"", ""},
		{"a..b", ""},
		{string(make([]byte, 64)), ""},
	} {
		got, err := canonicalName(tc.in)
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("canonicalName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
