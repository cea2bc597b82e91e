package dnstest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Message size limits.
const (
	// udpMinSize is what every client accepts over UDP (RFC 1035 4.2.1),
	// and all a client that sends no EDNS0 OPT record may get.
	udpMinSize = 512
	// udpMaxSize is the largest UDP answer sent and the payload size the
	// server advertises: the DNS Flag Day 2020 value, which avoids IP
	// fragmentation and is what Go's own resolver advertises.
	udpMaxSize = 1232
	// tcpMaxSize is all a 2-byte length prefix can frame (RFC 1035 4.2.2).
	tcpMaxSize = 65535
)

// Server is a DNS server on 127.0.0.1. Its methods are safe for concurrent
// use, but SetMX, SetAddrs, SetRcode and Silent end the test when given an
// invalid name, so call them from the test's goroutine.
type Server struct {
	t    testing.TB
	addr string
	udp  *net.UDPConn
	tcp  *net.TCPListener
	wg   sync.WaitGroup // the serving goroutines

	mu       sync.Mutex
	names    map[string]*entry // canonical name (lower case, trailing dot) → its data
	truncate bool
	dropUDP  int // UDP answers still to lose
	queries  []Query
	conns    map[net.Conn]struct{} // open TCP connections, closed on cleanup
	closed   bool
}

// entry is what the server knows about one name. Its existence alone makes
// the name exist: queries for other types get NODATA, not NXDOMAIN.
type entry struct {
	mx       []MX // Host canonical
	mxTTL    uint32
	addrs    []netip.Addr
	addrTTL  uint32
	rcode    dnsmessage.RCode
	hasRcode bool
	silent   bool
}

// MX is one MX record. Host "." is the null MX of RFC 7505 (a domain that
// accepts no mail).
type MX struct {
	Pref uint16
	Host string
}

// Query is one query the server received.
type Query struct {
	// Name is the question's name as sent, with its case and trailing dot.
	Name string
	Type dnsmessage.Type
	// TCP tells whether the query came over TCP rather than UDP.
	TCP bool
}

// Start listens on 127.0.0.1:<free port> for UDP and TCP (the same port) and
// serves until the test ends. The server knows no name at first, so every
// query gets NXDOMAIN.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, names: map[string]*entry{}, conns: map[net.Conn]struct{}{}}
	// The kernel picks a free UDP port, which may be taken for TCP by
	// another process; a stub resolver uses one address for both, so try
	// again with a new port rather than serve them apart.
	var lastErr error
	for range 50 {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatalf("dnstest: listen udp: %v", err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err != nil {
			u.Close()
			lastErr = err
			continue
		}
		s.udp, s.tcp = u, l
		break
	}
	if s.udp == nil {
		t.Fatalf("dnstest: no port free for both UDP and TCP: %v", lastErr)
	}
	s.addr = s.udp.LocalAddr().String()
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
	t.Cleanup(s.close)
	return s
}

// Addr is the address the server listens on, "127.0.0.1:PORT", for UDP and
// TCP alike.
func (s *Server) Addr() string { return s.addr }

