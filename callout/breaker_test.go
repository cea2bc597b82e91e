package callout

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/smtptest"
)

// A server that accepts connections and never greets: after 3 timeouts it
// is skipped at no cost; after the cool-down one trial probe goes through,
// and a server that answers again closes the breaker.
func TestBreaker(t *testing.T) {
	checkGoroutines(t)
	hung := smtptest.NewServer(t, smtptest.Behavior{Silent: "GREETING"})
	c := newClient()
	c.CommandTimeout = 100 * time.Millisecond
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	var changes []string
	b := &Breaker{Next: c, now: func() time.Time { return time.Unix(0, clock.Load()) },
		OnChange: func(server string, up bool) {
			if up {
				changes = append(changes, "up")
			} else {
				changes = append(changes, "down")
			}
		}}
	ask := func() error {
		_, err := b.Probe(context.Background(), nil, hung.Addr(), mustParse(t, "a@example.test"))
		return err
	}
	for i := range 3 {
		if err := ask(); err == nil || errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("probe %d: %v, want a timeout", i, err)
		}
	}
	start := time.Now()
	for range 100 {
		err := ask()
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrBreakerOpen) || e.Reason() != "breaker_open" {
			t.Fatalf("breaker open: %v", err)
		}
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("100 probes to an open breaker took %v", d)
	}
	if n := hung.Sessions(); n != 3 {
		t.Errorf("%d sessions to the hung server, want 3", n)
	}
	if b.Up(hung.Addr()) {
		t.Error("Up after 3 failures")
	}
	// Cool-down over: one trial, which fails; the next cool-down is 2 s.
	clock.Add(int64(1100 * time.Millisecond))
	if err := ask(); err == nil || errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("trial: %v", err)
	}
	clock.Add(int64(1100 * time.Millisecond))
	if err := ask(); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("1.1 s into a 2 s cool-down: %v", err)
	}
	if n := hung.Sessions(); n != 4 {
		t.Errorf("%d sessions, want 4 (one trial)", n)
	}
	// The server is fixed: the next trial closes the breaker.
	b.Next = &Client{Settings: c.Settings, Dialer: redirect{to: smtptest.NewServer(t, smtptest.Behavior{}).Addr()}}
	clock.Add(int64(time.Second))
	if err := ask(); err != nil {
		t.Fatalf("trial against a working server: %v", err)
	}
	if !b.Up(hung.Addr()) {
		t.Error("breaker still open after a successful trial")
	}
	if got := len(changes); got != 2 || changes[0] != "down" || changes[1] != "up" {
		t.Errorf("OnChange calls %v, want [down up]", changes)
	}
	// Replies are never failures: a server refusing everything keeps its
	// breaker closed.
	refusing := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users()})
	for range 5 {
		if _, err := b.Probe(context.Background(), nil, refusing.Addr(), mustParse(t, "a@example.test")); err != nil {
			t.Fatal(err)
		}
	}
	if !b.Up(refusing.Addr()) {
		t.Error("replies opened the breaker")
	}
}

// redirect dials another address than the one asked: the same server name
// now reaches a working server.
type redirect struct{ to string }

func (r redirect) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, r.to)
}

// A trial that the caller's budget cuts short says nothing: the breaker
// stays open and the next request may try.
func TestBreakerAbortedTrial(t *testing.T) {
	hung := smtptest.NewServer(t, smtptest.Behavior{Silent: "GREETING"})
	c := newClient()
	c.CommandTimeout = 50 * time.Millisecond
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	b := &Breaker{Next: c, now: func() time.Time { return time.Unix(0, clock.Load()) }}
	for range 3 {
		_, _ = b.Probe(context.Background(), nil, hung.Addr(), mustParse(t, "a@example.test"))
	}
	if b.Up(hung.Addr()) {
		t.Fatal("not open after 3 timeouts")
	}
	clock.Add(int64(2 * time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Probe(ctx, nil, hung.Addr(), mustParse(t, "a@example.test")); errors.Is(err, ErrBreakerOpen) {
		t.Fatal("trial refused")
	}
	if b.Up(hung.Addr()) {
		t.Error("a cancelled trial closed the breaker")
	}
	if _, err := b.Probe(context.Background(), nil, hung.Addr(), mustParse(t, "a@example.test")); errors.Is(err, ErrBreakerOpen) {
		t.Error("after a cancelled trial the next request may not try")
	}
}

// Probes that run out of budget waiting for this node's own connection
// limit (max_connections_per_server) never asked the server: the breaker
// must not count them, or a burst to a healthy, slowish backend opens it.
func TestBreakerIgnoresBusyWaits(t *testing.T) {
	srv := smtptest.NewServer(t, smtptest.Behavior{Delay: 1500 * time.Millisecond})
	p := newPool(t, PoolSettings{MaxConns: 1})
	b := &Breaker{Next: p}
	rcpt := mustParse(t, "a@example.test")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // holds the one connection
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Probe(ctx, nil, srv.Addr(), rcpt)
	}()
	time.Sleep(100 * time.Millisecond)
	var busy atomic.Int32
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
			defer cancel()
			if _, err := b.Probe(ctx, nil, srv.Addr(), rcpt); errors.Is(err, ErrBusy) {
				busy.Add(1)
			}
		}()
	}
	wg.Wait()
	if busy.Load() != 5 {
		t.Errorf("%d of 5 waits ended with ErrBusy", busy.Load())
	}
	if !b.Up(srv.Addr()) {
		t.Error("the breaker opened on waits for this node's own connection limit")
	}
}

// A source_address that is no longer this host's (a floating address of
// an HA pair moved to the other node) fails the callout before any packet
// leaves, with ErrSourceAddress; the server was not asked, and its breaker
// stays closed.
func TestSourceAddressGone(t *testing.T) {
	srv := smtptest.NewServer(t, smtptest.Behavior{})
	c := newClient()
	c.Settings.Source4 = netip.MustParseAddr("192.0.2.77") // TEST-NET-1: not this host's
	b := &Breaker{Next: c}
	for range 5 {
		_, err := b.Probe(context.Background(), nil, srv.Addr(), mustParse(t, "a@example.test"))
		if !errors.Is(err, ErrSourceAddress) {
			t.Fatalf("probe: %v, want ErrSourceAddress", err)
		}
	}
	if !b.Up(srv.Addr()) {
		t.Error("the breaker opened on a source address this host lacks")
	}
	if n := srv.Sessions(); n != 0 {
		t.Errorf("%d sessions reached the server", n)
	}
}
