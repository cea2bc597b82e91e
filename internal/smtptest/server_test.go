package smtptest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// client is a raw SMTP client that checks the server's exact bytes.
type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, s *Server) *client {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

// reply reads one whole reply, line endings included.
func (c *client) reply() string {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	for {
		line, err := c.br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			c.t.Fatalf("reading reply: got %q so far, error %v", b.String(), err)
		}
		if len(line) < 4 || line[3] != '-' {
			return b.String()
		}
	}
}

func (c *client) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, line+"\r\n"); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

// expect sends cmd and checks the reply's exact bytes.
func (c *client) expect(cmd, want string) {
	c.t.Helper()
	c.send(cmd)
	if got := c.reply(); got != want {
		c.t.Errorf("%s: got reply %q, want %q", cmd, got, want)
	}
}

// expectNothing checks that the server sends nothing for a while. It cannot
// fail spuriously: a slow machine only makes it check less.
func (c *client) expectNothing() {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	b := make([]byte, 1)
	n, err := c.br.Read(b)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		c.t.Errorf("got %q, %v; want silence", b[:n], err)
	}
}

// expectEOF checks that the server closed the connection.
func (c *client) expectEOF() {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(c.br)
	if err != nil || len(rest) > 0 {
		c.t.Errorf("got %q, %v; want the connection closed", rest, err)
	}
}

func checkLines(t *testing.T, s *Server, want ...string) {
	t.Helper()
	if !s.WaitIdle(10 * time.Second) {
		t.Fatalf("sessions still open")
	}
	if got := s.Lines(); !slices.Equal(got, want) {
		t.Errorf("server received\n%q\nwant\n%q", got, want)
	}
}

