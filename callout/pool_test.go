package callout

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/smtptest"
)

func newPool(t *testing.T, ps PoolSettings) *Pool {
	t.Helper()
	p := NewPool(newClient(), ps)
	t.Cleanup(p.Close)
	return p
}

func probe(t *testing.T, p Prober, server, rcpt string) (Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.Probe(ctx, nil, server, mustParse(t, rcpt))
}

// One session, one transaction: MAIL once, one RCPT per probe, no RSET.
func TestPoolOneTransaction(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	p := newPool(t, PoolSettings{})
	for i := range 20 {
		rcpt, want := "alice@example.test", Valid
		if i%4 == 3 {
			rcpt, want = fmt.Sprintf("nobody%d@example.test", i), Unknown
		}
		res, err := probe(t, p, srv.Addr(), rcpt)
		if err != nil || res.Verdict != want {
			t.Fatalf("probe %d (%s): %v %v, want %v", i, rcpt, res.Verdict, err, want)
		}
	}
	if n := srv.Sessions(); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
	if m, r, rs, q := srv.Count("MAIL"), srv.Count("RCPT"), srv.Count("RSET"), srv.Count("QUIT"); m != 1 || r != 20 || rs != 0 || q != 0 {
		t.Errorf("MAIL %d RCPT %d RSET %d QUIT %d; want 1, 20, 0, 0", m, r, rs, q)
	}
	p.Close()
	waitFor(t, func() bool { return srv.Count("QUIT") == 1 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A backend that rejects everyone: a session never gets more rejected
// RCPTs than MaxErrors, so Postfix's soft error limit (10) never tarpits it.
func TestPoolRecyclesBeforeErrorLimit(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users()})
	p := newPool(t, PoolSettings{})
	for i := range 30 {
		if res, err := probe(t, p, srv.Addr(), fmt.Sprintf("u%d@example.test", i)); err != nil || res.Verdict != Unknown {
			t.Fatalf("probe %d: %v %v", i, res.Verdict, err)
		}
	}
	if n := srv.Sessions(); n != 4 {
		t.Errorf("%d sessions for 30 rejected RCPTs, want 4 (8 per session)", n)
	}
	perSession := 0
	for _, l := range srv.Lines() {
		switch {
		case strings.HasPrefix(l, "EHLO"):
			perSession = 0
		case strings.HasPrefix(l, "RCPT"):
			if perSession++; perSession > 8 {
				t.Fatal("more than 8 rejected RCPTs in one session")
			}
		}
	}
}

// A reply that says the transaction is full is never a verdict: the probe
// is asked again in a new session.
func TestPoolTooManyRecipients(t *testing.T) {
	checkGoroutines(t)
	var calls atomic.Int32
	srv := smtptest.NewServer(t, smtptest.Behavior{Rcpt: func(string) string {
		if calls.Add(1) == 3 {
			return "452 4.5.3 Too many recipients"
		}
		return smtptest.DefaultRcpt
	}})
	p := newPool(t, PoolSettings{})
	for i := range 4 {
		if res, err := probe(t, p, srv.Addr(), "alice@example.test"); err != nil || res.Verdict != Valid {
			t.Fatalf("probe %d: %v %v, want valid", i, res.Verdict, err)
		}
	}
	if n := srv.Sessions(); n != 2 {
		t.Errorf("%d sessions, want 2", n)
	}
	// A 421 on a pooled session (the server closing it) likewise.
	calls.Store(0)
	srv421 := smtptest.NewServer(t, smtptest.Behavior{Rcpt: func(string) string {
		if calls.Add(1) == 2 {
			return "421 4.4.2 smtptest Error: timeout exceeded"
		}
		return smtptest.DefaultRcpt
	}})
	for i := range 3 {
		if res, err := probe(t, p, srv421.Addr(), "alice@example.test"); err != nil || res.Verdict != Valid {
			t.Fatalf("421: probe %d: %v %v, want valid", i, res.Verdict, err)
		}
	}
	if n := srv421.Sessions(); n != 2 {
		t.Errorf("421: %d sessions, want 2", n)
	}
}

// scriptServer is a raw SMTP server whose first connection closes right
// after answering its first RCPT, as a server ending an idle session does.
func scriptServer(t *testing.T, pipelining bool, idleNotice string) (addr string, conns *atomic.Int32, lines func() []string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = new(atomic.Int32)
	var mu sync.Mutex
	var seen []string
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n := conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				fmt.Fprint(c, "220 script ESMTP\r\n")
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\r\n")
					mu.Lock()
					seen = append(seen, fmt.Sprintf("%d %s", n, line))
					mu.Unlock()
					verb := strings.ToUpper(strings.Fields(line + " x")[0])
					switch verb {
					case "EHLO":
						if pipelining {
							fmt.Fprint(c, "250-script\r\n250 PIPELINING\r\n")
						} else {
							fmt.Fprint(c, "250 script\r\n")
						}
					case "MAIL":
						fmt.Fprint(c, "250 2.1.0 Ok\r\n")
					case "RCPT":
						fmt.Fprint(c, "250 2.1.5 Ok\r\n")
						if n == 1 {
							if idleNotice != "" {
								time.Sleep(20 * time.Millisecond)
								fmt.Fprint(c, idleNotice+"\r\n")
							}
							return // closed while idle
						}
					case "QUIT":
						fmt.Fprint(c, "221 Bye\r\n")
						return
					default:
						fmt.Fprint(c, "502 what\r\n")
					}
				}
			}()
		}
	}()
	return l.Addr().String(), conns, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), seen...) }
}

