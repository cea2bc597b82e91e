package callout

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/smtptest"
)

// Generous bounds: a test fails on them only when something hangs, never
// because a machine is slow.
const (
	testTimeout = 5 * time.Second        // CommandTimeout when the test does not wait on it
	shortWait   = 300 * time.Millisecond // a wait the test means to run out
	hangBound   = 20 * time.Second       // "returned at all", for waits that should end far sooner
	// budget is a context deadline that a few loopback exchanges must fit
	// in before the wait the test means to run out.
	budget = time.Second
)

const unknownText = "<nobody@example.test>: Recipient address rejected: User unknown in local recipient table"

func newClient() *Client {
	return &Client{Settings: Settings{HeloName: "gw.test", ConnectTimeout: testTimeout, CommandTimeout: testTimeout}}
}

func mustParse(t testing.TB, s string) Address {
	t.Helper()
	a, err := ParseAddress(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// checkLines compares what srv received with want, once every client has
// gone, so that a command written just before a close is not missed.
func checkLines(t *testing.T, srv *smtptest.Server, want ...string) {
	t.Helper()
	if !srv.WaitIdle(hangBound) {
		t.Fatalf("the client left a session open")
	}
	if got := srv.Lines(); !slices.Equal(got, want) {
		t.Errorf("server received\n\t%q\nwant\n\t%q", got, want)
	}
}

// closedAddr returns an address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

var dialogue = []string{"EHLO gw.test", "MAIL FROM:<>", "RCPT TO:<bob@example.test>", "QUIT"}

func TestProbe(t *testing.T) {
	rcptReply := func(reply string) func(string) string { return func(string) string { return reply } }
	tests := []struct {
		name    string
		b       smtptest.Behavior
		cmdWait time.Duration // CommandTimeout; default testTimeout
		rcpt    string        // default bob@example.test
		// A verdict and the reply that decided it, or an *Error.
		verdict  Verdict
		code     int
		enhanced string
		text     string
		stage    Stage
		command  string
		reason   string
		lines    []string
	}{
		{name: "valid", b: smtptest.Behavior{Rcpt: smtptest.Users("bob@example.test")},
			verdict: Valid, code: 250, enhanced: "2.1.5", text: "Ok", lines: dialogue},
		{name: "valid any case", b: smtptest.Behavior{Rcpt: smtptest.Users("BOB@example.test")},
			verdict: Valid, code: 250, enhanced: "2.1.5", text: "Ok", lines: dialogue},
		{name: "unknown", b: smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")}, rcpt: "nobody@example.test",
			verdict: Unknown, code: 550, enhanced: "5.1.1", text: unknownText,
			lines: []string{"EHLO gw.test", "MAIL FROM:<>", "RCPT TO:<nobody@example.test>", "QUIT"}},
		{name: "unknown without enhanced code", b: smtptest.Behavior{Rcpt: rcptReply("550 No such user here")},
			verdict: Unknown, code: 550, text: "No such user here", lines: dialogue},
		{name: "unknown multi-line", b: smtptest.Behavior{Rcpt: rcptReply("550-5.1.1 The email account that you tried to reach does not exist.\r\n550 5.1.1 Please try again.")},
			verdict: Unknown, code: 550, enhanced: "5.1.1", text: "The email account that you tried to reach does not exist. Please try again.", lines: dialogue},
		{name: "greylisted", b: smtptest.Behavior{Rcpt: rcptReply("450 4.2.0 <bob@example.test>: Recipient address rejected: Greylisted")},
			verdict: TempFail, code: 450, enhanced: "4.2.0", text: "<bob@example.test>: Recipient address rejected: Greylisted", lines: dialogue},
		{name: "backend lookup failure", b: smtptest.Behavior{Rcpt: rcptReply("451 4.3.0 <bob@example.test>: Temporary lookup failure")},
			verdict: TempFail, code: 451, enhanced: "4.3.0", text: "<bob@example.test>: Temporary lookup failure", lines: dialogue},
		{name: "multi-line greeting", b: smtptest.Behavior{Greeting: "220-mx.example.test ESMTP\r\n220-we verify\r\n220 welcome"},
			verdict: Valid, code: 250, enhanced: "2.1.5", text: "Ok", lines: dialogue},
		{name: "slow but in time", b: smtptest.Behavior{Delay: 10 * time.Millisecond},
			verdict: Valid, code: 250, enhanced: "2.1.5", text: "Ok", lines: dialogue},
		{name: "EHLO refused, HELO", b: smtptest.Behavior{EHLO: "502 5.5.2 Error: command not recognized"},
			verdict: Valid, code: 250, enhanced: "2.1.5", text: "Ok",
			lines: []string{"EHLO gw.test", "HELO gw.test", "MAIL FROM:<>", "RCPT TO:<bob@example.test>", "QUIT"}},
		{name: "silent at QUIT", b: smtptest.Behavior{Silent: "QUIT"},
			verdict: Valid, code: 250, enhanced: "2.1.5", text: "Ok", lines: dialogue},
		{name: "dropped at QUIT", b: smtptest.Behavior{Drop: "QUIT"},
			verdict: Valid, code: 250, enhanced: "2.1.5", text: "Ok", lines: dialogue},
		{name: "garbage at QUIT", b: smtptest.Behavior{Raw: map[string]string{"QUIT": "garbage\r\n"}},
			verdict: Valid, code: 250, enhanced: "2.1.5", text: "Ok", lines: dialogue},

		{name: "421 greeting", b: smtptest.Behavior{Greeting: "421 4.3.2 Service shutting down"},
			stage: StageGreeting, code: 421, reason: "greeting"},
		{name: "554 greeting", b: smtptest.Behavior{Greeting: "554 5.3.2 No SMTP service here"},
			stage: StageGreeting, code: 554, reason: "greeting"},
		{name: "silent greeting", b: smtptest.Behavior{Silent: "GREETING"}, cmdWait: shortWait,
			stage: StageGreeting, reason: "timeout"},
		{name: "dropped at greeting", b: smtptest.Behavior{Drop: "GREETING"},
			stage: StageGreeting, reason: "closed"},
		{name: "garbage greeting", b: smtptest.Behavior{Raw: map[string]string{"GREETING": "garbage\r\n"}},
			stage: StageGreeting, reason: "protocol"},
		{name: "greeting of another protocol", b: smtptest.Behavior{Raw: map[string]string{"GREETING": "+OK POP3 server ready\r\n"}},
			stage: StageGreeting, reason: "protocol"},
		{name: "EHLO and HELO refused", b: smtptest.Behavior{EHLO: "500 5.5.1 no", HELO: "501 5.5.4 Syntax: HELO hostname"},
			stage: StageHello, command: "HELO gw.test", code: 501, reason: "hello",
			lines: []string{"EHLO gw.test", "HELO gw.test", "QUIT"}},
		{name: "EHLO 4xx", b: smtptest.Behavior{EHLO: "454 4.7.0 Try again later"},
			stage: StageHello, command: "EHLO gw.test", code: 454, reason: "hello",
			lines: []string{"EHLO gw.test", "QUIT"}},
		{name: "EHLO 421", b: smtptest.Behavior{EHLO: "421 4.7.0 mx.example.test Error: too many connections"},
			stage: StageHello, command: "EHLO gw.test", code: 421, reason: "hello",
			lines: []string{"EHLO gw.test"}},
		{name: "dropped at EHLO", b: smtptest.Behavior{Drop: "EHLO"},
			stage: StageHello, command: "EHLO gw.test", reason: "closed", lines: []string{"EHLO gw.test"}},
		{name: "null sender refused", b: smtptest.Behavior{Mail: "553 5.7.1 <>: Sender address rejected: Access denied"},
			stage: StageMail, command: "MAIL FROM:<>", code: 553, reason: "mail",
			lines: []string{"EHLO gw.test", "MAIL FROM:<>", "QUIT"}},
		{name: "MAIL 451", b: smtptest.Behavior{Mail: "451 4.3.0 Temporary failure"},
			stage: StageMail, command: "MAIL FROM:<>", code: 451, reason: "mail",
			lines: []string{"EHLO gw.test", "MAIL FROM:<>", "QUIT"}},
		{name: "reply code out of range at MAIL", b: smtptest.Behavior{Raw: map[string]string{"MAIL": "600 what\r\n"}},
			stage: StageMail, command: "MAIL FROM:<>", reason: "protocol",
			lines: []string{"EHLO gw.test", "MAIL FROM:<>"}},
		{name: "dropped at MAIL", b: smtptest.Behavior{Drop: "MAIL"},
			stage: StageMail, command: "MAIL FROM:<>", reason: "closed", lines: []string{"EHLO gw.test", "MAIL FROM:<>"}},
		{name: "421 at RCPT", b: smtptest.Behavior{Rcpt: rcptReply("421 4.4.2 mx.example.test Error: timeout exceeded")},
			stage: StageRcpt, command: "RCPT TO:<bob@example.test>", code: 421, reason: "closing",
			lines: []string{"EHLO gw.test", "MAIL FROM:<>", "RCPT TO:<bob@example.test>"}},
		{name: "policy refusal at RCPT is not user unknown", b: smtptest.Behavior{Rcpt: rcptReply("554 5.7.1 <gw.test[127.0.0.1]>: Client host rejected: Access denied")},
			stage: StageRcpt, command: "RCPT TO:<bob@example.test>", code: 554, reason: "client_refused", lines: dialogue},
		{name: "relay denied at RCPT is not user unknown", b: smtptest.Behavior{Rcpt: rcptReply("554 5.7.1 <bob@example.test>: Relay access denied")},
			stage: StageRcpt, command: "RCPT TO:<bob@example.test>", code: 554, reason: "relay_denied", lines: dialogue},
		{name: "HELO refusal at RCPT is not user unknown", b: smtptest.Behavior{Rcpt: rcptReply("504 5.5.2 <gw>: Helo command rejected: need fully-qualified hostname")},
			stage: StageRcpt, command: "RCPT TO:<bob@example.test>", code: 504, reason: "helo_refused", lines: dialogue},
		{name: "sender refusal at RCPT is not user unknown", b: smtptest.Behavior{Rcpt: rcptReply("550 5.1.0 <v@gw.test>: Sender address rejected: User unknown in virtual mailbox table")},
			stage: StageRcpt, command: "RCPT TO:<bob@example.test>", code: 550, reason: "sender_refused", lines: dialogue},
		{name: "mailbox full is temporary", b: smtptest.Behavior{Rcpt: rcptReply("552 5.2.2 Mailbox full")},
			verdict: TempFail, code: 552, enhanced: "5.2.2", text: "Mailbox full", lines: dialogue},
		{name: "354 at RCPT", b: smtptest.Behavior{Rcpt: rcptReply("354 go ahead")},
			stage: StageRcpt, command: "RCPT TO:<bob@example.test>", code: 354, reason: "protocol", lines: dialogue},
		{name: "silent at RCPT", b: smtptest.Behavior{Silent: "RCPT"}, cmdWait: shortWait,
			stage: StageRcpt, command: "RCPT TO:<bob@example.test>", reason: "timeout",
			lines: []string{"EHLO gw.test", "MAIL FROM:<>", "RCPT TO:<bob@example.test>"}},
		{name: "dropped at RCPT", b: smtptest.Behavior{Drop: "RCPT"},
			stage: StageRcpt, command: "RCPT TO:<bob@example.test>", reason: "closed",
			lines: []string{"EHLO gw.test", "MAIL FROM:<>", "RCPT TO:<bob@example.test>"}},
		{name: "garbage at RCPT", b: smtptest.Behavior{Raw: map[string]string{"RCPT": "garbage\r\n"}},
			stage: StageRcpt, command: "RCPT TO:<bob@example.test>", reason: "protocol",
			lines: []string{"EHLO gw.test", "MAIL FROM:<>", "RCPT TO:<bob@example.test>"}},
		{name: "mixed codes at RCPT", b: smtptest.Behavior{Raw: map[string]string{"RCPT": "250-ok\r\n550 no\r\n"}},
			stage: StageRcpt, command: "RCPT TO:<bob@example.test>", reason: "protocol",
			lines: []string{"EHLO gw.test", "MAIL FROM:<>", "RCPT TO:<bob@example.test>"}},
		{name: "unfinished reply at RCPT", b: smtptest.Behavior{Raw: map[string]string{"RCPT": "250-ok\r\n"}}, cmdWait: shortWait,
			stage: StageRcpt, command: "RCPT TO:<bob@example.test>", reason: "timeout",
			lines: []string{"EHLO gw.test", "MAIL FROM:<>", "RCPT TO:<bob@example.test>"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			srv := smtptest.NewServer(t, tc.b)
			c := newClient()
			if tc.cmdWait != 0 {
				c.CommandTimeout = tc.cmdWait
			}
			rcpt := "bob@example.test"
			if tc.rcpt != "" {
				rcpt = tc.rcpt
			}
			start := time.Now()
			res, err := c.Probe(context.Background(), nil, srv.Addr(), mustParse(t, rcpt))
			if el := time.Since(start); el > hangBound {
				t.Errorf("Probe took %v", el)
			}

			if tc.verdict != 0 {
				if err != nil {
					t.Fatalf("Probe: %v, want %v", err, tc.verdict)
				}
				r := res.Reply
				if res.Verdict != tc.verdict || r.Code != tc.code || r.Enhanced != tc.enhanced || r.Text() != tc.text {
					t.Errorf("Probe = %v %d %q %q, want %v %d %q %q", res.Verdict, r.Code, r.Enhanced, r.Text(),
						tc.verdict, tc.code, tc.enhanced, tc.text)
				}
			} else {
				checkError(t, err, srv.Addr(), tc.stage, tc.command, tc.reason, tc.code)
			}
			checkLines(t, srv, tc.lines...)
			if n := srv.Sessions(); n != 1 {
				t.Errorf("%d sessions, want 1", n)
			}
		})
	}
}

// checkError asserts that err is an *Error with these fields; code 0 means
// the server gave no reply.
func checkError(t *testing.T, err error, server string, stage Stage, command, reason string, code int) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %v (%T), want an *Error", err, err)
	}
	if e.Server != server || e.Stage != stage || e.Command != command || e.Reason() != reason {
		t.Errorf("got *Error{Server: %q, Stage: %q, Command: %q, Reason(): %q}, want %q %q %q %q (%v)",
			e.Server, e.Stage, e.Command, e.Reason(), server, stage, command, reason, e)
	}
	switch {
	case code == 0 && e.Reply != nil:
		t.Errorf("got reply %v, want none (%v)", e.Reply, e)
	case code == 0 && e.Err == nil:
		t.Errorf("no reply and no Err")
	case code != 0 && (e.Reply == nil || e.Reply.Code != code):
		t.Errorf("got reply %v, want code %d (%v)", e.Reply, code, e)
	case code != 0 && e.Err != nil:
		t.Errorf("reply %v and Err %v both set", e.Reply, e.Err)
	}
	if got, want := e.Permanent(), code >= 500; got != want {
		t.Errorf("Permanent() = %v, want %v", got, want)
	}
	if got, want := e.Timeout(), reason == "timeout"; got != want {
		t.Errorf("Timeout() = %v, want %v", got, want)
	}
	if !strings.HasPrefix(e.Error(), server+": ") {
		t.Errorf("Error() = %q does not name the server", e.Error())
	}
	return e
}

