package daemon

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/smtptest"
)

// 40 requests at once for one new address: one RCPT at the backend, the
// same answer for all.
func TestConcurrentRequestsCoalesced(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test"), Delay: 20 * time.Millisecond})
	td := startDaemon(t, config1(quoted(backend.Addr())))
	var wg sync.WaitGroup
	answers := make([]string, 40)
	conns := make([]*policyConn, 40)
	for i := range conns {
		conns[i] = dialPolicy(t, td.policy)
	}
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = conns[i].ask("RCPT", "nobody@example.test")
		}()
	}
	wg.Wait()
	for i, a := range answers {
		if !strings.HasPrefix(a, "action=550 5.1.1 User unknown in local recipient table") {
			t.Errorf("answer %d: %q", i, a)
		}
	}
	if n := backend.Count("RCPT"); n != 1 {
		t.Errorf("%d RCPTs for 40 identical requests, want 1", n)
	}
	body := httpGet(t, "http://"+td.metrics+"/metrics", 200)
	if !strings.Contains(body, `calloutd_verdicts_total{source="callout",verdict="unknown"} 1`+"\n") {
		t.Errorf("the one callout is not counted once:\n%s", grepLines(body, "calloutd_verdicts_total"))
	}
}

func grepLines(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A hung first server costs its command_timeout three times, then nothing:
// its breaker opens and the second server answers at once.
func TestHungServerSkippedByBreaker(t *testing.T) {
	hung := smtptest.NewServer(t, smtptest.Behavior{Silent: "GREETING"})
	good := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	cfg := strings.Replace(config1(quoted(hung.Addr(), good.Addr())), `command_timeout = "2s"`, `command_timeout = "100ms"`, 1)
	td := startDaemon(t, cfg)
	p := dialPolicy(t, td.policy)
	for i := range 10 {
		if got := p.ask("RCPT", fmt.Sprintf("u%d@example.test", i)); !strings.HasPrefix(got, "action=550 ") {
			t.Fatalf("request %d: %q", i, got)
		}
	}
	if n := hung.Sessions(); n != 3 {
		t.Errorf("hung server got %d sessions, want 3 (then its breaker opened)", n)
	}
	body := httpGet(t, "http://"+td.metrics+"/metrics", 200)
	for _, want := range []string{
		fmt.Sprintf(`calloutd_backend_up{server=%q} 0`, hung.Addr()),
		fmt.Sprintf(`calloutd_backend_up{server=%q} 1`, good.Addr()),
		fmt.Sprintf(`calloutd_backend_failures_total{reason="breaker_open",server=%q} 7`, hung.Addr()),
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(body, "calloutd_backend"))
		}
	}
}