// SetMX sets name's MX records, replacing any. With no records the name
// still exists: MX queries get NODATA. Answers keep the order given; the
// A and AAAA records of the hosts the server knows go into the Additional
// section, as real servers often do.
func (s *Server) SetMX(name string, ttl uint32, mx ...MX) {
	s.t.Helper()
	key := s.canonical(name)
	recs := make([]MX, len(mx))
	for i, m := range mx {
		recs[i] = MX{Pref: m.Pref, Host: s.canonical(m.Host)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(key)
	e.mx, e.mxTTL = recs, ttl
}

// SetAddrs sets name's A and AAAA records, replacing any: IPv4 addresses
// become A records, all others (IPv4-mapped IPv6 included) AAAA records.
// Zones are dropped. With no addresses the name still exists: A and AAAA
// queries get NODATA.
func (s *Server) SetAddrs(name string, ttl uint32, addrs ...netip.Addr) {
	s.t.Helper()
	key := s.canonical(name)
	recs := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		if !a.IsValid() {
			s.t.Fatalf("dnstest: SetAddrs %q: invalid address", name)
		}
		recs[i] = a.WithZone("")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(key)
	e.addrs, e.addrTTL = recs, ttl
}

// SetRcode makes every query for name answer with rcode and no records,
// whatever records are set for name, and keeps name's addresses out of the
// Additional section of MX answers. RCodeNameError gives NXDOMAIN,
// RCodeServerFailure SERVFAIL. Only the 4-bit RCODEs of the message header
// fit; larger ones end the test.
func (s *Server) SetRcode(name string, rcode dnsmessage.RCode) {
	s.t.Helper()
	key := s.canonical(name)
	if rcode > 15 {
		// Extended RCODEs need an OPT record, which the query may lack.
		s.t.Fatalf("dnstest: SetRcode %q: %v does not fit the header", name, rcode)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(key)
	e.rcode, e.hasRcode = rcode, true
}

// Silent makes the server read and record queries for name but never answer
// them, over UDP or TCP, so that a test can exercise a client's timeout.
func (s *Server) Silent(name string) {
	s.t.Helper()
	key := s.canonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entry(key).silent = true
}

// TruncateUDP, when on, makes every UDP answer carry no records and the TC
// bit, so that clients must retry over TCP; TCP answers are unaffected.
func (s *Server) TruncateUDP(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncate = on
}

// DropUDP makes the server lose its next n UDP answers (the queries are
// recorded), as a lossy network does, so that a client's retransmission
// can be seen.
func (s *Server) DropUDP(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropUDP = n
}

// Queries returns every query received so far, in order. Packets that are
// not a parsable query with one question are not recorded.
func (s *Server) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.queries)
}

// entry returns key's entry, creating it. s.mu must be held.
func (s *Server) entry(key string) *entry {
	e := s.names[key]
	if e == nil {
		e = &entry{}
		s.names[key] = e
	}
	return e
}

// canonical returns name in lower case with a trailing dot, the form the
// server keys names by, and ends the test if name could not be sent in a DNS
// message (checking here means building an answer never fails on a name).
func (s *Server) canonical(name string) string {
	s.t.Helper()
	c, err := canonicalName(name)
	if err != nil {
		s.t.Fatalf("dnstest: %v", err)
	}
	return c
}

func canonicalName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	if name == "." {
		return ".", nil
	}
	name = strings.TrimSuffix(name, ".")
	// The wire form is a length octet per label plus the root's zero octet,
	// so a name takes one octet more than its dotted form with the
	// trailing dot.
	if len(name)+2 > 255 {
		return "", fmt.Errorf("name %q: longer than 255 octets", name)
	}
	for l := range strings.SplitSeq(name, ".") {
		if l == "" || len(l) > 63 {
			return "", fmt.Errorf("name %q: a label is empty or longer than 63 octets", name)
		}
	}
	return asciiLower(name) + ".", nil
}

// asciiLower lowers ASCII letters only: DNS compares names without regard
// to ASCII case (RFC 4343) but compares other octets exactly, which
// strings.ToLower would not.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func (s *Server) close() {
	s.mu.Lock()
	s.closed = true
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.udp.Close()
	s.tcp.Close()
	for _, c := range conns {
		c.Close()
	}
	// Waiting means no goroutine outlives the test, so none can touch a
	// finished test or show up in a leak check.
	s.wg.Wait()
}

