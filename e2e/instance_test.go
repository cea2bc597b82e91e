package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// instance is one Postfix instance with a directory of its own:
//
//	etc/        main.cf, master.cf (postfix -c etc/)
//	queue/      queue_directory; also where smtpd runs and resolves
//	            relative policy socket names
//	data/       data_directory (master.lock)
//	log/maillog maillog_file (postlogd; no syslog needed)
type instance struct {
	s    *suite
	name string
	dir  string
	port int // smtpd on 127.0.0.1

	mu        sync.Mutex
	masterPID int // 0 when not running
}

// instanceData fills the templates in testdata/.
type instanceData struct {
	Name, Dir        string
	Port             int // smtpd
	BackendPort      int // the backend's smtpd, for the front's transport
	HungPort         int // a server that never answers (hung.test)
	Mailboxes        string
	MailUID, MailGID int
	Snippet          string // contrib/postfix file appended to main.cf
}

// newInstance writes an instance's configuration: testdata/mainTmpl then
// mainExtra as main.cf, testdata/master.cf then masterExtra as master.cf.
// It is stopped when the test ends.
func (s *suite) newInstance(t testing.TB, mainTmpl string, d instanceData, mainExtra, masterExtra string) *instance {
	t.Helper()
	in := &instance{s: s, name: d.Name, dir: filepath.Join(s.top, d.Name), port: d.Port}
	d.Dir = in.dir
	mkdir(t, in.dir, 0o755, 0, 0)
	mkdir(t, in.path("etc"), 0o755, 0, 0)
	mkdir(t, in.path("queue"), 0o755, 0, 0) // postfix start makes the rest
	mkdir(t, in.path("data"), 0o700, s.postfixUID, s.postfixGID)
	mkdir(t, in.path("log"), 0o755, 0, 0)
	writeFile(t, in.path("etc/main.cf"), render(t, mainTmpl, d)+mainExtra, 0o644)
	writeFile(t, in.path("etc/master.cf"), render(t, "master.cf", d)+masterExtra, 0o644)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s: last lines of %s:\n%s", in.name, in.path("log/maillog"), tail(in.path("log/maillog"), 40))
		}
		in.stop(t)
	})
	return in
}

func (in *instance) path(rel string) string { return filepath.Join(in.dir, rel) }

func (in *instance) maillog() string {
	b, _ := os.ReadFile(in.path("log/maillog"))
	return string(b)
}

// postfixCmd runs "postfix -c etc/ args..." and returns its output.
func (in *instance) postfixCmd(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, in.s.postfix, append([]string{"-c", in.path("etc")}, args...)...)
	cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// start runs "postfix -c etc/ start", which checks the instance, creates its
// queue directories, and returns once master has daemonized.
func (in *instance) start() error {
	out, err := in.postfixCmd("start")
	if err != nil {
		return fmt.Errorf("%s: postfix start: %v\n%s\nmaillog:\n%s", in.name, err, out, tail(in.path("log/maillog"), 20))
	}
	b, err := os.ReadFile(in.path("queue/pid/master.pid"))
	if err != nil {
		return fmt.Errorf("%s: %v", in.name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("%s: master.pid: %v", in.name, err)
	}
	in.mu.Lock()
	in.masterPID = pid
	in.mu.Unlock()
	return nil
}

// startAll starts instances at once: "postfix start" spends a second or two
// checking each one.
func startAll(t testing.TB, ins ...*instance) {
	t.Helper()
	errs := make([]error, len(ins))
	var wg sync.WaitGroup
	for i, in := range ins {
		wg.Go(func() { errs[i] = in.start() })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// stop runs "postfix -c etc/ stop" and waits for master and every process
// below it to exit; any left after 10s is killed and fails the test.
func (in *instance) stop(t testing.TB) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.masterPID == 0 {
		return
	}
	procs := append([]int{in.masterPID}, descendants(in.masterPID)...)
	if out, err := in.postfixCmd("stop"); err != nil {
		t.Errorf("%s: postfix stop: %v\n%s", in.name, err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range procs {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("%s: process %d still running after postfix stop; killing it", in.name, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	in.masterPID = 0
}

// render executes the template testdata/name.
func render(t testing.TB, name string, data any) string {
	t.Helper()
	tmpl, err := template.ParseFiles(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.Option("missingkey=error")
	var b bytes.Buffer
	if err := tmpl.Execute(&b, data); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// snippet returns contrib/postfix/name with each old string replaced by its
// new one (pairs). Every old string must be there: if the snippet changes,
// the suite must change with it rather than test something else.
func snippet(t testing.TB, name string, oldnew ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "contrib", "postfix", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(oldnew); i += 2 {
		if !strings.Contains(s, oldnew[i]) {
			t.Fatalf("contrib/postfix/%s no longer contains %q, which the suite replaces; update e2e/ with the snippet", name, oldnew[i])
		}
		s = strings.ReplaceAll(s, oldnew[i], oldnew[i+1])
	}
	return s
}

func writeFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}
