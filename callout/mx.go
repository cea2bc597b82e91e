package callout

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sync/singleflight"
)

// A route's server written "mx:backend.example.net" (or with a port,
// "mx:backend.example.net:2525") takes its servers from DNS: the MX
// records of the name, lowest preference first, each host's addresses in
// turn; the name's own addresses when it has no MX (RFC 5321 5.1); none
// for a null MX (RFC 7505). Answers are cached for their TTL (between 30 s
// and 1 h) and refreshed in the background in the last fifth of it. A DNS
// failure makes the entry's servers unavailable for the verdict (never a
// verdict about the recipient).

// MXPrefix marks a server entry resolved in DNS.
const MXPrefix = "mx:"

// ErrNullMX: the name publishes a null MX (RFC 7505): it accepts no mail.
var ErrNullMX = errors.New("null MX: the domain accepts no mail")

// IsMX tells whether a server entry is resolved in DNS: "mx:" and a name.
// "mx:2525" stays what it always was, the host "mx" on port 2525.
func IsMX(s string) bool {
	rest, ok := strings.CutPrefix(s, MXPrefix)
	if !ok {
		return false
	}
	_, err := strconv.Atoi(rest)
	return err != nil
}

// ParseMX splits "mx:host[:port]"; the port defaults to 25.
func ParseMX(s string) (host string, port int, err error) {
	rest, ok := strings.CutPrefix(s, MXPrefix)
	if !ok {
		return "", 0, fmt.Errorf("server %q: not an mx: entry", s)
	}
	host, port = rest, DefaultPort
	if h, p, found := strings.Cut(rest, ":"); found {
		host = h
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return "", 0, fmt.Errorf("server %q: invalid port %q", s, p)
		}
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if err := CheckHostname(host); err != nil {
		return "", 0, fmt.Errorf("server %q: %w", s, err)
	}
	return host, port, nil
}

// MXResolver resolves mx: server entries. The zero value asks the first
// nameserver of /etc/resolv.conf.
type MXResolver struct {
	// Server is the DNS server asked, "host:port"; "" = the system's
	// first nameserver.
	Server string
	// Timeout bounds one query. Default 2 s.
	Timeout time.Duration
	// Local tells whether an address is this host's own: found at port
	// 25, it is skipped, so that a route whose MX is the gateway itself
	// cannot make calloutd call its own Postfix. Default: the addresses
	// of this host's interfaces.
	Local func(netip.Addr) bool

	mu     sync.Mutex
	cache  map[string]*mxEntry
	flight singleflight.Group
}

type mxEntry struct {
	servers    []string
	err        error
	until      time.Time // usable until
	refresh    time.Time // refreshed in the background from then on
	refreshing bool
}

// Limits of how long an answer (or a failure) is kept.
const (
	mxMinTTL  = 30 * time.Second
	mxMaxTTL  = time.Hour
	mxFailTTL = 5 * time.Second
)

// Servers returns the servers of an mx: entry, "ip:port", in the order to
// ask them.
func (r *MXResolver) Servers(ctx context.Context, entry string) ([]string, error) {
	now := time.Now()
	r.mu.Lock()
	if r.cache == nil {
		r.cache = make(map[string]*mxEntry)
	}
	e := r.cache[entry]
	if e != nil && now.Before(e.until) {
		if !e.refreshing && !now.Before(e.refresh) && e.err == nil {
			e.refreshing = true
			go r.refresh(entry)
		}
		r.mu.Unlock()
		return e.servers, e.err
	}
	r.mu.Unlock()
	// One lookup for all the requests that need it, on a context of its
	// own: a request whose budget is nearly spent must not fail (and
	// cache the failure of) a lookup others need.
	ch := r.flight.DoChan(entry, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 4*r.timeout())
		defer cancel()
		return r.resolveAndStore(lctx, entry)
	})
	select {
	case res := <-ch:
		servers, _ := res.Val.([]string)
		return servers, res.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *MXResolver) refresh(entry string) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*r.timeout())
	defer cancel()
	_, _ = r.resolveAndStore(ctx, entry)
}