func TestDefaultDialogue(t *testing.T) {
	s := NewServer(t, Behavior{})
	c := dial(t, s)
	if got, want := c.reply(), "220 smtptest ESMTP\r\n"; got != want {
		t.Errorf("greeting: got %q, want %q", got, want)
	}
	c.expect("EHLO gw.test", "250-smtptest\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
	c.expect("HELO gw.test", "250 smtptest\r\n")
	c.expect("MAIL FROM:<>", "250 2.1.0 Ok\r\n")
	c.expect("rcpt to:<bob@example.test>", "250 2.1.5 Ok\r\n")
	c.expect("RCPT TO:bob@example.test", "501 5.5.4 Syntax: RCPT TO:<address>\r\n")
	c.expect("RSET", "250 2.0.0 Ok\r\n")
	c.expect("NOOP", "250 2.0.0 Ok\r\n")
	c.expect("VRFY bob", "502 5.5.2 Error: command not recognized\r\n")
	c.expect("DATA", "502 5.5.2 Error: command not recognized\r\n")
	c.expect("", "500 5.5.2 Error: bad syntax\r\n")
	c.expect("QUIT", "221 2.0.0 Bye\r\n")
	c.expectEOF()

	checkLines(t, s, "EHLO gw.test", "HELO gw.test", "MAIL FROM:<>", "rcpt to:<bob@example.test>",
		"RCPT TO:bob@example.test", "RSET", "NOOP", "VRFY bob", "DATA", "", "QUIT")
	for verb, want := range map[string]int{"rcpt": 2, "RCPT": 2, "Mail": 1, "QUIT": 1, "DATA": 1, "STARTTLS": 0} {
		if got := s.Count(verb); got != want {
			t.Errorf("Count(%q) = %d, want %d", verb, got, want)
		}
	}
	if got := s.Sessions(); got != 1 {
		t.Errorf("Sessions() = %d, want 1", got)
	}
}

func TestBareLF(t *testing.T) {
	s := NewServer(t, Behavior{})
	c := dial(t, s)
	c.reply()
	if _, err := io.WriteString(c.c, "NOOP\nQUIT\n"); err != nil {
		t.Fatal(err)
	}
	if got, want := c.reply()+c.reply(), "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	checkLines(t, s, "NOOP", "QUIT")
}

func TestScriptedReplies(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	s := NewServer(t, Behavior{
		Greeting: "220-smtptest.example ESMTP\r\n220 hello",
		EHLO:     "250 smtptest.example",
		HELO:     "250 hi",
		Mail:     "250 2.1.0 Sender ok",
		Rcpt: func(addr string) string {
			mu.Lock()
			asked = append(asked, addr)
			mu.Unlock()
			return "450 4.2.0 <" + addr + ">: Recipient address rejected: Greylisted"
		},
	})
	c := dial(t, s)
	if got, want := c.reply(), "220-smtptest.example ESMTP\r\n220 hello\r\n"; got != want {
		t.Errorf("greeting: got %q, want %q", got, want)
	}
	c.expect("EHLO a", "250 smtptest.example\r\n")
	c.expect("HELO a", "250 hi\r\n")
	c.expect("MAIL FROM:<>", "250 2.1.0 Sender ok\r\n")
	c.expect(`RCPT TO:<"john doe"@example.test> NOTIFY=NEVER`,
		"450 4.2.0 <\"john doe\"@example.test>: Recipient address rejected: Greylisted\r\n")
	c.expect("RCPT TO:<>", "450 4.2.0 <>: Recipient address rejected: Greylisted\r\n")
	mu.Lock()
	defer mu.Unlock()
	if want := []string{`"john doe"@example.test`, ""}; !slices.Equal(asked, want) {
		t.Errorf("Rcpt saw %q, want %q", asked, want)
	}
}

func TestUsers(t *testing.T) {
	rcpt := Users("alice@example.test", "Bob@Example.TEST", `"john doe"@example.test`)
	for _, tc := range []struct{ addr, want string }{
		{"alice@example.test", "250 2.1.5 Ok"},
		{"ALICE@example.test", "250 2.1.5 Ok"},
		{"bob@example.test", "250 2.1.5 Ok"},
		{`"john doe"@example.test`, "250 2.1.5 Ok"},
		{"john doe@example.test", "550 5.1.1 <john doe@example.test>: Recipient address rejected: User unknown in local recipient table"},
		{"nobody@example.test", "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in local recipient table"},
		{"alice@example.test.", "550 5.1.1 <alice@example.test.>: Recipient address rejected: User unknown in local recipient table"},
	} {
		if got := rcpt(tc.addr); got != tc.want {
			t.Errorf("Users(...)(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

func TestLineLimit(t *testing.T) {
	s := NewServer(t, Behavior{})
	c := dial(t, s)
	c.reply()
	atLimit := "NOOP " + strings.Repeat("x", MaxLine-len("NOOP ")-2) // + CRLF = 1000
	c.expect(atLimit, "250 2.0.0 Ok\r\n")
	c.expect(atLimit+"x", "500 5.5.2 Error: line too long\r\n")
	c.expect("NOOP "+strings.Repeat("y", 10*MaxLine), "500 5.5.2 Error: line too long\r\n")
	c.expect("QUIT", "221 2.0.0 Bye\r\n")
	checkLines(t, s, atLimit, "QUIT")
}

func TestSilent(t *testing.T) {
	for _, tc := range []struct {
		verb string
		dial []string // commands answered before the silence
	}{
		{"GREETING", nil},
		{"ehlo", []string{"greeting"}},
		{"RCPT", []string{"greeting", "EHLO a", "MAIL FROM:<>"}},
		{"QUIT", []string{"greeting", "EHLO a", "MAIL FROM:<>", "RCPT TO:<a@b>"}},
	} {
		t.Run(tc.verb, func(t *testing.T) {
			s := NewServer(t, Behavior{Silent: tc.verb})
			c := dial(t, s)
			var sent []string
			for _, cmd := range tc.dial {
				if cmd != "greeting" {
					c.send(cmd)
					sent = append(sent, cmd)
				}
				c.reply()
			}
			if tc.verb != "GREETING" {
				verb := strings.ToUpper(tc.verb)
				cmd := map[string]string{"EHLO": "EHLO a", "RCPT": "RCPT TO:<a@b>", "QUIT": "QUIT"}[verb]
				c.send(cmd)
				sent = append(sent, cmd)
			}
			c.expectNothing()
			// Still silent, still listening.
			c.send("NOOP")
			sent = append(sent, "NOOP")
			c.expectNothing()
			c.c.Close()
			checkLines(t, s, sent...)
		})
	}
}

func TestSilentUntilClose(t *testing.T) {
	s := NewServer(t, Behavior{Silent: "GREETING"})
	c := dial(t, s)
	c.expectNothing()
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with a silent session open")
	}
	c.expectEOF()
}

func TestDrop(t *testing.T) {
	t.Run("GREETING", func(t *testing.T) {
		s := NewServer(t, Behavior{Drop: "GREETING"})
		c := dial(t, s)
		c.expectEOF()
		checkLines(t, s)
	})
	t.Run("MAIL", func(t *testing.T) {
		s := NewServer(t, Behavior{Drop: "mail"})
		c := dial(t, s)
		c.reply()
		c.expect("EHLO a", "250-smtptest\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
		c.send("MAIL FROM:<>")
		c.expectEOF()
		checkLines(t, s, "EHLO a", "MAIL FROM:<>")
	})
	t.Run("QUIT", func(t *testing.T) {
		s := NewServer(t, Behavior{Drop: "QUIT"})
		c := dial(t, s)
		c.reply()
		c.send("QUIT")
		c.expectEOF()
		checkLines(t, s, "QUIT")
	})
}

func TestRaw(t *testing.T) {
	s := NewServer(t, Behavior{Raw: map[string]string{
		"greeting": "220 raw\r\n",
		"RCPT":     "garbage\r\n",
		"Noop":     "250-no end\r\n",
		"QUIT":     "221 raw bye\r\n",
	}})
	c := dial(t, s)
	if got, want := c.reply(), "220 raw\r\n"; got != want {
		t.Errorf("greeting: got %q, want %q", got, want)
	}
	c.send("RCPT TO:<a@b>")
	if line, _ := c.br.ReadString('\n'); line != "garbage\r\n" {
		t.Errorf("RCPT: got %q, want garbage", line)
	}
	c.send("NOOP")
	if line, _ := c.br.ReadString('\n'); line != "250-no end\r\n" {
		t.Errorf("NOOP: got %q, want 250-no end", line)
	}
	c.expectNothing()
	c.expect("QUIT", "221 raw bye\r\n")
	c.expectEOF()
}

func Test421EndsSession(t *testing.T) {
	for _, b := range []Behavior{
		{Greeting: "421 4.3.2 Service shutting down"},
		{Mail: "421-4.3.2 Service\r\n421 4.3.2 shutting down"},
		{Rcpt: func(string) string { return "421 4.4.2 Timeout" }},
	} {
		s := NewServer(t, b)
		c := dial(t, s)
		for _, cmd := range []string{"", "MAIL FROM:<>", "RCPT TO:<a@b>"} {
			if cmd != "" {
				c.send(cmd)
			}
			if rep := c.reply(); strings.HasPrefix(rep, "421") {
				break
			}
		}
		c.expectEOF()
	}
}

func TestDelay(t *testing.T) {
	const d = 50 * time.Millisecond
	s := NewServer(t, Behavior{Delay: d})
	start := time.Now()
	c := dial(t, s)
	c.reply()
	c.expect("NOOP", "250 2.0.0 Ok\r\n")
	if el := time.Since(start); el < 2*d {
		t.Errorf("two replies took %v, want at least %v", el, 2*d)
	}

	// A long delay does not hold up Close.
	s = NewServer(t, Behavior{Delay: time.Hour})
	dial(t, s)
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a delayed reply")
	}
}

func TestConcurrentSessions(t *testing.T) {
	s := NewServer(t, Behavior{Rcpt: Users("a@example.test")})
	const n = 20
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			c, err := net.Dial("tcp", s.Addr())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			_, _ = br.ReadString('\n')
			_, _ = io.WriteString(c, "RCPT TO:<a@example.test>\r\nQUIT\r\n")
			got, _ := io.ReadAll(br)
			if want := "250 2.1.5 Ok\r\n221 2.0.0 Bye\r\n"; string(got) != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
	wg.Wait()
	if !s.WaitIdle(10 * time.Second) {
		t.Fatal("sessions still open")
	}
	if got := s.Sessions(); got != n {
		t.Errorf("Sessions() = %d, want %d", got, n)
	}
	if got := s.Count("RCPT"); got != n {
		t.Errorf("Count(RCPT) = %d, want %d", got, n)
	}
	if got := len(s.Lines()); got != 2*n {
		t.Errorf("%d lines recorded, want %d", got, 2*n)
	}
}

func TestMaxSessions(t *testing.T) {
	s := NewServer(t, Behavior{})
	conns := make([]*client, MaxSessions)
	for i := range conns {
		conns[i] = dial(t, s)
		conns[i].reply()
	}
	extra := dial(t, s) // in the backlog, not served
	extra.expectNothing()
	conns[0].c.Close()
	if got, want := extra.reply(), "220 smtptest ESMTP\r\n"; got != want {
		t.Errorf("greeting after a slot freed: got %q, want %q", got, want)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	s := NewServer(t, Behavior{Silent: "RCPT", Delay: time.Millisecond})
	for range 5 {
		c := dial(t, s)
		c.reply()
		c.send("RCPT TO:<a@b>")
	}
	dropped := dial(t, s)
	dropped.c.Close()
	s.Close()
	s.Close() // idempotent
	var after int
	for range 500 {
		if after = runtime.NumGoroutine(); after <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Errorf("%d goroutines before, %d after Close:\n%s", before, after, buf[:runtime.Stack(buf, true)])
}

func TestAddr(t *testing.T) {
	s := NewServer(t, Behavior{})
	host, _, err := net.SplitHostPort(s.Addr())
	if err != nil || host != "127.0.0.1" {
		t.Errorf("Addr() = %q, want 127.0.0.1:port", s.Addr())
	}
}

// TestStartOnCommand serves a listener the caller made, as the demo backend
// does, and sees every command line through OnCommand before its reply.
func TestStartOnCommand(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	s := Start(ln, Behavior{Rcpt: Users("a@b.test"), OnCommand: func(line string) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, line)
	}})
	defer s.Close()
	if s.Addr() != ln.Addr().String() {
		t.Errorf("Addr() = %q, want the listener's %q", s.Addr(), ln.Addr())
	}
	c := dial(t, s)
	c.reply()
	c.expect("EHLO gw.test", DefaultEHLO+"\r\n")
	c.expect("RCPT TO:<a@b.test>", "250 2.1.5 Ok\r\n")
	mu.Lock()
	got := slices.Clone(seen)
	mu.Unlock()
	if want := []string{"EHLO gw.test", "RCPT TO:<a@b.test>"}; !slices.Equal(got, want) {
		t.Errorf("OnCommand saw %q, want %q", got, want)
	}
	s.Close()
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Errorf("Close left %s listening", ln.Addr())
	}
}
