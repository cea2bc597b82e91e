package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// session is an SMTP client session with the front that logs every command
// and reply, so "go test -v" shows what a sender would see.
type session struct {
	t    *testing.T
	name string
	c    net.Conn
	r    *textproto.Reader
}

// dialSMTP connects to 127.0.0.1:port and reads the greeting.
func dialSMTP(t *testing.T, name string, port int) *session {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	s := &session{t: t, name: name, c: c, r: textproto.NewReader(bufio.NewReader(c))}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	greeting, err := s.reply()
	if err != nil || !strings.HasPrefix(greeting, "220 ") {
		t.Fatalf("%s: greeting %q, %v", name, greeting, err)
	}
	return s
}

// cmd sends line and returns the reply (lines joined by "\n") and how long
// it took to arrive.
func (s *session) cmd(line string) (string, time.Duration) {
	s.t.Helper()
	// Above the snippets' policy timeout, so a hang shows as a wrong
	// reply rather than a stuck test.
	_ = s.c.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	if _, err := fmt.Fprintf(s.c, "%s\r\n", line); err != nil {
		s.t.Fatalf("%s: sending %q: %v", s.name, line, err)
	}
	rep, err := s.reply()
	d := time.Since(start)
	if err != nil {
		s.t.Fatalf("%s: reply to %q: %v", s.name, line, err)
	}
	s.t.Logf("%s: C: %s", s.name, line)
	s.t.Logf("%s: S: %s   (%v)", s.name, strings.ReplaceAll(rep, "\n", "\n    S: "), d.Round(time.Millisecond))
	return rep, d
}

// expect sends line and fails the test unless the reply is exactly want.
func (s *session) expect(line, want string) time.Duration {
	s.t.Helper()
	got, d := s.cmd(line)
	if got != want {
		s.t.Errorf("%s: %s\n got: %s\nwant: %s", s.name, line, got, want)
	}
	return d
}

// expectCode sends line and fails the test unless the reply has code.
func (s *session) expectCode(line string, code int) {
	s.t.Helper()
	got, _ := s.cmd(line)
	if !strings.HasPrefix(got, fmt.Sprintf("%d ", code)) && !strings.HasPrefix(got, fmt.Sprintf("%d-", code)) {
		s.t.Fatalf("%s: %s: got %q, want %d", s.name, line, got, code)
	}
}

// begin says EHLO and starts a transaction.
func (s *session) begin() {
	s.t.Helper()
	s.expectCode("EHLO client.e2e.test", 250)
	s.expect("MAIL FROM:<sender@client.e2e.test>", "250 2.1.0 Ok")
}

func (s *session) quit() {
	s.t.Helper()
	s.expect("QUIT", "221 2.0.0 Bye")
	s.c.Close()
}

// reply reads one reply, all its lines.
func (s *session) reply() (string, error) {
	var lines []string
	for {
		line, err := s.r.ReadLine()
		if err != nil {
			return strings.Join(lines, "\n"), err
		}
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n"), nil
		}
	}
}