func TestProbeConnectRefused(t *testing.T) {
	checkGoroutines(t)
	addr := closedAddr(t)
	_, err := newClient().Probe(context.Background(), nil, addr, mustParse(t, "bob@example.test"))
	checkError(t, err, addr, StageConnect, "", "connect", 0)
}

// blackhole is a Dialer whose connections never complete.
type blackhole struct{}

func (blackhole) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestProbeConnectTimeout(t *testing.T) {
	checkGoroutines(t)
	c := newClient()
	c.Dialer = blackhole{}
	c.ConnectTimeout = shortWait
	start := time.Now()
	_, err := c.Probe(context.Background(), nil, "192.0.2.1:25", mustParse(t, "bob@example.test"))
	e := checkError(t, err, "192.0.2.1:25", StageConnect, "", "timeout", 0)
	if !errors.Is(e, context.DeadlineExceeded) {
		t.Errorf("got %v, want context.DeadlineExceeded", e)
	}
	if el := time.Since(start); el > hangBound {
		t.Errorf("Probe took %v with a connect timeout of %v", el, shortWait)
	}
}

// TestProbeContextDeadline: a context deadline shorter than the command
// timeout ends a probe stuck on a silent server by that deadline, and the
// client closes the connection without a QUIT the server would read as an
// answer to RCPT.
func TestProbeContextDeadline(t *testing.T) {
	for _, verb := range []string{"GREETING", "EHLO", "MAIL", "RCPT"} {
		t.Run(verb, func(t *testing.T) {
			checkGoroutines(t)
			srv := smtptest.NewServer(t, smtptest.Behavior{Silent: verb})
			c := newClient()
			c.CommandTimeout = time.Hour
			ctx, cancel := context.WithTimeout(context.Background(), budget)
			defer cancel()
			start := time.Now()
			_, err := c.Probe(ctx, nil, srv.Addr(), mustParse(t, "bob@example.test"))
			if el := time.Since(start); el > hangBound {
				t.Errorf("Probe took %v with a deadline of %v", el, budget)
			}
			stage := map[string]Stage{"GREETING": StageGreeting, "EHLO": StageHello, "MAIL": StageMail, "RCPT": StageRcpt}[verb]
			n := map[string]int{"GREETING": 0, "EHLO": 1, "MAIL": 2, "RCPT": 3}[verb]
			e := checkError(t, err, srv.Addr(), stage, append([]string{""}, dialogue...)[n], "timeout", 0)
			if !errors.Is(e, context.DeadlineExceeded) {
				t.Errorf("got %v, want context.DeadlineExceeded", e)
			}
			checkLines(t, srv, dialogue[:n]...)
		})
	}
}

