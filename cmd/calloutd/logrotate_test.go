package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/smtptest"
)

// TestLogRotation runs the real binary with log.file and does what
// logrotate does while policy requests stream in: rename the file, then
// reload (SIGHUP). The reload itself fails (a bad file), and the log file
// is reopened all the same: later lines land in a new file, and every
// verdict line is found whole, exactly once, in one file or the other.
func TestLogRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "calloutd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	backend := smtptest.NewServer(t, smtptest.Behavior{}) // accepts everyone
	sock, logPath := filepath.Join(dir, "policy.sock"), filepath.Join(dir, "calloutd.log")
	path := writeConfig(t, dir, fmt.Sprintf(`listen = ["unix:%s"]
metrics_listen = ""
admin_socket = ""
[log]
format = "json"
file = %q
[callout]
helo_name = "gw.test"
[[route]]
domains = ["example.test"]
servers = [%q]
`, sock, logPath, backend.Addr()))

	cmd := exec.Command(bin, "serve", "-config", path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// waitFor waits until the file at p has a line with message msg.
	waitFor := func(p, msg string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			data, _ := os.ReadFile(p)
			if strings.Contains(string(data), `"msg":"`+msg+`"`) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no %q line in %s within 10s", msg, p)
	}
	waitFor(logPath, "calloutd started")

	ask := func(c net.Conn, br *bufio.Reader, rcpt string) error {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=%s\n\n", rcpt); err != nil {
			return err
		}
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return err
			}
			if line == "\n" {
				return nil
			}
		}
	}
	const clients, requests = 4, 150
	var (
		wg   sync.WaitGroup
		sent atomic.Int64
	)
	for g := range clients {
		wg.Go(func() {
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			for i := range requests {
				if err := ask(c, br, fmt.Sprintf("c%d-%d@example.test", g, i)); err != nil {
					t.Errorf("client %d request %d: %v", g, i, err)
					return
				}
				sent.Add(1)
			}
		})
	}
	for sent.Load() < clients*requests/3 {
		time.Sleep(time.Millisecond)
	}
	// logrotate: rename, then "systemctl reload calloutd" (postrotate).
	// The configuration has meanwhile become one the daemon refuses.
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, dir, "[cache]\nnegativ_ttl = \"1h\"\n")
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(logPath, "log file reopened")
	waitFor(logPath, "configuration reload failed, keeping the running configuration")
	if sent.Load() == clients*requests {
		t.Log("every request was answered before the reopen; the rotation did not happen under load")
	}
	wg.Wait()

	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := ask(c, bufio.NewReader(c), "after@example.test"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}

	seen := map[string]int{}
	msgs := map[string]map[string]bool{logPath + ".1": {}, logPath: {}}
	for file := range msgs {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(data), "\n") {
			t.Errorf("%s does not end with a whole line", file)
		}
		for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Errorf("%s: torn line %q: %v", file, line, err)
				continue
			}
			msgs[file][fmt.Sprint(m["msg"])] = true
			if m["msg"] == "verdict" {
				seen[fmt.Sprint(m["recipient"])]++
				if rcpt := m["recipient"]; rcpt == "after@example.test" && file != logPath {
					t.Errorf("the verdict after the reopen is in %s, want %s", file, logPath)
				}
			}
		}
	}
	for g := range clients {
		for i := range requests {
			if n := seen[fmt.Sprintf("c%d-%d@example.test", g, i)]; n != 1 {
				t.Errorf("verdict for c%d-%d: %d lines, want 1", g, i, n)
			}
		}
	}
	if seen["after@example.test"] != 1 {
		t.Errorf("verdict for after@example.test: %d lines, want 1", seen["after@example.test"])
	}
	if old := msgs[logPath+".1"]; !old["calloutd started"] || old["log file reopened"] {
		t.Errorf("rotated file's messages: %v", old)
	}
	if cur := msgs[logPath]; !cur["calloutd stopped"] {
		t.Errorf("new file's messages: %v", cur)
	}
}
