package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/testproc"
)

// Time limits. Every wait polls every pollEvery and gives up after its limit.
const (
	pollEvery  = 25 * time.Millisecond
	upLimit    = 10 * time.Second // for one instance to answer
	waitLimit  = 20 * time.Second // for a topology to settle
	cliLimit   = 20 * time.Second // for one redis-cli run
	portTries  = 5                // instances started on a port taken meanwhile
	logTailLen = 25               // log lines quoted in a failure
)

// Need skips the test loudly when redis-server or redis-cli is missing, or
// fails it when the environment has CI=true. Start, StartSentinel and
// StartCluster call it themselves.
func Need(t testing.TB) {
	t.Helper()
	var missing []string
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "tests against a real Redis need " + strings.Join(missing, " and ") +
		` in PATH; "make test" as root on Debian installs them (apt-get install redis-server, see .ci/deps)`
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip("\n\n*** SKIPPED: " + msg + " ***\n")
}

// mode is what an instance runs as.
type mode int

const (
	modeRedis mode = iota
	modeSentinel
	modeCluster
)

// Server is one redis-server process (a plain server, a replica, a sentinel
// or a cluster node) on 127.0.0.1, with its own directory.
type Server struct {
	t    testing.TB
	name string // in messages: "redis", "sentinel 2", ...
	mode mode
	dir  string
	conf string // the config file, in dir; a sentinel rewrites it
	log  string // stdout and stderr of every run, in dir
	pass string // from a "requirepass" line, for CLI and the polls
	port int    // set once by Start, never changed after

	mu sync.Mutex     // held by Kill while it waits, so Kill is serialised
	p  *testproc.Proc // the running process, nil once killed
}

// proc is one run of the server.
// Start starts a standalone redis-server on a free loopback port, with no
// persistence, in t.TempDir(); it is stopped at t.Cleanup. extra are extra
// config lines ("key value"), e.g. "requirepass s3cret"; they come after the
// helper's own lines and must not change port, bind or dir. Start waits until
// the server answers (an INFO that reports its own pid, so a server of some
// other test that took the port meanwhile is not mistaken for it).
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	Need(t)
	return startServer(t, "redis", modeRedis, extra)
}

// Addr returns the server's address, "127.0.0.1:PORT".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's TCP port.
func (s *Server) Port() int { return s.port }

// Pid returns the process id of the running server, 0 after Kill.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		return 0
	}
	return s.p.Pid()
}

// Kill kills the server with SIGKILL (with anything it forked, such as a
// replication child) and waits until it has exited. It does nothing when the
// server is not running, so it may be called any number of times.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		return
	}
	s.p.Kill()
	s.p = nil
}

// Restart kills the server if it runs, starts it again on the same port with
// the same config file and waits until it answers. It keeps nothing of its
// data (there is no persistence), but a replica resyncs from its master and
// a cluster node comes back as the same node (nodes.conf is kept); a
// sentinel comes back with the state it had rewritten into its config. If
// the port is taken meanwhile it retries for a while, then fails the test.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	deadline := time.Now().Add(upLimit)
	for {
		err := s.boot()
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			s.t.Fatalf("redistest: restarting %s on %s: %v", s.name, s.Addr(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// CLI runs the real `redis-cli -h 127.0.0.1 -p PORT --no-auth-warning
// [-a PASS] args...`, PASS coming from a "requirepass" line given to Start,
// and returns its standard output, trimmed. It fails the test when redis-cli
// exits non-zero (it could not connect, for one) or runs longer than 20 s.
// redis-cli exits 0 on an error reply: that comes back as text, such as
// "MOVED 866 127.0.0.1:41234" or "ERR unknown command ...". A nil reply is "".
func (s *Server) CLI(args ...string) string {
	s.t.Helper()
	argv := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(s.port), "--no-auth-warning"}
	if s.pass != "" {
		argv = append(argv, "-a", s.pass)
	}
	argv = append(argv, args...)
	ctx, cancel := context.WithTimeout(context.Background(), cliLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "redis-cli", argv...)
	cmd.Env = cliEnv()
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("redistest: redis-cli %s against %s (%s): %v\nstdout: %s\nstderr: %s",
			strings.Join(args, " "), s.name, s.Addr(), err, stdout.String(), stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// cliEnv is the environment less REDISCLI_AUTH, which would make redis-cli
// authenticate against servers that have no password.
func cliEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REDISCLI_AUTH=") {
			env = append(env, kv)
		}
	}
	return env
}

// startServer makes the directory, picks a port and starts the instance,
// picking another port when the first was taken before the server bound it.
func startServer(t testing.TB, name string, m mode, extra []string) *Server {
	t.Helper()
	s := newServer(t, name, m, extra)
	for try := 1; ; try++ {
		s.port = freePort(t, m == modeCluster)
		if err := os.WriteFile(s.conf, []byte(s.config(extra)), 0o600); err != nil {
			t.Fatalf("redistest: %v", err)
		}
		err := s.boot()
		if err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) || try == portTries {
			t.Fatalf("redistest: starting %s on %s: %v", name, s.Addr(), err)
		}
	}
}