// TestProbeCancel: cancelling the context unblocks a probe waiting on a
// silent server at once, whatever the command timeout.
func TestProbeCancel(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{Silent: "RCPT"})
	c := newClient()
	c.CommandTimeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cancelled time.Time
	var wg sync.WaitGroup
	wg.Go(func() {
		for srv.Count("RCPT") == 0 {
			time.Sleep(time.Millisecond)
		}
		cancelled = time.Now()
		cancel()
	})
	_, err := c.Probe(ctx, nil, srv.Addr(), mustParse(t, "bob@example.test"))
	wg.Wait()
	if el := time.Since(cancelled); el > hangBound {
		t.Errorf("Probe returned %v after the cancel", el)
	}
	e := checkError(t, err, srv.Addr(), StageRcpt, "RCPT TO:<bob@example.test>", "timeout", 0)
	if !errors.Is(e, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", e)
	}
	checkLines(t, srv, "EHLO gw.test", "MAIL FROM:<>", "RCPT TO:<bob@example.test>")
}

// TestProbeCommandTimeout: each command waits at most CommandTimeout; the
// probe of a silent server fails by then, not by the (later) context deadline.
func TestProbeCommandTimeout(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{Silent: "MAIL"})
	c := newClient()
	c.CommandTimeout = shortWait
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	_, err := c.Probe(ctx, nil, srv.Addr(), mustParse(t, "bob@example.test"))
	e := checkError(t, err, srv.Addr(), StageMail, "MAIL FROM:<>", "timeout", 0)
	if ctx.Err() != nil || errors.Is(e, context.DeadlineExceeded) {
		t.Errorf("got %v: the context's deadline, want the command timeout", e)
	}
	if !errors.Is(e, os.ErrDeadlineExceeded) {
		t.Errorf("got %v, want os.ErrDeadlineExceeded", e)
	}
	checkLines(t, srv, "EHLO gw.test", "MAIL FROM:<>")
}

