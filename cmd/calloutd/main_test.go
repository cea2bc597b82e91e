package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/smtptest"
)

// calloutd runs the command in-process and returns its exit code and output.
func calloutd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func writeConfig(t *testing.T, dir, text string) string {
	t.Helper()
	path := filepath.Join(dir, "calloutd.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUsageAndVersion(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		code       int
		out, errIn string
	}{
		{"no arguments", nil, 2, "", "Usage:"},
		{"version", []string{"version"}, 0, "calloutd ", ""},
		{"-version", []string{"-version"}, 0, "calloutd ", ""},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"unknown serve flag", []string{"serve", "-bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{"serve extra argument", []string{"serve", "extra"}, 2, "", `unexpected argument "extra"`},
		{"missing config", []string{"serve", "-config", "/nonexistent/calloutd.toml"}, 78, "", "/nonexistent/calloutd.toml"},
		{"check without address", []string{"check", "-server", "127.0.0.1:1"}, 64, "", "no address given"},
		{"check invalid address", []string{"check", "-server", "127.0.0.1:1", "bad\x01@example.test"}, 64, "", "invalid address"},
		{"check bad server", []string{"check", "-server", "127.0.0.1:99999", "a@example.test"}, 64, "", "invalid port"},
		{"flush usage", []string{"flush", "-config", "/nonexistent"}, 64, "", "usage: calloutd flush"},
		{"lookup usage", []string{"lookup"}, 64, "", "usage: calloutd lookup"},
	}
	for _, tt := range tests {
		code, out, errOut := calloutd(tt.args...)
		if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errOut, tt.errIn) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d, stdout containing %q, stderr containing %q",
				tt.name, code, out, errOut, tt.code, tt.out, tt.errIn)
		}
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, "[[route]]\ndomains = [\"a.test\"]\nservers = [\"127.0.0.1\"]\n[[route]]\ndomains = [\"b.test\"]\nservers = []\n")
	code, _, errOut := calloutd("serve", "-config", path)
	if want := "calloutd: calloutd.toml: route[1].servers: must not be empty (unless callout = false)\n"; code != 78 || errOut != want {
		t.Errorf("exit %d, stderr %q; want 78, %q", code, errOut, want)
	}
}

func TestCheck(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	greylist := smtptest.NewServer(t, smtptest.Behavior{Rcpt: func(string) string { return "450 4.7.1 Greylisted" }})
	dir := t.TempDir()
	path := writeConfig(t, dir, fmt.Sprintf(`
[callout]
helo_name = "gw.test"
request_timeout = "5s"
[[route]]
name = "main"
domains = ["example.test"]
servers = ["%s"]
`, backend.Addr()))

	code, out, _ := calloutd("check", "-config", path, "alice@example.test")
	if code != 0 {
		t.Errorf("valid: exit %d, want 0\n%s", code, out)
	}
	for _, want := range []string{
		"alice@example.test\n",
		"  server " + backend.Addr() + "\n",
		"← 220 smtptest ESMTP\n",
		"→ EHLO gw.test\n",
		"→ MAIL FROM:<>\n",
		"→ RCPT TO:<alice@example.test>\n",
		"← 250 2.1.5 Ok\n",
		"→ QUIT\n",
		"  verdict  valid from route main, server " + backend.Addr() + ": 250 2.1.5 Ok",
		"  action   action=DUNNO\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("valid: output lacks %q:\n%s", want, out)
		}
	}

	code, out, _ = calloutd("check", "-config", path, "nobody@example.test")
	if code != 1 || !strings.Contains(out, "← 550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in local recipient table\n") ||
		!strings.Contains(out, "  action   action=550 5.1.1 User unknown in local recipient table\n") {
		t.Errorf("unknown: exit %d, want 1; output:\n%s", code, out)
	}

	// The worst verdict decides the exit code; the cache is bypassed.
	code, out, _ = calloutd("check", "-config", path, "alice@example.test", "nobody@example.test", "alice@example.test")
	if code != 1 || backend.Count("RCPT") != 5 {
		t.Errorf("several: exit %d (want 1), backend RCPTs %d (want 5)\n%s", code, backend.Count("RCPT"), out)
	}

	code, out, _ = calloutd("check", "-server", greylist.Addr(), "bob@elsewhere.test")
	if code != 2 || !strings.Contains(out, "  action   action=DEFER_IF_PERMIT 4.7.1 Greylisted\n") {
		t.Errorf("-server tempfail: exit %d, want 2; output:\n%s", code, out)
	}

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	down := l.Addr().String()
	l.Close()
	code, out, _ = calloutd("check", "-server", down, "bob@example.test")
	if code != 2 || !strings.Contains(out, "unavailable [connect]") || !strings.Contains(out, "  verdict  unreachable") {
		t.Errorf("unreachable: exit %d, want 2; output:\n%s", code, out)
	}

	code, out, _ = calloutd("check", "-config", path, "bob@other.test")
	if code != 2 || !strings.Contains(out, "no route covers other.test") {
		t.Errorf("no route: exit %d, want 2; output:\n%s", code, out)
	}
}