func (r *MXResolver) resolveAndStore(ctx context.Context, entry string) ([]string, error) {
	servers, ttl, err := r.resolve(ctx, entry)
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.cache[entry]
	if err != nil {
		if old != nil && old.err == nil && now.Before(old.until) {
			// A failed refresh: the old answer stands until it
			// expires, and the next request tries again.
			old.refreshing = false
			return old.servers, nil
		}
		r.cache[entry] = &mxEntry{err: err, until: now.Add(mxFailTTL), refresh: now.Add(mxFailTTL)}
		return nil, err
	}
	ttl = min(max(ttl, mxMinTTL), mxMaxTTL)
	r.cache[entry] = &mxEntry{servers: servers, until: now.Add(ttl), refresh: now.Add(ttl * 4 / 5)}
	return servers, nil
}

func (r *MXResolver) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return 2 * time.Second
}

// resolve looks entry up and returns its servers and the smallest TTL of
// the records used.
func (r *MXResolver) resolve(ctx context.Context, entry string) ([]string, time.Duration, error) {
	host, port, err := ParseMX(entry)
	if err != nil {
		return nil, 0, err
	}
	ans, err := r.query(ctx, host, dnsmessage.TypeMX)
	if err != nil {
		return nil, 0, err
	}
	ttl := ans.ttl
	type target struct {
		pref uint16
		host string
	}
	var targets []target
	for _, mx := range ans.mx {
		targets = append(targets, target{mx.Pref, strings.ToLower(strings.TrimSuffix(mx.MX.String(), "."))})
	}
	switch {
	case len(targets) == 1 && targets[0].host == "":
		return nil, ttl, ErrNullMX
	case len(targets) == 0:
		targets = []target{{0, host}} // no MX: the name itself (RFC 5321 5.1)
	}
	slices.SortStableFunc(targets, func(a, b target) int { return int(a.pref) - int(b.pref) })
	var servers []string
	var lastErr error
	for _, t := range targets {
		addrs, ok := ans.additional[t.host]
		if !ok {
			for _, typ := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
				a, err := r.query(ctx, t.host, typ)
				if err != nil {
					lastErr = err
					continue
				}
				addrs = append(addrs, a.addrs...)
				ttl = min(ttl, a.ttl)
			}
		}
		for _, a := range addrs {
			if port == DefaultPort && r.isLocal(a) {
				continue
			}
			s := net.JoinHostPort(a.String(), strconv.Itoa(port))
			if !slices.Contains(servers, s) {
				servers = append(servers, s)
			}
		}
	}
	if len(servers) == 0 {
		if lastErr != nil {
			return nil, 0, lastErr
		}
		return nil, 0, fmt.Errorf("%s: no usable address (none, or only this host's own)", entry)
	}
	return servers, ttl, nil
}

func (r *MXResolver) isLocal(a netip.Addr) bool {
	if r.Local != nil {
		return r.Local(a)
	}
	// 0.0.0.0 and :: reach this host too; multicast and link-local are
	// nobody's mail server.
	if a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a.Unmap() {
				return true
			}
		}
	}
	return false
}

// answer is what one query gave.
type answer struct {
	mx         []dnsmessage.MXResource
	addrs      []netip.Addr
	additional map[string][]netip.Addr // host (lower case, no dot) → addresses
	ttl        time.Duration
}

