package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// requestTimeout is calloutd's budget for one verdict in the suite; the
// snippets' timeout=35s is well above it, so every answer the front gets
// within it comes from calloutd, not from Postfix's default_action.
const requestTimeout = 5 * time.Second

// calloutdConfig is the configuration every calloutd of the suite gets:
// example.test on the backend, hung.test on a server that never answers.
// command_timeout is above request_timeout so that, for hung.test, the
// whole budget is what runs out.
func calloutdConfig(listen, logFile string, backendPort, hungPort int) string {
	return fmt.Sprintf(`# calloutd for the e2e suite (generated)
listen = [%q]
metrics_listen = ""
admin_socket = ""

[log]
level = "debug"
file = %q

[callout]
helo_name = "calloutd.e2e.test"
connect_timeout = "2s"
command_timeout = "10s"
request_timeout = %q

[cache]
store = "memory"

[[route]]
name = "backend"
domains = ["example.test"]
servers = ["127.0.0.1:%d"]

[[route]]
name = "hung"
domains = ["hung.test"]
servers = ["127.0.0.1:%d"]
`, listen, logFile, requestTimeout.String(), backendPort, hungPort)
}

// calloutdDir makes top/NAME for a calloutd's configuration and log:
// readable by all, writable by nobody, which calloutd runs as.
func (s *suite) calloutdDir(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(s.top, name)
	mkdir(t, dir, 0o755, s.nobodyUID, s.nogroupGID)
	return dir
}

// daemon is a long-running "calloutd serve" process.
type daemon struct {
	name    string
	dir     string
	listen  string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	once    sync.Once
}

// startCalloutd runs "calloutd serve" as nobody, listening on listen, and
// waits until it accepts connections. It is stopped when the test ends.
func (s *suite) startCalloutd(t testing.TB, name, listen string, backendPort, hungPort int) *daemon {
	t.Helper()
	return s.startCalloutdConfig(t, name, listen, func(logFile string) string {
		return calloutdConfig(listen, logFile, backendPort, hungPort)
	})
}

// startCalloutdConfig is startCalloutd with the configuration config
// returns, given the log file to name (the benchmarks use their own).
func (s *suite) startCalloutdConfig(t testing.TB, name, listen string, config func(logFile string) string) *daemon {
	t.Helper()
	d := &daemon{name: name, dir: s.calloutdDir(t, name), listen: listen, exited: make(chan struct{})}
	cfg := filepath.Join(d.dir, "calloutd.toml")
	writeFile(t, cfg, config(filepath.Join(d.dir, "calloutd.log")), 0o644)
	stderr, err := os.Create(filepath.Join(d.dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	d.cmd = exec.Command(calloutdBin, "serve", "-config", cfg)
	d.cmd.Stdout, d.cmd.Stderr = stderr, stderr
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: uint32(s.nobodyUID), Gid: uint32(s.nogroupGID), Groups: []uint32{},
	}}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.waitErr = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("%s: last lines of calloutd.log:\n%s\nstderr:\n%s", d.name,
				tail(filepath.Join(d.dir, "calloutd.log"), 40), tail(filepath.Join(d.dir, "stderr"), 20))
		}
	})

	network, addr := "tcp", listen
	if p, ok := strings.CutPrefix(listen, "unix:"); ok {
		network, addr = "unix", p
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
			return d
		}
		select {
		case <-d.exited:
			t.Fatalf("%s: calloutd exited at start: %v\n%s\n%s", name, d.waitErr,
				tail(filepath.Join(d.dir, "stderr"), 20), tail(filepath.Join(d.dir, "calloutd.log"), 20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: calloutd does not accept connections on %s: %v", name, listen, err)
		}
	}
}

// stop sends SIGTERM and waits for calloutd to drain and exit.
func (d *daemon) stop(t testing.TB) {
	d.once.Do(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
			if d.waitErr != nil {
				t.Errorf("%s: calloutd exited with %v", d.name, d.waitErr)
			}
		case <-time.After(requestTimeout + 10*time.Second):
			t.Errorf("%s: calloutd did not stop on SIGTERM; killing it", d.name)
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
	})
}

// silentServer accepts TCP connections and never says a word: a backend
// that hangs before its greeting.
type silentServer struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	done  chan struct{}
}

func startSilentServer(t *testing.T) *silentServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silentServer{l: l, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-s.done
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	return s
}

func (s *silentServer) port() int { return s.l.Addr().(*net.TCPAddr).Port }