// TestRunningDaemon runs the real binary: policy requests over a unix
// socket, lookup and flush through the admin socket, SIGHUP with a policy
// connection open, a bad reload, and SIGTERM.
func TestRunningDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "calloutd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	first := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	second := smtptest.NewServer(t, smtptest.Behavior{}) // accepts everyone
	policySock, adminSock := filepath.Join(dir, "policy.sock"), filepath.Join(dir, "admin.sock")
	cfg := func(server string) string {
		return fmt.Sprintf(`listen = ["unix:%s"]
metrics_listen = "127.0.0.1:0"
admin_socket = "%s"
[log]
format = "json"
[callout]
helo_name = "gw.test"
[[route]]
domains = ["example.test"]
servers = ["%s"]
`, policySock, adminSock, server)
	}
	path := writeConfig(t, dir, cfg(first.Addr()))

	cmd := exec.Command(bin, "serve", "-config", path)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	logs := make(chan map[string]any, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case logs <- m:
				default:
				}
			}
		}
		close(logs)
	}()
	waitLog := func(msg string) map[string]any {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case m, ok := <-logs:
				if !ok {
					t.Fatalf("calloutd exited before logging %q", msg)
				}
				if m["msg"] == msg {
					return m
				}
			case <-timeout:
				t.Fatalf("no %q log line within 10s", msg)
			}
		}
	}
	waitLog("calloutd started")
	metricsAddr := waitLog("serving metrics")["addr"].(string)
	waitLog("admin socket ready")

	fi, err := os.Stat(policySock)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("policy socket: %v, mode %v; want 0660", err, fi.Mode().Perm())
	}
	c, err := net.Dial("unix", policySock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	ask := func(rcpt string) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=%s\n\n", rcpt)
		var b strings.Builder
		for !strings.HasSuffix(b.String(), "\n\n") {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			b.WriteString(line)
		}
		return b.String()
	}
	if got, want := ask("nobody@example.test"), "action=550 5.1.1 User unknown in local recipient table\n\n"; got != want {
		t.Errorf("answer %q, want %q", got, want)
	}

	code, out, errOut := calloutd("lookup", "-config", path, "nobody@example.test")
	if code != 0 || !strings.Contains(out, "  verdict   unknown\n") || !strings.Contains(out, "  reply     550 5.1.1 User unknown in local recipient table\n") {
		t.Errorf("lookup: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = calloutd("lookup", "-config", path, "alice@example.test")
	if code != 1 || out != "alice@example.test: not cached\n" {
		t.Errorf("lookup of uncached: exit %d, %q", code, out)
	}

	// The licence count, from the running daemon's memory.
	code, out, errOut = calloutd("report", "-config", path, "-json")
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil || len(rows) != 1 ||
		rows[0]["domain"] != "example.test" || rows[0]["valid"] != 0.0 || rows[0]["unknown"] != 1.0 || rows[0]["callouts"] != 1.0 {
		t.Errorf("report -json: exit %d, %v, stdout %q, stderr %q", code, err, out, errOut)
	}

	code, out, _ = calloutd("report", "-config", path)
	if code != 0 || !strings.Contains(out, "Licence count over the last 30 days") || !regexp.MustCompile(`(?m)^ *example\.test +0 +1 +1 *$`).MatchString(out) {
		t.Errorf("report: exit %d, stdout %q", code, out)
	}

	// calloutd learn: Postfix log lines on standard input, handed to the
	// daemon; only the refusal after END OF DATA by the route's server
	// teaches anything.
	host, port, _ := strings.Cut(first.Addr(), ":")
	relay := host + "[" + host + "]"
	stdin = strings.NewReader("Dec  2 17:04:17 gw postfix/smtpd[7]: connect from unknown[203.0.113.9]\n" +
		"2D3E4F5A6B: to=<bob@example.test>, relay=" + relay + ":" + port + ", delay=0.1, delays=0/0/0/0.1, dsn=5.1.1, status=bounced (host " + relay +
		" said: 550 5.1.1 <bob@example.test>: Recipient address rejected: User unknown (in reply to end of DATA command))\n" +
		"2D3E4F5A6C: to=<eve@example.test>, relay=mx.elsewhere.test[198.51.100.7]:25, delay=0.1, delays=0/0/0/0.1, dsn=5.1.1, status=bounced (host mx.elsewhere.test[198.51.100.7]" +
		" said: 550 5.1.1 User unknown (in reply to end of DATA command))\n")
	t.Cleanup(func() { stdin = os.Stdin })
	code, out, errOut = calloutd("learn", "-config", path)
	if code != 0 || out != "bob@example.test learned\n" || errOut != "calloutd learn: 3 lines: ignored 1, learned 1, not_backend 1\n" {
		t.Errorf("learn: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = calloutd("lookup", "-config", path, "bob@example.test")
	if code != 0 || !strings.Contains(out, "  verdict   unknown\n") || !strings.Contains(out, "  learned   from the postfix log: queue id 2D3E4F5A6B, logged ") {
		t.Errorf("lookup of a learned verdict: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if got, want := ask("bob@example.test"), "action=550 5.1.1 User unknown (cached verdict)\n\n"; got != want {
		t.Errorf("answer after learning %q, want %q", got, want)
	}

	// SIGHUP with the policy connection open: the new route answers on it.
	writeConfig(t, dir, cfg(second.Addr()))
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog("configuration reloaded")
	if got, want := ask("someone@example.test"), "action=DUNNO\n\n"; got != want {
		t.Errorf("after SIGHUP on the same connection: %q, want %q", got, want)
	}
	if second.Count("RCPT") != 1 {
		t.Errorf("new route's server saw %d RCPTs, want 1", second.Count("RCPT"))
	}
	// The cached unknown was reached under the old routes: after the
	// reload it is verified again, against the new route.
	if got := ask("nobody@example.test"); got != "action=DUNNO\n\n" {
		t.Errorf("cached unknown served after the routes changed: %q", got)
	}
	if second.Count("RCPT") != 2 {
		t.Errorf("new route's server saw %d RCPTs, want 2", second.Count("RCPT"))
	}
	code, out, _ = calloutd("flush", "-config", path, "nobody@example.test")
	if code != 0 || out != "removed 1 cached verdict(s)\n" {
		t.Errorf("flush: exit %d, %q", code, out)
	}
	if got := ask("nobody@example.test"); got != "action=DUNNO\n\n" || second.Count("RCPT") != 3 {
		t.Errorf("after flush: %q, %d RCPTs; want a fresh callout (DUNNO, 3 RCPTs)", got, second.Count("RCPT"))
	}

	// A bad file is refused and the old configuration keeps serving.
	writeConfig(t, dir, "[cache]\nnegativ_ttl = \"1h\"\n")
	cmd.Process.Signal(syscall.SIGHUP)
	if m := waitLog("configuration reload failed, keeping the running configuration"); !strings.Contains(fmt.Sprint(m["err"]), "unknown key cache.negativ_ttl") {
		t.Errorf("reload error %v does not name the key", m["err"])
	}
	if got := ask("other@example.test"); got != "action=DUNNO\n\n" {
		t.Errorf("after bad reload: %q", got)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`calloutd_config_reloads_total{result="success"} 1`, `calloutd_config_reloads_total{result="failure"} 1`} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// SIGTERM: exit 0, sockets removed.
	c.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15s of SIGTERM")
	}
	if _, err := os.Stat(policySock); !os.IsNotExist(err) {
		t.Errorf("policy socket left behind: %v", err)
	}
}
