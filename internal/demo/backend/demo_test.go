package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// demoScript is contrib/demo/demo.sh, what "make demo" runs.
var demoScript = filepath.Join("..", "..", "..", "contrib", "demo", "demo.sh")

// runDemo runs the demo script on the given loopback ports with TMPDIR a
// directory of the test's own, and checks afterwards that it left no file
// there and no process behind.
func runDemo(t *testing.T, listen, metrics, backend int) (code int, stdout, stderr string) {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		msg := "the demo script (make demo) needs bash: " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("\n\n*** SKIPPED: " + msg + " ***\n")
	}
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, demoScript)
	// On a timeout, SIGTERM: the script's trap stops what it started.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	// go test puts its own go first in PATH, which the script builds with.
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "GO=go",
		fmt.Sprintf("CALLOUTD_DEMO_PORTS=%d %d %d", listen, metrics, backend))
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code <= 0 {
		t.Fatalf("running %s: %v\nstdout:\n%s\nstderr:\n%s", demoScript, err, o.String(), e.String())
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the demo left %s in TMPDIR %s", left[0].Name(), tmp)
	}
	if procs := processesIn(tmp); len(procs) > 0 {
		for pid, cmdline := range procs {
			t.Errorf("process %d still running after the demo: %s", pid, cmdline)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return code, o.String(), e.String()
}

// TestDemo runs the demo script as "make demo" does, on free ports, and
// checks each step shows what README.md promises: valid → DUNNO, unknown →
// 550 5.1.1, the repeat answered from the cache without a callout, lookup,
// flush, and the metrics that moved.
func TestDemo(t *testing.T) {
	p := freePorts(t, 3)
	start := time.Now()
	code, out, errOut := runDemo(t, p[0], p[1], p[2])
	t.Logf("the demo took %s (building included)", time.Since(start).Round(time.Millisecond))
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr:\n%s\nstdout:\n%s", code, errOut, out)
	}
	backend := fmt.Sprintf("127.0.0.1:%d", p[2])
	// Each step's heading, then lines it must show, in order.
	steps := []struct {
		heading string
		want    []string
	}{
		{"calloutd demo: ", []string{
			"changed only in admin_socket, listen, metrics_listen and the first route's servers (CALLOUTD_DEMO_PORTS); admin_socket = ",
		}},
		{"# Start a demo backend", []string{
			"  demo backend: listening on " + backend + " for route mailstore (example.com, .example.com); mailboxes alice@example.com, bob@example.com\n",
			fmt.Sprintf("  calloutd: ready (GET /readyz); policy service on 127.0.0.1:%d, metrics on 127.0.0.1:%d", p[0], p[1]),
		}},
		{"# calloutd check", []string{
			"$ calloutd check -config demo.toml alice@example.com nobody@example.com\n",
			"→ RCPT TO:<alice@example.com>\n", "← 250 2.1.5 Ok\n", "  action   action=DUNNO\n",
			"→ RCPT TO:<nobody@example.com>\n",
			"← 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in local recipient table\n",
			"  action   action=550 5.1.1 User unknown in local recipient table\n",
		}},
		{"# Postfix asks calloutd about alice@example.com", []string{
			"  → request=smtpd_access_policy\n", "  → recipient=alice@example.com\n",
			"  ← action=DUNNO\n",
			"  backend ← RCPT TO:<alice@example.com>\n  backend → 250 2.1.5 Ok\n",
		}},
		{"# ... and about nobody@example.com", []string{
			"  ← action=550 5.1.1 User unknown in local recipient table\n",
			"  backend ← RCPT TO:<nobody@example.com>\n",
		}},
		{"# The same two again", []string{
			"  ← action=DUNNO\n",
			"  ← action=550 5.1.1 User unknown in local recipient table (cached verdict)\n",
			"  backend: nothing (no callout)\n",
			"recipient=nobody@example.com verdict=unknown cached=true",
		}},
		{"# calloutd lookup", []string{
			"$ calloutd lookup -config demo.toml alice@example.com\n  verdict   valid\n",
			"$ calloutd lookup -config demo.toml nobody@example.com\n  verdict   unknown\n",
			"$ calloutd flush -config demo.toml nobody@example.com\nremoved 1 cached verdict(s)\n",
			"$ calloutd lookup -config demo.toml nobody@example.com\nnobody@example.com: not cached\n",
		}},
		{"# The Prometheus metrics that moved", []string{
			"  calloutd_backend_attempts_total{server=\"" + backend + "\"} 2\n",
			"  calloutd_cache_hits_total 2\n",
			"  calloutd_policy_requests_total{action=\"dunno\",protocol_state=\"RCPT\"} 2\n",
			"  calloutd_policy_requests_total{action=\"reject\",protocol_state=\"RCPT\"} 2\n",
			"  calloutd_verdicts_total{source=\"cache\",verdict=\"unknown\"} 1\n",
			"  calloutd_verdicts_total{source=\"callout\",verdict=\"valid\"} 1\n",
		}},
		{"# Done: calloutd and the backend stopped", nil},
	}
	rest := out
	for _, s := range steps {
		i := strings.Index(rest, s.heading)
		if i < 0 {
			t.Fatalf("no step %q (or not in order) in the output:\n%s", s.heading, out)
		}
		rest = rest[i+len(s.heading):]
		section := rest
		if j := strings.Index(section, "\n# "); j >= 0 {
			section = section[:j+1]
		}
		at := 0
		for _, w := range s.want {
			k := strings.Index(section[at:], w)
			if k < 0 {
				t.Errorf("step %q lacks %q (or not in order):\n%s", s.heading, w, section)
				break
			}
			at += k + len(w)
		}
	}
	// Only the two first policy requests reached the backend, and check's two.
	if n := strings.Count(out, "  backend ← RCPT TO:"); n != 2 {
		t.Errorf("the backend shows %d RCPTs from calloutd serve, want 2:\n%s", n, out)
	}
	if n := strings.Count(out, "\n"); n > 70 {
		t.Errorf("the demo prints %d lines; keep it short (60 or so):\n%s", n, out)
	}
}

// TestDemoPortBusy checks that the demo stops with a clear message, and
// leaves nothing behind, when its policy port is taken.
func TestDemoPortBusy(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	p := freePorts(t, 2)
	code, out, errOut := runDemo(t, busy, p[0], p[1])
	want := fmt.Sprintf("demo: 127.0.0.1:%d is in use (by \"make run\", another demo, or an installed calloutd?): stop that and run make demo again\n", busy)
	if code != 1 || !strings.HasPrefix(errOut, want) || strings.Contains(out, "# ") {
		t.Errorf("exit %d, stderr %q, stdout %q; want exit 1, stderr starting %q and no step run", code, errOut, out, want)
	}
}

// freePorts returns n distinct loopback ports nobody listened on a moment
// ago (held together while chosen, so they differ).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// processesIn returns the processes that run a program below dir, run in
// it, or name it on their command line (Linux; elsewhere none are found).
func processesIn(dir string) map[int]string {
	found := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmdline := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
		exe, _ := os.Readlink(filepath.Join("/proc", d.Name(), "exe"))
		cwd, _ := os.Readlink(filepath.Join("/proc", d.Name(), "cwd"))
		if strings.Contains(cmdline, dir) || strings.HasPrefix(exe, dir) || strings.HasPrefix(cwd, dir) {
			found[pid] = cmdline
		}
	}
	return found
}