// query asks the resolver, over UDP, and over TCP when the answer was
// truncated.
func (r *MXResolver) query(ctx context.Context, name string, typ dnsmessage.Type) (*answer, error) {
	server := r.Server
	if server == "" {
		var err error
		if server, err = systemNameserver(); err != nil {
			return nil, err
		}
	}
	qname, err := dnsmessage.NewName(name + ".")
	if err != nil {
		return nil, fmt.Errorf("dns: %q: %w", name, err)
	}
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: qname, Type: typ, Class: dnsmessage.ClassINET}},
	}
	packed, err := msg.Pack()
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	qctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	q := msg.Questions[0]
	resp, err := exchange(qctx, "udp", server, packed, id, q)
	if err == nil && resp.Header.Truncated {
		resp, err = exchange(qctx, "tcp", server, packed, id, q)
	}
	if err != nil {
		return nil, fmt.Errorf("dns %s %s: %w", typ, name, err)
	}
	switch resp.Header.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return nil, fmt.Errorf("dns %s %s: no such domain", typ, name)
	default:
		return nil, fmt.Errorf("dns %s %s: %s", typ, name, resp.Header.RCode)
	}
	a := &answer{additional: map[string][]netip.Addr{}, ttl: mxMaxTTL}
	for _, rr := range resp.Answers {
		a.ttl = min(a.ttl, time.Duration(rr.Header.TTL)*time.Second)
		switch b := rr.Body.(type) {
		case *dnsmessage.MXResource:
			a.mx = append(a.mx, *b)
		case *dnsmessage.AResource:
			a.addrs = append(a.addrs, netip.AddrFrom4(b.A))
		case *dnsmessage.AAAAResource:
			a.addrs = append(a.addrs, netip.AddrFrom16(b.AAAA))
		}
	}
	for _, rr := range resp.Additionals {
		host := strings.ToLower(strings.TrimSuffix(rr.Header.Name.String(), "."))
		switch b := rr.Body.(type) {
		case *dnsmessage.AResource:
			a.additional[host] = append(a.additional[host], netip.AddrFrom4(b.A))
		case *dnsmessage.AAAAResource:
			a.additional[host] = append(a.additional[host], netip.AddrFrom16(b.AAAA))
		}
	}
	return a, nil
}

// exchange sends one query and reads the answer with the same ID.
func exchange(ctx context.Context, network, server string, query []byte, id uint16, q dnsmessage.Question) (*dnsmessage.Message, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if network == "tcp" {
		framed := binary.BigEndian.AppendUint16(nil, uint16(len(query)))
		if _, err := c.Write(append(framed, query...)); err != nil {
			return nil, err
		}
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return nil, err
		}
		buf := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, err
		}
		return parseAnswer(buf, id, q)
	}
	// UDP loses packets: the query is sent again when a third of the
	// time it was given has passed without an answer (three tries in
	// all, as resolv.conf's "attempts" would), and an answer to any of
	// them will do.
	every := udpRetransmit
	if dl, ok := ctx.Deadline(); ok {
		every = max(time.Until(dl)/3, 50*time.Millisecond)
	}
	if _, err := c.Write(query); err != nil {
		return nil, err
	}
	buf := make([]byte, 4096)
	resend := time.Now().Add(every)
	for {
		rd := resend
		if dl, ok := ctx.Deadline(); ok && dl.Before(rd) {
			rd = dl
		}
		_ = c.SetReadDeadline(rd)
		n, err := c.Read(buf)
		var ne net.Error
		if err != nil && errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil && time.Now().Before(deadlineOf(ctx)) {
			if _, err := c.Write(query); err != nil {
				return nil, err
			}
			resend = time.Now().Add(every)
			continue
		}
		if err != nil {
			return nil, err
		}
		m, err := parseAnswer(buf[:n], id, q)
		if err == nil {
			return m, nil
		}
		// Not ours (a late answer, spoofing): wait for the right one.
	}
}

// udpRetransmit is how long a UDP query waits before it is sent again
// when its context has no deadline.
const udpRetransmit = time.Second

// deadlineOf is ctx's deadline, or a time far ahead.
func deadlineOf(ctx context.Context) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(time.Hour)
}

// parseAnswer accepts only the answer to q: same ID, same question.
func parseAnswer(b []byte, id uint16, q dnsmessage.Question) (*dnsmessage.Message, error) {
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		return nil, err
	}
	if !m.Header.Response || m.Header.ID != id || len(m.Questions) != 1 || m.Questions[0].Type != q.Type ||
		m.Questions[0].Class != q.Class || !strings.EqualFold(m.Questions[0].Name.String(), q.Name.String()) {
		return nil, errors.New("dns: answer to another query")
	}
	return &m, nil
}

// systemNameserver is the first nameserver of /etc/resolv.conf.
func systemNameserver() (string, error) {
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return "", fmt.Errorf("dns: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				return net.JoinHostPort(a.String(), "53"), nil
			}
		}
	}
	return "", errors.New("dns: no nameserver in /etc/resolv.conf")
}
