package daemon

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

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