// A reload keeps the sessions of servers still asked the same way, and
// closes the others'.
func TestReloadKeepsPooledSessions(t *testing.T) {
	t.Cleanup(checkGoroutines(t)) // runs last: after the servers close
	a := smtptest.NewServer(t, smtptest.Behavior{})
	b := smtptest.NewServer(t, smtptest.Behavior{})
	two := func(second string) string {
		return config1(quoted(a.Addr())) + fmt.Sprintf("[[route]]\nname = \"other\"\ndomains = [\"other.test\"]\nservers = [%q]\n", second)
	}
	td := startDaemon(t, two(b.Addr()))
	p := dialPolicy(t, td.policy)
	p.ask("RCPT", "x@example.test")
	p.ask("RCPT", "x@other.test")
	c := smtptest.NewServer(t, smtptest.Behavior{})
	if err := os.WriteFile(td.path, []byte(strings.ReplaceAll(two(c.Addr()), "{{ADMIN}}", td.admin)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := td.d.Reload(); err != nil {
		t.Fatal(err)
	}
	if !b.WaitIdle(5 * time.Second) {
		t.Error("the session of a server no route asks any more is still open")
	}
	p.ask("RCPT", "y@example.test")
	p.ask("RCPT", "y@other.test")
	if n := a.Sessions(); n != 1 {
		t.Errorf("unchanged route: %d sessions, want 1 (kept over the reload)", n)
	}
	if n, q := c.Sessions(), b.Count("QUIT"); n != 1 || q != 1 {
		t.Errorf("new server %d sessions, old server %d QUITs; want 1 and 1", n, q)
	}
	td.stop(t)
	if !a.WaitIdle(5*time.Second) || !c.WaitIdle(5*time.Second) {
		t.Error("sessions left open after the daemon stopped")
	}
}

// A valid verdict older than positive_refresh is answered from the cache
// at once and verified again in the background; a failed refresh keeps
// the old entry.
func TestStaleWhileRevalidate(t *testing.T) {
	var failing atomic.Bool
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: func(addr string) string {
		if failing.Load() {
			return "451 4.3.0 Temporary lookup failure"
		}
		return smtptest.DefaultRcpt
	}})
	cfg := strings.Replace(config1(quoted(backend.Addr())), "[cache]\n", "[cache]\npositive_refresh = \"100ms\"\n", 1)
	td := startDaemon(t, cfg)
	p := dialPolicy(t, td.policy)
	ctx := context.Background()
	if got := p.ask("RCPT", "alice@example.test"); got != "action=DUNNO\n\n" {
		t.Fatal(got)
	}
	first, _, _ := td.d.store.Get(ctx, "alice@example.test")
	time.Sleep(150 * time.Millisecond)
	if got := p.ask("RCPT", "alice@example.test"); got != "action=DUNNO\n\n" {
		t.Fatal(got)
	}
	waitUntil(t, func() bool { return backend.Count("RCPT") == 2 })
	waitUntil(t, func() bool {
		e, _, _ := td.d.store.Get(ctx, "alice@example.test")
		return e.Verified.After(first.Verified)
	})
	// Many hits of a stale entry start one refresh.
	second, _, _ := td.d.store.Get(ctx, "alice@example.test")
	failing.Store(true)
	time.Sleep(150 * time.Millisecond)
	for range 20 {
		if got := p.ask("RCPT", "alice@example.test"); got != "action=DUNNO\n\n" {
			t.Fatalf("stale entry with the backend failing: %q", got)
		}
	}
	waitUntil(t, func() bool { return backend.Count("RCPT") == 3 })
	time.Sleep(50 * time.Millisecond)
	if n := backend.Count("RCPT"); n != 3 {
		t.Errorf("%d RCPTs for 20 hits of a stale entry with the backend failing, want 3 (one refresh, then none before another positive_refresh)", n)
	}
	if e, ok, _ := td.d.store.Get(ctx, "alice@example.test"); !ok || e.Verdict != "valid" || !e.Verified.Equal(second.Verified) {
		t.Errorf("after a failed refresh: %+v %v, want the old valid entry", e, ok)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A reload keeps the pooled sessions its routes still use: those of an
// "mx:" route whatever server DNS named, those of a listed server only
// while it is listed, and none asked with other settings.
func TestPoolKeysAfterReload(t *testing.T) {
	cfg, err := config.Parse("t.toml", []byte(`[callout]
helo_name = "gw.test"
[[route]]
domains = ["dns.test"]
servers = ["mx:backend.dns.test"]
[[route]]
domains = ["static.test"]
servers = ["10.0.0.5:25"]
helo_name = "other.gw.test"
`))
	if err != nil {
		t.Fatal(err)
	}
	keep := poolKeys(cfg)
	st := func(i int) (string, string, string, string) {
		s, err := smtpSettings(&cfg.Routes[i].Effective.Callout, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s.HeloName, s.MailFrom, s.Source(), s.TLS + "|" + s.TLSKey
	}
	h0, f0, s0, t0 := st(0)
	h1, f1, s1, t1 := st(1)
	for _, c := range []struct {
		server, helo, from, source, tls string
		want                            bool
	}{
		{"192.0.2.7:25", h0, f0, s0, t0, true},        // named by the MX records
		{"10.0.0.5:25", h1, f1, s1, t1, true},         // listed
		{"10.0.0.6:25", h1, f1, s1, t1, false},        // no longer listed
		{"192.0.2.7:25", "x.test", f0, s0, t0, false}, // another HELO name
	} {
		if got := keep(c.server, c.helo, c.from, c.source, c.tls); got != c.want {
			t.Errorf("keep(%s, %s) = %v, want %v", c.server, c.helo, got, c.want)
		}
	}
}
