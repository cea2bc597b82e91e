package daemon

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/metrics"
	"github.com/calloutd/calloutd/internal/smtptest"
	"github.com/calloutd/calloutd/policyd"
)

// Real backends' dialogues, replayed by loopback SMTP servers, end to end
// through the policy protocol: the action Postfix gets, and what the
// backend failures metric says.
func TestRealBackendDialogues(t *testing.T) {
	tests := []struct {
		name     string
		greeting string
		ehlo     string
		rcpt     string // reply to RCPT TO
		want     string // action
		reason   string // calloutd_backend_replies_total reason
		failure  bool   // counted in calloutd_backend_failures_total
	}{
		{name: "Exim relay not permitted", greeting: "220 mx.example.test ESMTP Exim 4.96 Wed, 02 Dec 2026 17:00:00 +0000",
			ehlo: "250-mx.example.test Hello gw.test [127.0.0.1]\r\n250-SIZE 52428800\r\n250-PIPELINING\r\n250 HELP",
			rcpt: "550 relay not permitted", want: "DUNNO", reason: "relay_denied", failure: true},
		{name: "Exim ACL deny", greeting: "220 mx.example.test ESMTP Exim 4.96",
			rcpt: "550 Administrative prohibition", want: "DUNNO", reason: "policy", failure: true},
		{name: "Exim unknown user", greeting: "220 mx.example.test ESMTP Exim 4.96",
			rcpt: "550 Unrouteable address", want: "550 5.1.1 Unrouteable address", reason: "no_such_user"},
		{name: "Microsoft 365 DBEB", greeting: "220 AM0PR01MB0001.eurprd01.prod.outlook.com Microsoft ESMTP MAIL Service ready at Wed, 2 Dec 2026 17:00:00 +0000",
			ehlo: "250-AM0PR01MB0001.eurprd01.prod.outlook.com Hello [127.0.0.1]\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250 SMTPUTF8",
			rcpt: "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [AM0PR01MB0001.eurprd01.prod.outlook.com 2026-12-02T17:00:00.000Z 08DD0000000000]",
			want: "550 5.1.1 Access denied. AS(201806281) [AM0PR01MB0001.eurprd01.prod.outlook.com 2026-12-02T17:00:00.000Z 08DD0000000000]", reason: "no_such_user"},
		{name: "Microsoft 365 banned sending IP", greeting: "220 mx.example.test Microsoft ESMTP MAIL Service ready",
			rcpt: "550 5.7.606 Access denied, banned sending IP [192.0.2.1]. To request removal from this list please visit https://sender.office.com/", want: "DUNNO", reason: "client_refused", failure: true},
		{name: "Gmail no such user", greeting: "220 mx.google.com ESMTP a1si1234567qkb.1 - gsmtp",
			rcpt: "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n" +
				"550-5.1.1 double-checking the recipient's email address for typos or\r\n" +
				"550-5.1.1 unnecessary spaces. For more information, go to\r\n" +
				"550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a1si1234567qkb.1 - gsmtp",
			want:   "550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. For more information, go to https://support.google.c",
			reason: "no_such_user"},
		{name: "mailbox full", rcpt: "552 5.2.2 <bob@example.test>: Recipient address rejected: Mailbox full",
			want: "DEFER_IF_PERMIT 4.2.2 Mailbox full", reason: "quota"},
		{name: "unrecognised 5xx fails open", rcpt: "550 Requested action not taken: mailbox unavailable",
			want: "DUNNO", reason: "unrecognised", failure: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			backend := smtptest.NewServer(t, smtptest.Behavior{Greeting: tc.greeting, EHLO: tc.ehlo,
				Rcpt: func(string) string { return tc.rcpt }})
			td := startDaemon(t, config1(quoted(backend.Addr())))
			p := dialPolicy(t, td.policy)
			if got, want := p.ask("RCPT", "bob@example.test"), "action="+tc.want+"\n\n"; got != want {
				t.Errorf("answer\n\t%q\nwant\n\t%q", got, want)
			}
			body := httpGet(t, "http://"+td.metrics+"/metrics", 200)
			replies := fmt.Sprintf(`calloutd_backend_replies_total{meaning=%q,reason=%q,server=%q} 1`,
				meaningOf(tc.reason), tc.reason, backend.Addr())
			if !strings.Contains(body, replies+"\n") {
				t.Errorf("/metrics lacks %s", replies)
			}
			failure := fmt.Sprintf(`calloutd_backend_failures_total{reason=%q,server=%q} 1`, tc.reason, backend.Addr())
			if got := strings.Contains(body, failure+"\n"); got != tc.failure {
				t.Errorf("/metrics has %s: %v, want %v", failure, got, tc.failure)
			}
		})
	}
}

