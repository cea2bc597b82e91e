package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/smtptest"
)

// testDaemon is a daemon serving on loopback, as calloutd serve runs it.
type testDaemon struct {
	d       *Daemon
	policy  string // policy listener address
	metrics string // metrics listener address
	admin   string // admin socket path
	path    string // configuration file
	cancel  context.CancelFunc
	done    chan error
}

// startDaemon writes cfgText (with {{ADMIN}} replaced) to a file, loads it
// and serves it until the test ends.
func startDaemon(t *testing.T, cfgText string) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	td := &testDaemon{admin: filepath.Join(dir, "admin.sock"), path: filepath.Join(dir, "calloutd.toml")}
	cfgText = strings.ReplaceAll(cfgText, "{{ADMIN}}", td.admin)
	if err := os.WriteFile(td.path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(td.path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	td.d, err = New(cfg, Options{Path: td.path, Logger: log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := td.d.Listen()
	if err != nil {
		t.Fatal(err)
	}
	td.policy = ls.Policy[0].Addr().String()
	if ls.Metrics != nil {
		td.metrics = ls.Metrics.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	td.cancel, td.done = cancel, make(chan error, 1)
	go func() { td.done <- td.d.Serve(ctx, ls, nil) }()
	t.Cleanup(func() { td.stop(t) })
	return td
}

func (td *testDaemon) stop(t *testing.T) {
	t.Helper()
	if td.cancel == nil {
		return
	}
	td.cancel()
	td.cancel = nil
	select {
	case err := <-td.done:
		if err != nil {
			t.Errorf("Serve returned %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Serve did not return within 10s of shutdown")
	}
}

// testWriter sends log lines to t.Log, so they show only for failed tests.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// policyConn is a Postfix-like policy client on one connection.
type policyConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialPolicy(t testing.TB, addr string) *policyConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &policyConn{t: t, c: c, br: bufio.NewReader(c)}
}

// ask sends a request like Postfix's at RCPT and returns the raw answer.
func (p *policyConn) ask(state, recipient string) string {
	p.t.Helper()
	req := fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=%s\nprotocol_name=ESMTP\n"+
		"client_address=203.0.113.9\nclient_name=unknown\nhelo_name=client.test\nsender=tester@client.test\n"+
		"recipient=%s\nrecipient_count=0\nqueue_id=\ninstance=1.2.3\nsize=0\n\n", state, recipient)
	_ = p.c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(p.c, req); err != nil {
		p.t.Fatalf("write: %v", err)
	}
	var b strings.Builder
	for !strings.HasSuffix(b.String(), "\n\n") {
		line, err := p.br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			p.t.Fatalf("read answer: %v (got %q)", err, b.String())
		}
	}
	return b.String()
}

const baseConfig = `
listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
admin_socket = "{{ADMIN}}"
[callout]
helo_name = "gw.test"
connect_timeout = "2s"
command_timeout = "2s"
request_timeout = "5s"
%s
[cache]
positive_ttl = "1h"
negative_ttl = "1h"
tempfail_ttl = "1m"
%s
[[route]]
name = "main"
domains = ["example.test", ".example.test"]
servers = [%s]
`

func config1(servers string) string {
	return fmt.Sprintf(baseConfig, "", "", servers)
}

func quoted(addrs ...string) string {
	q := make([]string, len(addrs))
	for i, a := range addrs {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, ", ")
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestVerdictsAndCache(t *testing.T) {
	t.Cleanup(checkGoroutines(t))
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	td := startDaemon(t, config1(quoted(backend.Addr())))
	p := dialPolicy(t, td.policy)

	steps := []struct {
		name, state, rcpt, want string
		rcpts                   int // RCPTs the backend has seen after the step
	}{
		{"valid", "RCPT", "alice@example.test", "action=DUNNO\n\n", 1},
		{"valid from cache", "RCPT", "alice@example.test", "action=DUNNO\n\n", 1},
		{"case-insensitive key", "RCPT", "Alice@EXAMPLE.test", "action=DUNNO\n\n", 1},
		{"unknown", "RCPT", "nobody@example.test", "action=550 5.1.1 User unknown in local recipient table\n\n", 2},
		{"unknown from cache", "RCPT", "nobody@example.test", "action=550 5.1.1 User unknown in local recipient table (cached verdict)\n\n", 2},
		{"subdomain route", "RCPT", "x@sub.example.test", "action=550 5.1.1 User unknown in local recipient table\n\n", 3},
		{"other state", "DATA", "bob@example.test", "action=DUNNO\n\n", 3},
		{"no route", "RCPT", "bob@example.org", "action=DUNNO\n\n", 3},
		{"empty recipient", "RCPT", "", "action=DUNNO\n\n", 3},
		{"invalid address", "RCPT", "bob@bad_domain.example.test", "action=DUNNO\n\n", 3},
		{"no domain", "RCPT", "postmaster", "action=DUNNO\n\n", 3},
		{"quoted local part", "RCPT", "john doe@example.test", "action=550 5.1.1 User unknown in local recipient table\n\n", 4},
	}
	for _, s := range steps {
		if got := p.ask(s.state, s.rcpt); got != s.want {
			t.Errorf("%s: answer %q, want %q", s.name, got, s.want)
		}
		if got := backend.Count("RCPT"); got != s.rcpts {
			t.Errorf("%s: backend saw %d RCPTs, want %d", s.name, got, s.rcpts)
		}
	}
	lines := backend.Lines()
	if want := `RCPT TO:<"john doe"@example.test>`; !contains(lines, want) {
		t.Errorf("backend lines %q lack %q", lines, want)
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "DATA") {
			t.Errorf("backend received DATA: %q", lines)
		}
	}
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}

func TestTempfailAndUnreachableActions(t *testing.T) {
	greylist := smtptest.NewServer(t, smtptest.Behavior{Rcpt: func(string) string { return "450 4.7.1 Greylisted, try again later" }})
	down := closedPort(t)
	tests := []struct {
		name           string
		actions, cache string
		server         string
		want           string
		rcpts          int // RCPTs after asking twice
	}{
		{"tempfail defers", `tempfail_action = "defer"`, "", greylist.Addr(),
			"action=DEFER_IF_PERMIT 4.7.1 Greylisted, try again later\n\n", 1},
		{"tempfail dunno", `tempfail_action = "dunno"`, "", greylist.Addr(), "action=DUNNO\n\n", 1},
		{"tempfail not cached with ttl 0", `tempfail_action = "defer"`, `tempfail_ttl = "0s"`, greylist.Addr(),
			"action=DEFER_IF_PERMIT 4.7.1 Greylisted, try again later\n\n", 2},
		{"unreachable fails open", "", "", down, "action=DUNNO\n\n", 0},
		{"unreachable defers", `unreachable_action = "defer"`, "", down,
			"action=DEFER_IF_PERMIT 4.4.1 Recipient verification unavailable, try again later\n\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := greylist.Count("RCPT")
			cfg := fmt.Sprintf(baseConfig, tt.actions, tt.cache, quoted(tt.server))
			cfg = strings.Replace(cfg, `tempfail_ttl = "1m"`+"\n"+tt.cache, tt.cache, 1)
			td := startDaemon(t, cfg)
			p := dialPolicy(t, td.policy)
			rcpt := "carol@example.test"
			if got := p.ask("RCPT", rcpt); got != tt.want {
				t.Errorf("first answer %q, want %q", got, tt.want)
			}
			second := p.ask("RCPT", rcpt)
			if tt.rcpts == 1 || tt.server == down {
				want := strings.TrimSuffix(tt.want, "\n\n")
				if want != "action=DUNNO" {
					want += " (cached verdict)"
				}
				if second != want+"\n\n" {
					t.Errorf("second answer %q, want %q", second, want+"\n\n")
				}
			}
			if tt.server == greylist.Addr() {
				if got := greylist.Count("RCPT") - before; got != tt.rcpts {
					t.Errorf("backend saw %d RCPTs, want %d", got, tt.rcpts)
				}
			}
		})
	}
}

func TestFailoverToSecondServer(t *testing.T) {
	refusesNull := smtptest.NewServer(t, smtptest.Behavior{Mail: "553 5.7.1 Sender address rejected"})
	good := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	td := startDaemon(t, config1(quoted(closedPort(t), refusesNull.Addr(), good.Addr())))
	p := dialPolicy(t, td.policy)
	if got, want := p.ask("RCPT", "alice@example.test"), "action=DUNNO\n\n"; got != want {
		t.Errorf("answer %q, want %q", got, want)
	}
	if got, want := p.ask("RCPT", "zed@example.test"), "action=550 5.1.1 User unknown in local recipient table\n\n"; got != want {
		t.Errorf("answer %q, want %q", got, want)
	}
	// With PIPELINING, MAIL and RCPT go in one write (RFC 2920): the
	// server refusing our sender sees the RCPT, whose reply means nothing
	// and is not read as a verdict. One session per request: a session
	// whose MAIL was refused is not kept.
	if got := refusesNull.Sessions(); got != 2 {
		t.Errorf("server refusing MAIL FROM:<> got %d sessions, want 2", got)
	}
	if got := good.Count("RCPT"); got != 2 {
		t.Errorf("second server got %d RCPTs, want 2", got)
	}
	if got := good.Sessions(); got != 1 {
		t.Errorf("second server got %d sessions, want 1 (kept for the second request)", got)
	}
}

func TestSilentBackendAnsweredWithinBudget(t *testing.T) {
	silent := smtptest.NewServer(t, smtptest.Behavior{Silent: "RCPT"})
	cfg := strings.Replace(config1(quoted(silent.Addr())), `request_timeout = "5s"`, `request_timeout = "500ms"`, 1)
	td := startDaemon(t, cfg)
	p := dialPolicy(t, td.policy)
	start := time.Now()
	if got, want := p.ask("RCPT", "slow@example.test"), "action=DUNNO\n\n"; got != want {
		t.Errorf("answer %q, want %q", got, want)
	}
	// The budget is 500ms; allow generous slack for a loaded machine but
	// far less than command_timeout (2s) + Postfix's patience.
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("answer took %v, budget 500ms", d)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	td := startDaemon(t, config1(quoted(backend.Addr())))
	p := dialPolicy(t, td.policy)
	p.ask("RCPT", "nobody@example.test")
	p.ask("RCPT", "nobody@example.test")
	p.ask("RCPT", "alice@example.test")

	body := httpGet(t, "http://"+td.metrics+"/metrics", 200)
	for _, want := range []string{
		`calloutd_verdicts_total{source="callout",verdict="unknown"} 1`,
		`calloutd_verdicts_total{source="cache",verdict="unknown"} 1`,
		`calloutd_verdicts_total{source="callout",verdict="valid"} 1`,
		`calloutd_policy_requests_total{action="reject",protocol_state="RCPT"} 2`,
		`calloutd_policy_requests_total{action="dunno",protocol_state="RCPT"} 1`,
		`calloutd_cache_hits_total 1`,
		`calloutd_cache_misses_total 2`,
		`calloutd_cache_entries 2`,
		`calloutd_policy_connections 1`,
		`calloutd_callouts_in_flight 0`,
		`calloutd_backend_attempts_total{server="` + backend.Addr() + `"} 2`,
		`calloutd_callout_duration_seconds_count{outcome="unknown",route="main"} 1`,
		`calloutd_build_info{goversion="` + runtime.Version() + `",version="test"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if got := httpGet(t, "http://"+td.metrics+"/healthz", 200); got != "ok\n" {
		t.Errorf("/healthz body %q", got)
	}
	if got := httpGet(t, "http://"+td.metrics+"/readyz", 200); !strings.HasPrefix(got, "ready\n") || !strings.Contains(got, "store: memory") {
		t.Errorf("/readyz body %q", got)
	}
}

func httpGet(t *testing.T, url string, wantStatus int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Errorf("GET %s: status %d, want %d", url, resp.StatusCode, wantStatus)
	}
	return string(b)
}

func TestAdminLookupAndFlush(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	td := startDaemon(t, config1(quoted(backend.Addr())))
	p := dialPolicy(t, td.policy)
	p.ask("RCPT", "nobody@example.test")
	p.ask("RCPT", "alice@example.test")
	p.ask("RCPT", "x@sub.example.test")
	ctx := context.Background()

	fi, err := os.Stat(td.admin)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("admin socket mode %o, want 600", got)
	}

	resp, err := Admin(ctx, td.admin, AdminRequest{Op: "lookup", Address: "NoBody@example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Found || resp.Entry.Verdict != "unknown" || resp.Entry.Code != 550 || resp.Entry.Enhanced != "5.1.1" ||
		resp.Entry.Text != "User unknown in local recipient table" || resp.Entry.Route != "main" {
		t.Errorf("lookup = %+v %+v", resp, resp.Entry)
	}
	if ttl := time.Until(resp.Entry.Expires); ttl < 59*time.Minute || ttl > time.Hour {
		t.Errorf("lookup TTL %v, want about 1h (negative_ttl)", ttl)
	}

	resp, err = Admin(ctx, td.admin, AdminRequest{Op: "flush", Address: "nobody@example.test"})
	if err != nil || resp.Removed != 1 {
		t.Fatalf("flush address = %+v, %v; want 1 removed", resp, err)
	}
	p.ask("RCPT", "nobody@example.test")
	if got := backend.Count("RCPT"); got != 4 {
		t.Errorf("after flush the address was not verified again: %d RCPTs, want 4", got)
	}
	// @example.test covers the domain, not sub.example.test.
	resp, err = Admin(ctx, td.admin, AdminRequest{Op: "flush", Domain: "example.test"})
	if err != nil || resp.Removed != 2 {
		t.Fatalf("flush domain = %+v, %v; want 2 removed", resp, err)
	}
	resp, err = Admin(ctx, td.admin, AdminRequest{Op: "flush", All: true})
	if err != nil || resp.Removed != 1 {
		t.Fatalf("flush all = %+v, %v; want 1 removed", resp, err)
	}
	if _, err := Admin(ctx, td.admin, AdminRequest{Op: "lookup", Address: "bad\x01@example.test"}); err == nil {
		t.Error("lookup of an invalid address succeeded")
	}
}

func TestReloadKeepsConnectionsAndRejectsBadConfig(t *testing.T) {
	unknownAll := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users()})
	acceptAll := smtptest.NewServer(t, smtptest.Behavior{})
	td := startDaemon(t, config1(quoted(unknownAll.Addr())))
	p := dialPolicy(t, td.policy)
	if got := p.ask("RCPT", "a@example.test"); !strings.HasPrefix(got, "action=550 ") {
		t.Fatalf("before reload: %q", got)
	}

	write := func(text string) {
		t.Helper()
		text = strings.ReplaceAll(text, "{{ADMIN}}", td.admin)
		if err := os.WriteFile(td.path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(config1(quoted(acceptAll.Addr())))
	if err := td.d.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := p.ask("RCPT", "b@example.test"); got != "action=DUNNO\n\n" {
		t.Errorf("after reload, same connection: %q, want DUNNO from the new route", got)
	}
	if acceptAll.Count("RCPT") != 1 {
		t.Errorf("new route's server saw %d RCPTs, want 1", acceptAll.Count("RCPT"))
	}

	write("listen = [\n") // broken TOML
	if err := td.d.Reload(); err == nil {
		t.Error("Reload of a broken file succeeded")
	}
	if got := p.ask("RCPT", "c@example.test"); got != "action=DUNNO\n\n" {
		t.Errorf("after failed reload: %q, want the old configuration still serving", got)
	}
	body := httpGet(t, "http://"+td.metrics+"/metrics", 200)
	for _, want := range []string{`calloutd_config_reloads_total{result="success"} 1`, `calloutd_config_reloads_total{result="failure"} 1`} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestShutdownFinishesInFlightRequest(t *testing.T) {
	slow := smtptest.NewServer(t, smtptest.Behavior{Delay: 300 * time.Millisecond})
	td := startDaemon(t, config1(quoted(slow.Addr())))
	p := dialPolicy(t, td.policy)
	answer := make(chan string, 1)
	go func() {
		req := "request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=late@example.test\n\n"
		io.WriteString(p.c, req)
		b, _ := io.ReadAll(p.br) // until the daemon closes the connection
		answer <- string(b)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for slow.Sessions() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	td.stop(t)
	select {
	case got := <-answer:
		if got != "action=DUNNO\n\n" {
			t.Errorf("in-flight request got %q, want its answer before the close", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer after shutdown")
	}
}

// checkGoroutines fails the test if goroutines started during it are still
// running a few seconds after it ends.
func checkGoroutines(t *testing.T) func() {
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		var n int
		for i := 0; i < 100; i++ {
			if n = runtime.NumGoroutine(); n <= before {
				return
			}
			time.Sleep(30 * time.Millisecond)
		}
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

// A backend that refuses the verifier itself (5.7.x at RCPT, as Postfix
// does for a rejected client with smtpd_delay_reject) must not turn every
// recipient into "user unknown": the route cannot verify, so fail open.
func TestPolicyRefusalIsNotUserUnknown(t *testing.T) {
	refuses := smtptest.NewServer(t, smtptest.Behavior{Rcpt: func(string) string {
		return "554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied"
	}})
	td := startDaemon(t, config1(quoted(refuses.Addr())))
	p := dialPolicy(t, td.policy)
	if got, want := p.ask("RCPT", "alice@example.test"), "action=DUNNO\n\n"; got != want {
		t.Errorf("answer %q, want %q", got, want)
	}
	body := httpGet(t, "http://"+td.metrics+"/metrics", 200)
	for _, want := range []string{
		`calloutd_backend_failures_total{reason="client_refused",server="` + refuses.Addr() + `"} 1`,
		`calloutd_backend_replies_total{meaning="refused",reason="client_refused",server="` + refuses.Addr() + `"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
