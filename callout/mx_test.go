package callout

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/calloutd/calloutd/internal/dnstest"
)

func mxServers(t *testing.T, r *MXResolver, entry string) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.Servers(ctx, entry)
}

// MX records in preference order, each host's addresses (from the
// additional section or asked for), the port of the entry; the name's own
// addresses without MX; nothing for a null MX; errors, never an empty
// success, when DNS fails.
func TestMXResolver(t *testing.T) {
	dns := dnstest.Start(t)
	dns.SetMX("backend.test", 300, dnstest.MX{Pref: 20, Host: "mx2.backend.test"}, dnstest.MX{Pref: 10, Host: "mx1.backend.test"})
	dns.SetAddrs("mx1.backend.test", 300, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"))
	dns.SetAddrs("mx2.backend.test", 300, netip.MustParseAddr("192.0.2.2"))
	dns.SetAddrs("nomx.test", 300, netip.MustParseAddr("192.0.2.9"))
	dns.SetMX("null.test", 300, dnstest.MX{Pref: 0, Host: "."})
	dns.SetRcode("broken.test", dnsmessage.RCodeServerFailure)
	dns.SetMX("self.test", 300, dnstest.MX{Pref: 10, Host: "gw.self.test"}, dnstest.MX{Pref: 20, Host: "backup.self.test"})
	dns.SetAddrs("gw.self.test", 300, netip.MustParseAddr("192.0.2.50"))
	dns.SetAddrs("backup.self.test", 300, netip.MustParseAddr("192.0.2.51"))
	dns.SetMX("zero.test", 300, dnstest.MX{Pref: 10, Host: "nothing.zero.test"})
	dns.SetAddrs("nothing.zero.test", 300, netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("::"))
	r := &MXResolver{Server: dns.Addr(), Timeout: time.Second,
		Local: func(a netip.Addr) bool {
			return a == netip.MustParseAddr("192.0.2.50") || a.IsUnspecified()
		}}

	for _, c := range []struct {
		entry string
		want  []string
		err   error
	}{
		{"mx:backend.test", []string{"192.0.2.1:25", "[2001:db8::1]:25", "192.0.2.2:25"}, nil},
		{"mx:backend.test:2525", []string{"192.0.2.1:2525", "[2001:db8::1]:2525", "192.0.2.2:2525"}, nil},
		{"mx:nomx.test", []string{"192.0.2.9:25"}, nil},
		{"mx:null.test", nil, ErrNullMX},
		{"mx:self.test", []string{"192.0.2.51:25"}, nil},                           // this host's own address skipped
		{"mx:self.test:2525", []string{"192.0.2.50:2525", "192.0.2.51:2525"}, nil}, // not at port 25
	} {
		got, err := mxServers(t, r, c.entry)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: %v, %v; want %v", c.entry, got, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, %v; want %v", c.entry, got, err, c.want)
		}
	}
	// 0.0.0.0 and :: would reach this host's own Postfix.
	for _, entry := range []string{"mx:broken.test", "mx:nowhere.test", "mx:zero.test"} {
		if got, err := mxServers(t, r, entry); err == nil || len(got) != 0 {
			t.Errorf("%s: %v, %v; want an error", entry, got, err)
		}
	}
	// Answers are kept for their TTL: asked again, nothing is queried.
	before := len(dns.Queries())
	if _, err := mxServers(t, r, "mx:backend.test"); err != nil {
		t.Fatal(err)
	}
	if n := len(dns.Queries()) - before; n != 0 {
		t.Errorf("cached entry cost %d queries", n)
	}
}

// A truncated UDP answer is asked again over TCP; a silent server fails
// within the timeout.
func TestMXResolverTCPAndTimeout(t *testing.T) {
	dns := dnstest.Start(t)
	dns.SetMX("backend.test", 300, dnstest.MX{Pref: 10, Host: "mx1.backend.test"})
	dns.SetAddrs("mx1.backend.test", 300, netip.MustParseAddr("192.0.2.1"))
	dns.Silent("silent.test")
	dns.TruncateUDP(true)
	r := &MXResolver{Server: dns.Addr(), Timeout: 300 * time.Millisecond}
	if got, err := mxServers(t, r, "mx:backend.test"); err != nil || !slices.Equal(got, []string{"192.0.2.1:25"}) {
		t.Errorf("over TCP: %v, %v", got, err)
	}
	tcp := false
	for _, q := range dns.Queries() {
		tcp = tcp || q.TCP
	}
	if !tcp {
		t.Error("no query over TCP after a truncated answer")
	}
	start := time.Now()
	if _, err := mxServers(t, r, "mx:silent.test"); err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("silent server: %v after %v; want an error within the timeout", err, time.Since(start))
	}
}

// A lost UDP answer is made up for by sending the query again within the
// timeout, not by failing the route.
func TestMXResolverRetransmits(t *testing.T) {
	dns := dnstest.Start(t)
	dns.SetMX("backend.test", 300, dnstest.MX{Pref: 10, Host: "mx1.backend.test"})
	dns.SetAddrs("mx1.backend.test", 300, netip.MustParseAddr("192.0.2.1"))
	dns.DropUDP(2)
	r := &MXResolver{Server: dns.Addr(), Timeout: 900 * time.Millisecond}
	if got, err := mxServers(t, r, "mx:backend.test"); err != nil || !slices.Equal(got, []string{"192.0.2.1:25"}) {
		t.Fatalf("two answers lost: %v, %v", got, err)
	}
	mx := 0
	for _, q := range dns.Queries() {
		if q.Type == dnsmessage.TypeMX {
			mx++
		}
	}
	if mx != 3 {
		t.Errorf("%d MX queries, want 3 (two lost, one answered): %v", mx, dns.Queries())
	}
}

func TestIsMX(t *testing.T) {
	for s, want := range map[string]bool{"mx:backend.test": true, "mx:2525": false, "mx.internal:25": false, "10.0.0.5": false} {
		if got := IsMX(s); got != want {
			t.Errorf("IsMX(%q) = %v, want %v", s, got, want)
		}
	}
	if _, _, err := ParseMX("mx:backend.test:0"); err == nil || !strings.Contains(err.Error(), "invalid port") {
		t.Errorf("ParseMX with port 0: %v", err)
	}
}