func meaningOf(reason string) string {
	switch reason {
	case "no_such_user":
		return "unknown"
	case "quota":
		return "temporary"
	case "unrecognised":
		return "unrecognised"
	}
	return "refused"
}

// Two routes with their own settings: each backend sees its route's MAIL
// FROM and HELO, verdicts are stored for the route's TTLs, and one route's
// unknown_replies and ignore_replies do not apply to the other.
func TestPerRouteSettings(t *testing.T) {
	const odd = "550 5.7.1 Not a user of this system"
	reply := func(addr string) string {
		switch {
		case strings.HasPrefix(addr, "alice@"):
			return smtptest.DefaultRcpt
		case strings.HasPrefix(addr, "grey@"):
			return "450 4.2.0 Greylisted"
		}
		return odd
	}
	m365 := smtptest.NewServer(t, smtptest.Behavior{Rcpt: reply})
	legacy := smtptest.NewServer(t, smtptest.Behavior{Rcpt: reply})
	td := startDaemon(t, fmt.Sprintf(`
listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
admin_socket = "{{ADMIN}}"
[callout]
helo_name = "gw.test"
mail_from = "verify@gw.test"
request_timeout = "5s"
tempfail_action = "defer"
[cache]
positive_ttl = "1h"
negative_ttl = "1h"
tempfail_ttl = "1m"

[[route]]
name = "m365"
domains = ["m365.test"]
servers = [%q]
mail_from = ""
helo_name = "edge.gw.test"
positive_ttl = "3h"
negative_ttl = "10m"
unknown_replies = ['^550 5\.7\.1 Not a user']

[[route]]
name = "legacy"
domains = ["legacy.test"]
servers = [%q]
tempfail_action = "dunno"
tempfail_ttl = "0s"
ignore_replies = ['Greylisted']
`, m365.Addr(), legacy.Addr()))
	p := dialPolicy(t, td.policy)
	for _, s := range []struct{ rcpt, want string }{
		{"alice@m365.test", "DUNNO"},
		{"bob@m365.test", "550 5.1.1 Not a user of this system"},
		{"grey@m365.test", "DEFER_IF_PERMIT 4.2.0 Greylisted"},
		{"alice@legacy.test", "DUNNO"},
		{"bob@legacy.test", "DUNNO"},  // 5.7.1 refuses us on this route: fail open
		{"grey@legacy.test", "DUNNO"}, // ignored: as if not answered
	} {
		if got, want := p.ask("RCPT", s.rcpt), "action="+s.want+"\n\n"; got != want {
			t.Errorf("%s: answer %q, want %q", s.rcpt, got, want)
		}
	}
	td.stop(t) // pooled sessions are closed when the daemon stops
	if !m365.WaitIdle(10*time.Second) || !legacy.WaitIdle(10*time.Second) {
		t.Fatal("sessions left open")
	}
	for _, b := range []struct {
		name  string
		srv   *smtptest.Server
		lines []string
	}{
		{"m365", m365, []string{"EHLO edge.gw.test", "MAIL FROM:<>"}},
		{"legacy", legacy, []string{"EHLO gw.test", "MAIL FROM:<verify@gw.test>"}},
	} {
		got := b.srv.Lines()
		for _, want := range b.lines {
			n := 0
			for _, l := range got {
				if l == want {
					n++
				}
			}
			// One pooled session, one transaction for the three.
			if n != 1 {
				t.Errorf("%s backend saw %q %d times, want 1 (lines %q)", b.name, want, n, got)
			}
		}
	}
	// The TTLs stored are the route's: Expires - Verified.
	for _, s := range []struct {
		rcpt string
		ttl  time.Duration // 0: not stored
	}{
		{"alice@m365.test", 3 * time.Hour},
		{"bob@m365.test", 10 * time.Minute},
		{"grey@m365.test", time.Minute},
		{"alice@legacy.test", time.Hour},
		{"bob@legacy.test", 0}, // unreachable, tempfail_ttl 0s on this route
		{"grey@legacy.test", 0},
	} {
		e, ok, err := td.d.store.Get(context.Background(), s.rcpt)
		if err != nil {
			t.Fatal(err)
		}
		if s.ttl == 0 {
			if ok {
				t.Errorf("%s: stored %+v, want nothing", s.rcpt, e)
			}
			continue
		}
		if !ok {
			t.Errorf("%s: not stored, want a %v entry", s.rcpt, s.ttl)
			continue
		}
		if got := e.Expires.Sub(e.Verified); got < s.ttl-time.Second || got > s.ttl+time.Second {
			t.Errorf("%s: stored for %v, want %v", s.rcpt, got, s.ttl)
		}
	}
}