func TestProbeQuotedLocalPart(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users(`"john doe"@example.test`)})
	c := newClient()
	for _, tc := range []struct {
		rcpt, wire string
		verdict    Verdict
	}{
		{"john doe@example.test", `"john doe"@example.test`, Valid},
		{"john.doe@example.test", `john.doe@example.test`, Unknown},
		{`a"b\c> DATA@example.test`, `"a\"b\\c> DATA"@example.test`, Unknown},
	} {
		res, err := c.Probe(context.Background(), nil, srv.Addr(), mustParse(t, tc.rcpt))
		if err != nil || res.Verdict != tc.verdict {
			t.Errorf("Probe(%q) = %v, %v; want %v", tc.rcpt, res.Verdict, err, tc.verdict)
		}
		if got := srv.Lines(); !slices.Contains(got, "RCPT TO:<"+tc.wire+">") {
			t.Errorf("server received %q, want RCPT TO:<%s>", got, tc.wire)
		}
	}
	if n := srv.Count("DATA"); n != 0 {
		t.Errorf("server received %d DATA commands", n)
	}
}

func TestProbeMailFrom(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{})
	c := newClient()
	c.MailFrom = "verify@gw.test"
	if _, err := c.Probe(context.Background(), nil, srv.Addr(), mustParse(t, "bob@example.test")); err != nil {
		t.Fatal(err)
	}
	checkLines(t, srv, "EHLO gw.test", "MAIL FROM:<verify@gw.test>", "RCPT TO:<bob@example.test>", "QUIT")
}

