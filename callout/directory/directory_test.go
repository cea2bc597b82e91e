package directory

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/internal/ldaptest"
)

// directoryEntries: people with mail, one with Active Directory's
// proxyAddresses (an alias), and a catch-all-looking entry that an
// injected filter would find.
const directoryEntries = `dn: ou=people,dc=example,dc=test
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Example
mail: Alice@Example.test

dn: uid=dave,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: calloutdProxy
uid: dave
cn: Dave
sn: Example
mail: dave@example.test
proxyAddresses: SMTP:dave@example.test
proxyAddresses: smtp:d.example@example.test
`

func prober(t *testing.T, st *Settings) *Prober {
	t.Helper()
	if st.BindDN == "" {
		st.BindDN, st.BindPassword = ldaptest.BindDN, ldaptest.BindPassword
	}
	if st.BaseDN == "" {
		st.BaseDN = ldaptest.Suffix
	}
	if st.Filter == "" {
		st.Filter = "(mail=%s)"
	}
	pool := NewPool()
	t.Cleanup(pool.Close)
	return &Prober{Settings: st, Pool: pool}
}

func probe(p *Prober, server, rcpt string) (callout.Result, error) {
	a, err := callout.ParseAddress(rcpt)
	if err != nil {
		return callout.Result{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.Probe(ctx, nil, server, a)
}

// Found: valid; a successful search that finds nothing: unknown. Matching
// is the directory's (case-insensitive for mail); the AD filter finds
// aliases in proxyAddresses.
func TestVerdicts(t *testing.T) {
	srv := ldaptest.Start(t, ldaptest.Options{Entries: directoryEntries})
	plain := prober(t, &Settings{})
	ad := prober(t, &Settings{Filter: "(|(mail=%s)(proxyAddresses=smtp:%s))"})
	for _, c := range []struct {
		p    *Prober
		rcpt string
		want callout.Verdict
	}{
		{plain, "alice@example.test", callout.Valid},
		{plain, "ALICE@example.test", callout.Valid},
		{plain, "nobody@example.test", callout.Unknown},
		{plain, "d.example@example.test", callout.Unknown},
		{ad, "d.example@example.test", callout.Valid},
		{ad, "dave@example.test", callout.Valid},
		{ad, "nobody@example.test", callout.Unknown},
	} {
		res, err := probe(c.p, srv.URL(), c.rcpt)
		if err != nil || res.Verdict != c.want {
			t.Errorf("%s (filter %s): %v, %v; want %v", c.rcpt, c.p.Settings.Filter, res.Verdict, err, c.want)
		}
	}
	// A UTF-8 local part is not searched: the directory could not say.
	if res, err := probe(plain, srv.URL(), "jöhn@example.test"); !errors.Is(err, callout.ErrNoSMTPUTF8) {
		t.Errorf("UTF-8 local part: %v, %v; want ErrNoSMTPUTF8", res.Verdict, err)
	}
	// One connection, bound once, served every search of a prober.
	if n := len(plain.Pool.idle); n != 1 {
		t.Errorf("%d idle connection keys, want 1", n)
	}
}

// Hostile addresses are escaped (RFC 4515): they match nothing, and never
// every entry.
func TestFilterInjection(t *testing.T) {
	srv := ldaptest.Start(t, ldaptest.Options{Entries: directoryEntries})
	p := prober(t, &Settings{Filter: "(|(mail=%s)(proxyAddresses=smtp:%s))"})
	for _, rcpt := range []string{
		"*@example.test",
		"a*@example.test",
		"*)(objectClass=*@example.test",
		"x)(|(mail=*)@example.test",
		"alice\\2a@example.test",
		"al*ce@example.test",
		"*)(uid=*))(|(uid=*@example.test",
		"x\\@example.test",
		"(mail=alice@example.test)@example.test",
	} {
		res, err := probe(p, srv.URL(), rcpt)
		if err != nil {
			if errors.Is(err, callout.ErrInvalidAddress) {
				continue // refused before any search
			}
			t.Errorf("%q: %v, want a clean search", rcpt, err)
			continue
		}
		if res.Verdict != callout.Unknown {
			t.Errorf("%q: %v, want unknown (the address must match literally)", rcpt, res.Verdict)
		}
	}
}

// A wrong password, a base that does not exist, an unreachable server:
// the server could not be asked (an error), never unknown.
func TestErrorsAreNotUnknown(t *testing.T) {
	srv := ldaptest.Start(t, ldaptest.Options{Entries: directoryEntries})
	for name, st := range map[string]*Settings{
		"wrong password": {BindDN: ldaptest.BindDN, BindPassword: "wrong"},
		"no such base":   {BaseDN: "ou=nowhere,dc=example,dc=test"},
	} {
		p := prober(t, st)
		res, err := probe(p, srv.URL(), "alice@example.test")
		var ce *callout.Error
		if !errors.As(err, &ce) {
			t.Errorf("%s: %v, %v; want a *callout.Error", name, res.Verdict, err)
			continue
		}
		t.Logf("%s: %v (reason %s)", name, err, ce.Reason())
	}
	p := prober(t, &Settings{Timeout: time.Second})
	res, err := probe(p, "ldap://127.0.0.1:1", "alice@example.test")
	var ce *callout.Error
	if !errors.As(err, &ce) || ce.Reason() != "connect" {
		t.Errorf("closed port: %v, %v; want a connect error", res.Verdict, err)
	}
}

// ldaps with the site's CA, and StartTLS on ldap://; a certificate the CA
// did not sign is refused.
func TestTLS(t *testing.T) {
	srv := ldaptest.Start(t, ldaptest.Options{Entries: directoryEntries, TLS: true})
	pem, err := os.ReadFile(srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	trusted := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	for name, c := range map[string]struct {
		server string
		st     *Settings
	}{
		"ldaps":    {srv.LDAPSURL(), &Settings{TLS: trusted, CAFile: srv.CAFile()}},
		"starttls": {srv.URL(), &Settings{TLS: trusted, CAFile: srv.CAFile(), StartTLS: true}},
	} {
		res, err := probe(prober(t, c.st), c.server, "alice@example.test")
		if err != nil || res.Verdict != callout.Valid {
			t.Errorf("%s: %v, %v; want valid", name, res.Verdict, err)
		}
	}
	// The system's CAs do not know the test CA.
	_, err = probe(prober(t, &Settings{}), srv.LDAPSURL(), "alice@example.test")
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("ldaps with an unknown CA: %v, want a certificate error", err)
	}
}

// slapd stopped: the pooled connection is dead, the search fails (not
// unknown); slapd back: the next search dials and binds again.
func TestServerStoppedAndBack(t *testing.T) {
	srv := ldaptest.Start(t, ldaptest.Options{Entries: directoryEntries})
	p := prober(t, &Settings{Timeout: time.Second})
	if res, err := probe(p, srv.URL(), "alice@example.test"); err != nil || res.Verdict != callout.Valid {
		t.Fatalf("before: %v, %v", res.Verdict, err)
	}
	srv.Stop()
	if res, err := probe(p, srv.URL(), "alice@example.test"); err == nil {
		t.Errorf("slapd stopped: %v, nil; want an error", res.Verdict)
	}
	srv.Start(t)
	if res, err := probe(p, srv.URL(), "alice@example.test"); err != nil || res.Verdict != callout.Valid {
		t.Errorf("after restart: %v, %v; want valid", res.Verdict, err)
	}
}

// A burst of searches keeps at most MaxSearches connections open to one
// server; the others wait for a slot within their deadline and give up as
// busy (ErrBusy: the budget ran out, not the server). The server accepts
// connections and never answers; it counts those open at once.
func TestSearchesPerServerBounded(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var open, most atomic.Int32 // most: open half-way through the deadline
	var wgConns sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			open.Add(1)
			wgConns.Add(1)
			go func() {
				defer wgConns.Done()
				_, _ = io.Copy(io.Discard, c) // until the client closes it
				open.Add(-1)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); wgConns.Wait() })
	p := prober(t, &Settings{Timeout: 300 * time.Millisecond})
	p.Settings.BindDN = "" // anonymous: the search is the first request
	a, _ := callout.ParseAddress("alice@example.test")
	var wg sync.WaitGroup
	var busy, failed atomic.Int32
	begin := make(chan struct{}) // every search starts at once: the same deadline
	for range 3 * MaxSearches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-begin
			_, err := p.Probe(context.Background(), nil, "ldap://"+l.Addr().String(), a)
			switch {
			case errors.Is(err, callout.ErrBusy):
				busy.Add(1)
			case err != nil:
				failed.Add(1)
			}
		}()
	}
	close(begin)
	time.AfterFunc(150*time.Millisecond, func() { most.Store(open.Load()) }) // before the deadline
	wg.Wait()
	if n := most.Load(); n != MaxSearches {
		t.Errorf("%d connections open while %d searches ran, want %d", n, 3*MaxSearches, MaxSearches)
	}
	// Waiters that got a slot freed a moment before their own deadline
	// fail as the server's silence does; the others are busy.
	if busy.Load() == 0 || busy.Load()+failed.Load() != 3*MaxSearches {
		t.Errorf("%d searches busy, %d failed otherwise, of %d: want all failed, some busy", busy.Load(), failed.Load(), 3*MaxSearches)
	}
}

// A reload that changes a route's bind password closes the connections
// bound with the old one; the others are kept.
func TestRetainByCredentials(t *testing.T) {
	srv := ldaptest.Start(t, ldaptest.Options{Entries: directoryEntries})
	p := prober(t, &Settings{Timeout: time.Second})
	if res, err := probe(p, srv.URL(), "alice@example.test"); err != nil || res.Verdict != callout.Valid {
		t.Fatalf("%v, %v", res.Verdict, err)
	}
	idle := func() int {
		p.Pool.mu.Lock()
		defer p.Pool.mu.Unlock()
		n := 0
		for _, c := range p.Pool.idle {
			n += len(c)
		}
		return n
	}
	if idle() != 1 {
		t.Fatalf("%d idle connections, want 1", idle())
	}
	p.Pool.Retain(p.Keys([]string{srv.URL()}))
	if idle() != 1 {
		t.Errorf("same settings: %d idle connections kept, want 1", idle())
	}
	changed := *p.Settings
	changed.BindPassword = "rotated"
	p.Pool.Retain((&Prober{Settings: &changed}).Keys([]string{srv.URL()}))
	if idle() != 0 {
		t.Errorf("new password: %d idle connections kept, want 0", idle())
	}
}