// A pooled session the server closed while idle never yields a verdict:
// the probe is made again on a fresh session, with or without PIPELINING.
func TestPoolSessionClosedWhileIdle(t *testing.T) {
	for _, c := range []struct {
		pipelining bool
		notice     string
	}{{true, ""}, {false, ""}, {true, "421 4.4.2 script Error: timeout exceeded"}, {false, "451 4.7.0 Timeout waiting for client input"}} {
		t.Run(fmt.Sprintf("pipelining=%v,notice=%q", c.pipelining, c.notice), func(t *testing.T) {
			checkGoroutines(t)
			addr, conns, _ := scriptServer(t, c.pipelining, c.notice)
			p := newPool(t, PoolSettings{})
			for i := range 3 {
				time.Sleep(50 * time.Millisecond) // the notice arrives while idle
				if res, err := probe(t, p, addr, "alice@example.test"); err != nil || res.Verdict != Valid {
					t.Fatalf("probe %d: %v %v", i, res.Verdict, err)
				}
			}
			if n := conns.Load(); n != 2 {
				t.Errorf("%d connections, want 2 (the closed one, then one fresh)", n)
			}
		})
	}
}

// At most MaxConns sessions to one server; probes beyond wait for one.
func TestPoolMaxConns(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{Delay: 20 * time.Millisecond})
	p := newPool(t, PoolSettings{MaxConns: 3})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, err := probe(t, p, srv.Addr(), fmt.Sprintf("u%d@example.test", i)); err != nil || res.Verdict != Valid {
				t.Errorf("probe %d: %v %v", i, res.Verdict, err)
			}
		}()
	}
	wg.Wait()
	if n := srv.Sessions(); n > 3 {
		t.Errorf("%d sessions, want at most 3", n)
	}
	if open, idle := p.Stats(); open != idle || open > 3 {
		t.Errorf("after the probes: %d open, %d idle", open, idle)
	}
	// A waiter gives up with its context.
	busy := smtptest.NewServer(t, smtptest.Behavior{Delay: 300 * time.Millisecond})
	p1 := newPool(t, PoolSettings{MaxConns: 1})
	go func() { _, _ = probe(t, p1, busy.Addr(), "a@example.test") }()
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := p1.Probe(ctx, nil, busy.Addr(), mustParse(t, "b@example.test")); err == nil {
		t.Error("a probe waiting for a session did not end with its context")
	}
}

// Idle sessions are closed with QUIT after IdleTimeout.
func TestPoolIdleTimeout(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{})
	p := newPool(t, PoolSettings{IdleTimeout: 200 * time.Millisecond})
	if _, err := probe(t, p, srv.Addr(), "a@example.test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return srv.Count("QUIT") == 1 })
	if open, _ := p.Stats(); open != 0 {
		t.Errorf("%d sessions open after the idle timeout", open)
	}
}

// A server that drops the connection after MAIL (with and without
// PIPELINING): an error, never a verdict, and the session is not kept.
func TestPoolServerDropsAfterMail(t *testing.T) {
	checkGoroutines(t)
	for _, ehlo := range []string{smtptest.DefaultEHLO, "250 smtptest"} {
		srv := smtptest.NewServer(t, smtptest.Behavior{EHLO: ehlo, Drop: "MAIL"})
		p := newPool(t, PoolSettings{})
		res, err := probe(t, p, srv.Addr(), "a@example.test")
		if err == nil {
			t.Fatalf("EHLO %q: verdict %v from a server that dropped the connection", ehlo, res.Verdict)
		}
		if open, idle := p.Stats(); open != 0 || idle != 0 {
			t.Errorf("EHLO %q: %d open, %d idle after a dropped session", ehlo, open, idle)
		}
		if n := srv.Sessions(); n != 1 {
			t.Errorf("EHLO %q: %d sessions, want 1 (a fresh session is not retried)", ehlo, n)
		}
	}
}

// A probe that panics gives its connection slot back: after more panics
// than max_connections_per_server, a probe still gets a session.
func TestPoolPanicReleasesSlot(t *testing.T) {
	srv := smtptest.NewServer(t, smtptest.Behavior{})
	p := newPool(t, PoolSettings{MaxConns: 1})
	p.Client.Trace = func(TraceEvent) { panic("trace") }
	for range 3 {
		func() {
			defer func() { _ = recover() }()
			probe(t, p, srv.Addr(), "a@example.test")
		}()
	}
	p.Client.Trace = nil
	if res, err := probe(t, p, srv.Addr(), "b@example.test"); err != nil || res.Verdict != Valid {
		t.Errorf("after three panics: %v, %v; want valid", res.Verdict, err)
	}
}