// newServer makes the instance's directory and registers its Kill.
func newServer(t testing.TB, name string, m mode, extra []string) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{
		t:    t,
		name: name,
		mode: m,
		dir:  dir,
		conf: filepath.Join(dir, "redis.conf"),
		log:  filepath.Join(dir, "redis.log"),
		pass: requirepass(extra),
	}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(s.Kill)
	return s
}

// config returns the instance's config file.
func (s *Server) config(extra []string) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("port %d", s.port)
	line("bind 127.0.0.1")
	line("dir %s", quote(s.dir))
	line("daemonize no")
	line(`logfile ""`)
	if s.mode != modeSentinel {
		line(`save ""`)
		line("appendonly no")
	}
	if s.mode == modeCluster {
		line("cluster-enabled yes")
		line("cluster-config-file nodes.conf")
		line("cluster-node-timeout 2000")
	}
	for _, e := range extra {
		line("%s", e)
	}
	return b.String()
}

// quote quotes a path for a Redis config file.
func quote(p string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(p) + `"`
}

// requirepass returns the password that a "requirepass" line sets, if any.
func requirepass(lines []string) string {
	pass := ""
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 2 && strings.EqualFold(f[0], "requirepass") {
			pass = strings.Trim(f[1], `"'`)
		}
	}
	return pass
}

// freePort returns a loopback port that was free a moment ago; with bus, one
// whose cluster bus port (port+10000) was free too.
func freePort(t testing.TB, bus bool) int {
	t.Helper()
	for range 200 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("redistest: no free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if bus {
			if port+10000 > 65535 {
				l.Close()
				continue
			}
			lb, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
			if err != nil {
				l.Close()
				continue
			}
			lb.Close()
		}
		l.Close()
		return port
	}
	t.Fatalf("redistest: found no port P with P+10000 free for a cluster bus")
	return 0
}

// errPortTaken: the server exited because its port was in use.
var errPortTaken = errors.New("port in use")

// boot starts the process with the config file as it stands and waits until
// it answers. On failure the process is gone and the error quotes its log.
func (s *Server) boot() error {
	logf, err := os.OpenFile(s.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	var logStart int64 // where this run's lines begin
	if fi, err := logf.Stat(); err == nil {
		logStart = fi.Size()
	}
	fmt.Fprintf(logf, "=== redistest: starting %s on %s at %s\n", s.name, s.Addr(), time.Now().Format(time.RFC3339Nano))
	args := []string{s.conf}
	if s.mode == modeSentinel {
		args = append(args, "--sentinel")
	}
	cmd := exec.Command("redis-server", args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := testproc.Start(cmd)
	logf.Close() // the child has its own copy
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.p = p
	s.mu.Unlock()

	if err := s.awaitUp(p); err != nil {
		s.Kill()
		// Redis 7.0 logs "Could not create server TCP listening socket
		// 127.0.0.1:P: bind: Address already in use", for the bus port too.
		taken := false
		if log := s.logText(); int64(len(log)) > logStart {
			taken = strings.Contains(log[logStart:], "Address already in use")
		}
		err = fmt.Errorf("%w%s", err, s.logTail())
		if taken {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return err
	}
	return nil
}

// awaitUp waits until the server on s.Addr() reports p's pid.
func (s *Server) awaitUp(p *testproc.Proc) error {
	want := strconv.Itoa(p.Pid())
	deadline := time.Now().Add(upLimit)
	var last error
	for {
		select {
		case <-p.Done:
			return fmt.Errorf("redis-server exited: %v", p.Err)
		default:
		}
		// A short limit: something else that holds the port may never
		// answer, and the process exiting is to be seen soon.
		v, err := callWithin(500*time.Millisecond, s.Addr(), s.pass, "INFO", "server")
		reply, _ := v.(string)
		pid := infoField(reply, "process_id")
		switch {
		case err != nil:
			last = err
		case pid == want:
			return nil
		default:
			last = fmt.Errorf("pid %s, not ours (%s), answers there", pid, want)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not answering after %v: %v", upLimit, last)
		}
		time.Sleep(pollEvery)
	}
}

// running reports whether the server process is up (it was not killed).
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p != nil
}

func (s *Server) logText() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// logTail returns the last lines of the server's log, for a failure message.
func (s *Server) logTail() string {
	lines := strings.Split(strings.TrimRight(s.logText(), "\n"), "\n")
	if len(lines) > logTailLen {
		lines = lines[len(lines)-logTailLen:]
	}
	return fmt.Sprintf("\n--- %s (%s), last lines of %s ---\n%s", s.name, s.Addr(), s.log, strings.Join(lines, "\n"))
}

// waitFor polls cond until it holds, or fails t after limit with the last
// status cond gave and the tail of every log in logs.
func waitFor(t testing.TB, limit time.Duration, what string, logs []*Server, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, status := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var tails strings.Builder
			for _, s := range logs {
				tails.WriteString(s.logTail())
			}
			t.Fatalf("redistest: %s: not after %v; last seen: %s%s", what, limit, status, tails.String())
		}
		time.Sleep(pollEvery)
	}
}
