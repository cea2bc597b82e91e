package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer the backend writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "calloutd.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// freePort returns a loopback port nobody listened on a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestBackend runs the backend on a route's server and talks to it with
// net/smtp: the mailboxes of -users are accepted, anyone else gets
// Postfix's 550 5.1.1, and every command is printed.
func TestBackend(t *testing.T) {
	addr := freePort(t)
	path := writeConfig(t, `
[[route]]
name = "main"
domains = [".example.test", "example.test"]
servers = ["`+addr+`"]
`)
	var stdout, stderr syncBuffer
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		done <- run([]string{"-config", path, "-users", "alice, bob@other.test"}, &stdout, &stderr, stop)
	}()
	ready := "demo backend: listening on " + addr + " for route main (.example.test, example.test); mailboxes alice@example.test, bob@other.test\n"
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stdout.String(), ready); {
		if time.Now().After(deadline) {
			t.Fatalf("no ready line %q within 10 s; stdout %q, stderr %q", ready, stdout.String(), stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}

	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("gw.example.net"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(""); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ rcpt, err string }{
		{"alice@example.test", ""},
		{"ALICE@example.test", ""},
		{"bob@other.test", ""},
		{"bob@example.test", "550 5.1.1 <bob@example.test>: Recipient address rejected: User unknown in local recipient table"},
	} {
		got := ""
		if err := c.Rcpt(tt.rcpt); err != nil {
			var te *textproto.Error
			if !errors.As(err, &te) {
				t.Fatalf("RCPT TO:<%s>: %v", tt.rcpt, err)
			}
			got = fmt.Sprintf("%d %s", te.Code, te.Msg)
		}
		if got != tt.err {
			t.Errorf("RCPT TO:<%s>: got error %q, want %q", tt.rcpt, got, tt.err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Errorf("QUIT: %v", err)
	}
	close(stop)
	if code := <-done; code != 0 {
		t.Errorf("exit %d, want 0; stderr %q", code, stderr.String())
	}
	want := ready + `backend ← EHLO gw.example.net
backend ← MAIL FROM:<> BODY=8BITMIME
backend ← RCPT TO:<alice@example.test>
backend → 250 2.1.5 Ok
backend ← RCPT TO:<ALICE@example.test>
backend → 250 2.1.5 Ok
backend ← RCPT TO:<bob@other.test>
backend → 250 2.1.5 Ok
backend ← RCPT TO:<bob@example.test>
backend → 550 5.1.1 <bob@example.test>: Recipient address rejected: User unknown in local recipient table
backend ← QUIT
demo backend: stopped
`
	if got := stdout.String(); got != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", got, want)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Errorf("%s still accepts connections after the backend stopped", addr)
	}
}

// TestBackendRefuses checks the errors a newcomer may meet: a busy port, a
// first route that is not on this machine or not SMTP, a missing file.
func TestBackendRefuses(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	route := func(servers string) string {
		return "[[route]]\nname = \"main\"\ndomains = [\"example.test\"]\nservers = [" + servers + "]\n"
	}
	tests := []struct {
		name   string
		config string
		code   int
		err    string
	}{
		{"busy port", route(`"` + busy.Addr().String() + `"`), 1,
			"demo backend: listen tcp " + busy.Addr().String() + ": bind: address already in use (is another demo, or a mail server, using that port?)\n"},
		{"not loopback", route(`"192.0.2.5"`), 2,
			`route main: server "192.0.2.5:25" is not a loopback address; the demo backend listens only on this machine`},
		{"host name", route(`"localhost:2526"`), 2, `server "localhost:2526" is not a loopback address`},
		{"no route", "", 2, "no [[route]]: nothing to play the backend of\n"},
		{"ldap first", "[[route]]\nname = \"dir\"\ndomains = [\"example.test\"]\nkind = \"ldap\"\nldap_urls = [\"ldap://127.0.0.1:389\"]\nldap_base_dn = \"dc=example,dc=test\"\n", 2,
			`route dir searches a directory (kind = "ldap"); the demo backend plays an SMTP route`},
	}
	for _, tt := range tests {
		var stdout, stderr syncBuffer
		code := run([]string{"-config", writeConfig(t, tt.config)}, &stdout, &stderr, nil)
		if code != tt.code || !strings.Contains(stderr.String(), tt.err) || stdout.String() != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d, no stdout, stderr containing %q",
				tt.name, code, stdout.String(), stderr.String(), tt.code, tt.err)
		}
	}
	var stdout, stderr syncBuffer
	if code := run([]string{"-config", "/nonexistent/calloutd.toml"}, &stdout, &stderr, nil); code != 2 ||
		!strings.Contains(stderr.String(), "/nonexistent/calloutd.toml") {
		t.Errorf("missing file: exit %d, stderr %q; want 2 and the path", code, stderr.String())
	}
}