// hangingStore is a store whose every call waits until its context ends,
// as a Redis that accepts TCP and never answers does.
type hangingStore struct {
	mu   sync.Mutex
	sets int
}

func (s *hangingStore) Get(ctx context.Context, key string) (cache.Entry, bool, error) {
	<-ctx.Done()
	return cache.Entry{}, false, ctx.Err()
}

func (s *hangingStore) Set(ctx context.Context, key string, e cache.Entry, ttl time.Duration) error {
	s.mu.Lock()
	s.sets++
	s.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

func (s *hangingStore) Delete(ctx context.Context, key string) error { <-ctx.Done(); return ctx.Err() }
func (s *hangingStore) Close() error                                 { return nil }

// A store that hangs costs each verdict one short cache deadline, never
// Postfix's own timeout, and the write does not delay the answer.
func TestHangingStoreAnsweredWithinBudget(t *testing.T) {
	t.Cleanup(checkGoroutines(t))
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	cfg, err := config.Parse("t.toml", []byte(fmt.Sprintf(`
[callout]
helo_name = "gw.test"
request_timeout = "2s"
[[route]]
domains = ["example.test"]
servers = [%q]
`, backend.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	store := &hangingStore{}
	m := metrics.New("test", nil)
	h := NewHandler(store, mustRouting(t, cfg), slog.New(slog.NewTextHandler(testWriter{t}, nil)), m)
	budget := cacheTimeout(2 * time.Second) // 100ms
	for _, s := range []struct{ rcpt, want string }{
		{"alice@example.test", "DUNNO"},
		{"nobody@example.test", "550 5.1.1 User unknown in local recipient table"},
	} {
		start := time.Now()
		got := h.HandlePolicy(context.Background(), &policyd.Request{ProtocolState: "RCPT", Recipient: s.rcpt})
		el := time.Since(start)
		if string(got) != s.want {
			t.Errorf("%s: %q, want %q", s.rcpt, got, s.want)
		}
		// The lookup's deadline and a loopback callout; not the write's.
		if el < budget || el > budget+time.Second {
			t.Errorf("%s: answered in %v, want about %v", s.rcpt, el, budget)
		}
	}
	h.Wait()
	store.mu.Lock()
	sets := store.sets
	store.mu.Unlock()
	if sets != 2 {
		t.Errorf("%d writes tried, want 2", sets)
	}
	body := scrape(t, m)
	for _, want := range []string{`calloutd_cache_errors_total{op="get"} 2`, `calloutd_cache_errors_total{op="set"} 2`} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// panickingStore panics on a lookup of one key. Over a memory store it
// never blocks, so its writes are inline (and the next request sees them).
type panickingStore struct{ cache.Store }

func (panickingStore) Nonblocking() {}

func (s panickingStore) Get(ctx context.Context, key string) (cache.Entry, bool, error) {
	if strings.HasPrefix(key, "boom@") {
		panic("store exploded")
	}
	return s.Store.Get(ctx, key)
}

// A panic under one request is recovered: that request gets DUNNO, it is
// counted, and the daemon goes on answering on other connections.
func TestPanicInRequestIsRecovered(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	cfg, err := config.Parse("t.toml", []byte(fmt.Sprintf("[callout]\nhelo_name = \"gw.test\"\n[[route]]\ndomains = [\"example.test\"]\nservers = [%q]\n", backend.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), nil))
	m := metrics.New("test", nil)
	h := NewHandler(panickingStore{cache.NewMemory(100)}, mustRouting(t, cfg), log, m)
	srv := &policyd.Server{Handler: h, Logger: log, Panicked: m.Panic}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	first := dialPolicy(t, l.Addr().String())
	if got := first.ask("RCPT", "boom@example.test"); got != "action=DUNNO\n\n" {
		t.Errorf("panicking request: %q, want DUNNO", got)
	}
	// The same connection goes on, and so does another.
	if got := first.ask("RCPT", "nobody@example.test"); got != "action=550 5.1.1 User unknown in local recipient table\n\n" {
		t.Errorf("same connection after the panic: %q", got)
	}
	second := dialPolicy(t, l.Addr().String())
	if got := second.ask("RCPT", "alice@example.test"); got != "action=DUNNO\n\n" {
		t.Errorf("other connection: %q", got)
	}
	if got := second.ask("RCPT", "nobody@example.test"); !strings.HasSuffix(got, "(cached verdict)\n\n") {
		t.Errorf("cache lost after the panic: %q", got)
	}
	if body := scrape(t, m); !strings.Contains(body, "calloutd_panics_total 1\n") {
		t.Errorf("calloutd_panics_total is not 1")
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logs.String(), "store exploded") || !strings.Contains(logs.String(), "panickingStore.Get") {
		t.Errorf("log lacks the panic and its stack:\n%s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// scrape renders m's registry as /metrics would.
func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// An admin who corrects a misread reply with ignore_replies and reloads
// gets the recipient verified again, not the cached 550.
func TestRulesChangeReverifiesNegativeVerdicts(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: func(string) string { return "550 5.1.1 Mailbox frozen by archiving" }})
	load := func(extra string) *Routing {
		cfg, err := config.Parse("t.toml", []byte(fmt.Sprintf("[callout]\nhelo_name = \"gw.test\"\n[[route]]\nname = \"r\"\ndomains = [\"example.test\"]\nservers = [%q]\n%s", backend.Addr(), extra)))
		if err != nil {
			t.Fatal(err)
		}
		return mustRouting(t, cfg)
	}
	h := NewHandler(cache.NewMemory(100), load(""), slog.New(slog.NewTextHandler(testWriter{t}, nil)), nil)
	ask := func() string {
		return string(h.HandlePolicy(context.Background(), &policyd.Request{ProtocolState: "RCPT", Recipient: "bob@example.test"}))
	}
	if got := ask(); got != "550 5.1.1 Mailbox frozen by archiving" {
		t.Fatalf("first answer %q", got)
	}
	if got := ask(); !strings.HasSuffix(got, "(cached verdict)") {
		t.Fatalf("second answer %q, want the cached 550", got)
	}
	h.SetRouting(load(`ignore_replies = ['frozen by archiving']`))
	if got := ask(); got != "DUNNO" {
		t.Errorf("after the rules changed: %q, want DUNNO from a fresh callout", got)
	}
	if n := backend.Count("RCPT"); n != 2 {
		t.Errorf("backend saw %d RCPTs, want 2", n)
	}
}

// Every callout's verdict is logged, and every cached answer that is not
// DUNNO; cached passes only with log.cached_dunno.
func TestVerdictLogLines(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: func(rcpt string) string {
		if strings.Contains(rcpt, "bob@") {
			return "550 5.1.1 User unknown"
		}
		return "250 2.1.5 Ok"
	}})
	for _, tc := range []struct {
		extra string
		want  []string // recipient cached=... per line, in order
	}{
		{"", []string{"alice@example.test cached=false", "bob@example.test cached=false", "bob@example.test cached=true"}},
		{"[log]\ncached_dunno = true\n", []string{"alice@example.test cached=false", "bob@example.test cached=false",
			"alice@example.test cached=true", "bob@example.test cached=true"}},
	} {
		cfg, err := config.Parse("t.toml", []byte(fmt.Sprintf("%s[callout]\nhelo_name = \"gw.test\"\n[[route]]\ndomains = [\"example.test\"]\nservers = [%q]\n", tc.extra, backend.Addr())))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		log, _ := NewLogger(cfg.Log, &buf)
		h := NewHandler(cache.NewMemory(100), mustRouting(t, cfg), log, nil)
		for _, rcpt := range []string{"alice@example.test", "bob@example.test", "alice@example.test", "bob@example.test"} {
			h.HandlePolicy(context.Background(), &policyd.Request{ProtocolState: "RCPT", Recipient: rcpt})
		}
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if !strings.Contains(line, " INF verdict ") {
				continue
			}
			rcpt := line[strings.Index(line, "recipient=")+len("recipient="):]
			rcpt = rcpt[:strings.IndexByte(rcpt, ' ')]
			c := line[strings.Index(line, "cached="):]
			got = append(got, rcpt+" "+c[:strings.IndexByte(c, ' ')])
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: verdict lines %q, want %q\n%s", tc.extra, got, tc.want, buf.String())
		}
	}
}

func mustRouting(t testing.TB, cfg *config.Config) *Routing {
	t.Helper()
	rt, err := NewRouting(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}
