package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// calloutdBin is the calloutd binary TestMain builds, in a directory every
// user may read, so spawn(8) can run it as nobody.
var calloutdBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "calloutd-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	calloutdBin = filepath.Join(dir, "calloutd")
	// go test puts its own go first in PATH.
	build := exec.Command("go", "build", "-o", calloutdBin, "github.com/calloutd/calloutd/cmd/calloutd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building calloutd:", err)
		return 1
	}
	return m.Run()
}

// suite is one run's environment: a temporary directory that holds every
// instance, and the accounts the processes run as.
type suite struct {
	top     string // everything lives below it; removed at the end
	postfix string // the postfix command
	swaks   string
	// calloutd runs as nobody, as a dedicated account would: never as root.
	nobodyUID, nogroupGID  int
	postfixUID, postfixGID int // mail_owner, and the group of the Postfix processes
}

// newSuite checks that real Postfix can run here and prepares the temporary
// directory. Without root, postfix or swaks the test is skipped, or fails
// under CI=true.
func newSuite(t testing.TB) *suite {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root privileges (Postfix instances start as root)")
	}
	s := &suite{postfix: lookPath("postfix"), swaks: lookPath("swaks")}
	if s.postfix == "" {
		missing = append(missing, "postfix")
	}
	if s.swaks == "" {
		missing = append(missing, "swaks")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		missing = append(missing, "user nobody")
	}
	pf, err := user.Lookup("postfix")
	if err != nil {
		missing = append(missing, "user postfix")
	}
	if len(missing) > 0 {
		msg := "end-to-end tests against real Postfix need " + strings.Join(missing, ", ") +
			`; "make test" as root on Debian installs postfix and swaks (see .ci/deps and docs/postfix.md)`
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("\n\n*** SKIPPED: " + msg + " ***\n")
	}
	s.nobodyUID, _ = strconv.Atoi(nobody.Uid)
	s.nogroupGID, _ = strconv.Atoi(nobody.Gid)
	s.postfixUID, _ = strconv.Atoi(pf.Uid)
	s.postfixGID, _ = strconv.Atoi(pf.Gid)

	s.top, err = os.MkdirTemp("", "calloutd-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	// Postfix daemons and calloutd (as nobody) must reach their files.
	if err := os.Chmod(s.top, 0o755); err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs last: after every instance and daemon
	// registered later has been stopped.
	t.Cleanup(func() {
		s.reapStragglers(t)
		if os.Getenv("CALLOUTD_E2E_KEEP") != "" {
			t.Logf("CALLOUTD_E2E_KEEP is set: logs and configuration kept in %s", s.top)
			return
		}
		if err := os.RemoveAll(s.top); err != nil {
			t.Errorf("removing %s: %v", s.top, err)
		}
	})
	return s
}

// lookPath finds a program in PATH or in the sbin directories a non-login
// root shell may lack.
func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// mkdir creates dir (and parents) with mode and owner.
func mkdir(t testing.TB, dir string, mode os.FileMode, uid, gid int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	// After Chown, which clears the setgid bit.
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}

// freePort returns a loopback TCP port nobody listens on now and that this
// run has not handed out before (the kernel may offer a port again once it
// is closed). Another process could take it before we bind it; with ports
// from the kernel's ephemeral range that is rare enough for tests, and
// parallel runs of the suite get different ports.
func freePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !portsGiven[port] {
			portsGiven[port] = true
			return port
		}
	}
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// reapStragglers fails the test if any process that mentions the suite's
// directory on its command line (calloutd daemons, calloutd children of
// spawn) outlived the cleanups, and kills it.
func (s *suite) reapStragglers(t testing.TB) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := processesMentioning(s.top)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for pid, cmdline := range left {
				t.Errorf("process %d still running after the suite: %s", pid, cmdline)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processesMentioning returns the processes whose command line contains s.
func processesMentioning(s string) map[int]string {
	found := map[int]string{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmdline := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
		if strings.Contains(cmdline, s) {
			found[pid] = cmdline
		}
	}
	return found
}

// descendants returns pid's children, their children and so on.
func descendants(pid int) []int {
	children := map[int][]int{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		p, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain anything but ends
		// at the last ')'.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], p)
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			out = append(out, c)
			walk(c)
		}
	}
	walk(pid)
	return out
}

// alive tells whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
	f := strings.Fields(rest)
	return len(f) > 0 && f[0] != "Z"
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