// TestProbeUnsafeMailFrom: whatever a caller puts in MailFrom, no CR or LF
// reaches the server; the session is given up without another word.
func TestProbeUnsafeMailFrom(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{})
	c := newClient()
	c.MailFrom = "x>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
	_, err := c.Probe(context.Background(), nil, srv.Addr(), mustParse(t, "bob@example.test"))
	e := checkError(t, err, srv.Addr(), StageMail, "MAIL FROM:<"+c.MailFrom+">", "closed", 0)
	if !errors.Is(e, errUnsafeCommand) {
		t.Errorf("got %v, want errUnsafeCommand", e)
	}
	checkLines(t, srv, "EHLO gw.test")
}

func TestProbeDefaults(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{})
	var c Client // the zero value is usable
	if _, err := c.Probe(context.Background(), nil, srv.Addr(), mustParse(t, "bob@example.test")); err != nil {
		t.Fatal(err)
	}
	checkLines(t, srv, "EHLO localhost", "MAIL FROM:<>", "RCPT TO:<bob@example.test>", "QUIT")
}

// countingDialer counts the connections a Client opens through it.
type countingDialer struct {
	mu sync.Mutex
	n  int
}

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.n++
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func TestProbeDialer(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{})
	d := &countingDialer{}
	c := newClient()
	c.Dialer = d
	for range 3 {
		if _, err := c.Probe(context.Background(), nil, srv.Addr(), mustParse(t, "bob@example.test")); err != nil {
			t.Fatal(err)
		}
	}
	if d.n != 3 || srv.Sessions() != 3 {
		t.Errorf("%d dials, %d sessions; want 3 and 3", d.n, srv.Sessions())
	}
}

