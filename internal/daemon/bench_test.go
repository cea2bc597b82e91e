package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/smtptest"
)

// benchDaemon serves the handler on loopback like startDaemon, without
// per-line test logging (which would dominate the timings).
func benchDaemon(b *testing.B, backend string) *policyConn {
	b.Helper()
	cfg, err := config.Parse("bench.toml", []byte(fmt.Sprintf(`listen = ["127.0.0.1:0"]
metrics_listen = ""
admin_socket = ""
[callout]
helo_name = "gw.test"
[[route]]
domains = ["example.test"]
servers = ["%s"]
`, backend)))
	if err != nil {
		b.Fatal(err)
	}
	d, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	ls, err := d.Listen()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, ls, nil) }()
	b.Cleanup(func() { cancel(); <-done })
	return dialPolicy(b, ls.Policy[0].Addr().String())
}

// BenchmarkPolicyNoRoute is the floor: one request and answer over loopback
// TCP for a domain no route covers (no cache, no callout).
func BenchmarkPolicyNoRoute(b *testing.B) {
	backend := smtptest.NewServer(b, smtptest.Behavior{})
	p := benchDaemon(b, backend.Addr())
	b.ReportAllocs()
	for b.Loop() {
		if got := p.ask("RCPT", "bob@example.org"); got != "action=DUNNO\n\n" {
			b.Fatal(got)
		}
	}
}

// BenchmarkPolicyCached answers from the memory cache.
func BenchmarkPolicyCached(b *testing.B) {
	backend := smtptest.NewServer(b, smtptest.Behavior{Rcpt: smtptest.Users()})
	p := benchDaemon(b, backend.Addr())
	p.ask("RCPT", "nobody@example.test")
	b.ReportAllocs()
	for b.Loop() {
		if got := p.ask("RCPT", "nobody@example.test"); !strings.HasSuffix(got, "(cached verdict)\n\n") {
			b.Fatal(got)
		}
	}
}

// BenchmarkPolicyCallout makes a fresh callout for every request (a new
// address each time) to a Go SMTP server on loopback.
func BenchmarkPolicyCallout(b *testing.B) {
	backend := smtptest.NewServer(b, smtptest.Behavior{})
	p := benchDaemon(b, backend.Addr())
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if got := p.ask("RCPT", fmt.Sprintf("user%d@example.test", i)); got != "action=DUNNO\n\n" {
			b.Fatal(got)
		}
	}
}