func (s *Server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // nothing but closing makes an unconnected UDP read fail for good
		}
		resp := s.respond(buf[:n], false)
		s.mu.Lock()
		drop := s.dropUDP > 0 && resp != nil
		if drop {
			s.dropUDP--
		}
		s.mu.Unlock()
		if resp != nil && !drop {
			_, _ = s.udp.WriteToUDPAddrPort(resp, from)
		}
	}
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, an aborted handshake: wait a
			// little rather than spin, as net/http does.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		// Added while serveTCP's own count is held, so it cannot race
		// with close's Wait.
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// serveConn answers the length-prefixed queries on one TCP connection in
// turn (RFC 7766 6.2.1 lets a client send several) until the client closes
// it or the test ends.
func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReader(c)
	var n [2]byte
	for {
		if _, err := io.ReadFull(br, n[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(br, msg); err != nil {
			return
		}
		resp := s.respond(msg, true)
		if resp == nil {
			continue // the framing still holds, so later queries can be read
		}
		out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(resp)), uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

// respond records the query in req and returns the packed answer, or nil
// when there is to be none: req is malformed, not a query, or for a silent
// name.
func (s *Server) respond(req []byte, tcp bool) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(req)
	if err != nil || h.Response {
		// Never answer an answer: two servers could loop.
		return nil
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil
	}
	edns, ok := clientEDNS(&p)
	if !ok {
		return nil
	}
	m := dnsmessage.Message{Header: dnsmessage.Header{
		ID:               h.ID,
		Response:         true,
		OpCode:           h.OpCode,
		Authoritative:    true,
		RecursionDesired: h.RecursionDesired,
		// The server stands in for the recursive resolver a stub client
		// is configured with, and answers every question itself. Stubs
		// warn about RA clear, and Go's and glibc's take an empty
		// answer with RA and AA clear for a lame referral.
		RecursionAvailable: true,
	}}
	switch {
	case h.OpCode != 0:
		// NOTIFY, UPDATE and the like are not for a stub's nameserver.
		m.Header.Authoritative = false
		m.Header.RCode = dnsmessage.RCodeNotImplemented
		return pack(m, edns, tcp, false)
	case len(qs) != 1:
		// RFC 9619: a query has exactly one question.
		m.Header.Authoritative = false
		m.Header.RCode = dnsmessage.RCodeFormatError
		return pack(m, edns, tcp, false)
	}
	q := qs[0]
	m.Questions = qs

	s.mu.Lock()
	s.queries = append(s.queries, Query{Name: q.Name.String(), Type: q.Type, TCP: tcp})
	e := s.names[asciiLower(q.Name.String())]
	truncate := s.truncate && !tcp
	switch {
	case e == nil:
		m.Header.RCode = dnsmessage.RCodeNameError
	case e.silent:
		s.mu.Unlock()
		return nil
	case e.hasRcode:
		m.Header.RCode = e.rcode
	case q.Class == dnsmessage.ClassINET:
		m.Answers, m.Additionals = s.records(q, e)
	}
	s.mu.Unlock()
	return pack(m, edns, tcp, truncate)
}

// records returns the answer to q about e, and the Additional records that
// go with it. s.mu must be held.
func (s *Server) records(q dnsmessage.Question, e *entry) (answers, additionals []dnsmessage.Resource) {
	// Answers are owned by the question's name as sent, as real servers
	// do, so a client that randomizes case (0x20) finds its own spelling.
	switch q.Type {
	case dnsmessage.TypeMX:
		var seen []string
		for _, mx := range e.mx {
			answers = append(answers, dnsmessage.Resource{
				Header: rrHeader(q.Name, dnsmessage.TypeMX, e.mxTTL),
				Body:   &dnsmessage.MXResource{Pref: mx.Pref, MX: mustName(mx.Host)},
			})
			if mx.Host == "." || slices.Contains(seen, mx.Host) {
				continue
			}
			seen = append(seen, mx.Host)
			if h := s.names[mx.Host]; h != nil && !h.silent && !h.hasRcode {
				additionals = append(additionals, addrRecords(mustName(mx.Host), h, true, true)...)
			}
		}
	case dnsmessage.TypeA:
		answers = addrRecords(q.Name, e, true, false)
	case dnsmessage.TypeAAAA:
		answers = addrRecords(q.Name, e, false, true)
	}
	return answers, additionals
}

// addrRecords returns e's A records (when v4) and AAAA records (when v6),
// owned by name.
func addrRecords(name dnsmessage.Name, e *entry, v4, v6 bool) []dnsmessage.Resource {
	var rrs []dnsmessage.Resource
	for _, a := range e.addrs {
		switch {
		case a.Is4() && v4:
			rrs = append(rrs, dnsmessage.Resource{
				Header: rrHeader(name, dnsmessage.TypeA, e.addrTTL),
				Body:   &dnsmessage.AResource{A: a.As4()},
			})
		case !a.Is4() && v6:
			rrs = append(rrs, dnsmessage.Resource{
				Header: rrHeader(name, dnsmessage.TypeAAAA, e.addrTTL),
				Body:   &dnsmessage.AAAAResource{AAAA: a.As16()},
			})
		}
	}
	return rrs
}

func rrHeader(name dnsmessage.Name, typ dnsmessage.Type, ttl uint32) dnsmessage.ResourceHeader {
	return dnsmessage.ResourceHeader{Name: name, Type: typ, Class: dnsmessage.ClassINET, TTL: ttl}
}

// mustName converts a name canonicalName accepted, which cannot fail.
func mustName(s string) dnsmessage.Name {
	return dnsmessage.MustNewName(s)
}

// clientEDNS reads the rest of a query after its questions and returns the
// UDP payload size its EDNS0 OPT record advertises (RFC 6891 6.2.5), or 0
// when it has none; ok is false when the message is malformed.
func clientEDNS(p *dnsmessage.Parser) (size int, ok bool) {
	if p.SkipAllAnswers() != nil || p.SkipAllAuthorities() != nil {
		return 0, false
	}
	for {
		h, err := p.AdditionalHeader()
		if err == dnsmessage.ErrSectionDone {
			return size, true
		}
		if err != nil {
			return 0, false
		}
		if h.Type == dnsmessage.TypeOPT {
			size = max(int(h.Class), udpMinSize)
		}
		if p.SkipAdditional() != nil {
			return 0, false
		}
	}
}

// pack packs m, with an OPT record when the client sent one (edns > 0), and
// fits it into what the transport allows the way real servers do: first
// drop the Additional records, which clients can look up themselves
// (RFC 2181 9), and only if the answer still does not fit set TC and send
// no records at all, so that the client retries over TCP. truncate forces
// the latter. It returns nil when m cannot be packed.
func pack(m dnsmessage.Message, edns int, tcp, truncate bool) []byte {
	limit := tcpMaxSize
	if !tcp {
		limit = udpMinSize
		if edns > 0 {
			limit = min(edns, udpMaxSize)
		}
	}
	if truncate {
		m.Header.Truncated = true
		m.Answers, m.Additionals = nil, nil
	}
	b, err := packEDNS(m, edns)
	if err == nil && len(b) > limit && len(m.Additionals) > 0 {
		m.Additionals = nil
		b, err = packEDNS(m, edns)
	}
	if err == nil && len(b) > limit {
		m.Header.Truncated = true
		m.Answers = nil
		b, err = packEDNS(m, edns)
	}
	if err != nil {
		// Every name the server set was checked when set, so only a
		// question name the parser accepted and the packer does not can
		// get here: treat the query as malformed.
		return nil
	}
	return b
}

// packEDNS packs m, adding an OPT record when the client sent one (edns >
// 0): RFC 6891 7 wants an EDNS answer to an EDNS query.
func packEDNS(m dnsmessage.Message, edns int) ([]byte, error) {
	if edns > 0 {
		var h dnsmessage.ResourceHeader
		_ = h.SetEDNS0(udpMaxSize, dnsmessage.RCodeSuccess, false) // cannot fail
		m.Additionals = append(slices.Clip(m.Additionals), dnsmessage.Resource{Header: h, Body: &dnsmessage.OPTResource{}})
	}
	return m.Pack()
}