func TestProbeTrace(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
	var events []TraceEvent
	c := newClient()
	c.Trace = func(ev TraceEvent) { events = append(events, ev) }
	if _, err := c.Probe(context.Background(), nil, srv.Addr(), mustParse(t, "nobody@example.test")); err != nil {
		t.Fatal(err)
	}
	var sent, received []string
	var last time.Duration
	for _, ev := range events {
		if ev.Server != srv.Addr() {
			t.Errorf("event %+v: server %q, want %q", ev, ev.Server, srv.Addr())
		}
		if ev.Elapsed < last {
			t.Errorf("event %+v: elapsed went back from %v", ev, last)
		}
		last = ev.Elapsed
		if ev.Sent {
			sent = append(sent, ev.Line)
		} else {
			received = append(received, ev.Line)
		}
	}
	wantSent := []string{"EHLO gw.test", "MAIL FROM:<>", "RCPT TO:<nobody@example.test>", "QUIT"}
	wantReceived := []string{
		"220 smtptest ESMTP",
		"250-smtptest", "250-PIPELINING", "250 8BITMIME",
		"250 2.1.0 Ok",
		"550 5.1.1 " + unknownText,
		"221 2.0.0 Bye",
	}
	if !slices.Equal(sent, wantSent) {
		t.Errorf("trace sent\n\t%q\nwant\n\t%q", sent, wantSent)
	}
	if !slices.Equal(received, wantReceived) {
		t.Errorf("trace received\n\t%q\nwant\n\t%q", received, wantReceived)
	}
	// Events come in dialogue order: each command before its reply.
	var order []bool
	for _, ev := range events {
		order = append(order, ev.Sent)
	}
	wantOrder := []bool{false, true, false, false, false, true, false, true, false, true, false}
	if !slices.Equal(order, wantOrder) {
		t.Errorf("trace order (sent?) %v, want %v", order, wantOrder)
	}
}

// TestTraceEnhancedCodeOnly: a reply of a code and an enhanced code alone is
// traced as it was received.
func TestTraceEnhancedCodeOnly(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{Rcpt: func(string) string { return "550 5.1.1" }})
	var received []string
	c := newClient()
	c.Trace = func(ev TraceEvent) {
		if !ev.Sent {
			received = append(received, ev.Line)
		}
	}
	res, err := c.Probe(context.Background(), nil, srv.Addr(), mustParse(t, "bob@example.test"))
	if err != nil || res.Verdict != Unknown {
		t.Fatalf("Probe = %v, %v; want unknown", res.Verdict, err)
	}
	if !slices.Contains(received, "550 5.1.1") {
		t.Errorf("trace received %q, want the line %q", received, "550 5.1.1")
	}
}

// TestSession drives a Session by hand, as a session pool would: several
// recipients and transactions on one connection.
func TestSession(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{
		Greeting: "220-mx.example.test ESMTP\r\n220 hello",
		EHLO:     "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8bitmime\r\n250 ENHANCEDSTATUSCODES",
		Rcpt:     smtptest.Users("alice@example.test"),
	})
	ctx := context.Background()
	s, err := newClient().Open(ctx, srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if g := s.Greeting; g.Code != 220 || !slices.Equal(g.Lines, []string{"mx.example.test ESMTP", "hello"}) {
		t.Errorf("Greeting = %#v", g)
	}
	wantExt := map[string]string{"PIPELINING": "", "SIZE": "10240000", "8BITMIME": "", "ENHANCEDSTATUSCODES": ""}
	if len(s.Extensions) != len(wantExt) {
		t.Errorf("Extensions = %q, want %q", s.Extensions, wantExt)
	}
	for k, v := range wantExt {
		if got, ok := s.Extensions[k]; !ok || got != v {
			t.Errorf("Extensions[%q] = %q, %v; want %q", k, got, ok, v)
		}
	}
	if err := s.Mail(ctx, ""); err != nil {
		t.Fatal(err)
	}
	for addr, code := range map[string]int{"alice@example.test": 250, "nobody@example.test": 550} {
		rep, err := s.Rcpt(ctx, mustParse(t, addr))
		if err != nil || rep.Code != code {
			t.Errorf("Rcpt(%s) = %v, %v; want %d", addr, rep, err, code)
		}
	}
	if err := s.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Mail(ctx, "verify@gw.test"); err != nil {
		t.Fatal(err)
	}
	if rep, err := s.Rcpt(ctx, mustParse(t, "alice@example.test")); err != nil || rep.Code != 250 {
		t.Errorf("Rcpt = %v, %v; want 250", rep, err)
	}
	s.Quit(ctx)
	// Map order above is random; compare as sets where it matters.
	got := srv.Lines()
	if len(got) != 8 || got[0] != "EHLO gw.test" || got[1] != "MAIL FROM:<>" || got[4] != "RSET" ||
		got[5] != "MAIL FROM:<verify@gw.test>" || got[6] != "RCPT TO:<alice@example.test>" || got[7] != "QUIT" {
		t.Errorf("server received %q", got)
	}
	if srv.Count("RCPT") != 3 {
		t.Errorf("%d RCPT, want 3", srv.Count("RCPT"))
	}
}

func TestSessionHELOFallback(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{EHLO: "502 5.5.2 Error: command not recognized"})
	s, err := newClient().Open(context.Background(), srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if s.Extensions != nil {
		t.Errorf("Extensions = %q after HELO, want nil", s.Extensions)
	}
	s.Close()
	checkLines(t, srv, "EHLO gw.test", "HELO gw.test")
}

func TestSessionResetRefused(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{Raw: map[string]string{"RSET": "421 4.3.0 going away\r\n"}})
	ctx := context.Background()
	s, err := newClient().Open(ctx, srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkError(t, s.Reset(ctx), srv.Addr(), StageMail, "RSET", "mail", 421)
}

// TestProbeAfterServerClose: a server that went away mid-test makes Probe
// fail, not hang.
func TestProbeAfterServerClose(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{Silent: "MAIL"})
	c := newClient()
	c.CommandTimeout = time.Hour
	var wg sync.WaitGroup
	wg.Go(func() {
		for srv.Count("MAIL") == 0 {
			time.Sleep(time.Millisecond)
		}
		srv.Close()
	})
	_, err := c.Probe(context.Background(), nil, srv.Addr(), mustParse(t, "bob@example.test"))
	wg.Wait()
	var e *Error
	if !errors.As(err, &e) || e.Stage != StageMail || e.Reply != nil {
		t.Fatalf("got %v, want a connection error at MAIL", err)
	}
	if !errors.Is(e, io.EOF) && e.Reason() != "closed" {
		t.Errorf("got %v (reason %s), want the connection closed", e, e.Reason())
	}
}
