package smtptest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"maps"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bounds on what the server accepts and keeps.
const (
	// MaxLine is the longest command line accepted, CRLF included
	// (RFC 5321 4.5.3.1.6 allows 1000 octets for a text line, which bounds
	// a command line too).
	MaxLine = 1000
	// MaxSessions is how many connections are served at once; more wait in
	// the listen backlog.
	MaxSessions = 64
	// MaxRecorded is how many command lines Lines keeps; later lines are
	// still counted by Count.
	MaxRecorded = 100000
)

// Default replies.
const (
	DefaultGreeting = "220 smtptest ESMTP"
	DefaultEHLO     = "250-smtptest\r\n250-PIPELINING\r\n250 8BITMIME"
	DefaultHELO     = "250 smtptest"
	DefaultMail     = "250 2.1.0 Ok"
	DefaultRcpt     = "250 2.1.5 Ok"
)

// Fixed replies, worded as Postfix words them.
const (
	replyOK          = "250 2.0.0 Ok"
	replyBye         = "221 2.0.0 Bye"
	replyUnknownVerb = "502 5.5.2 Error: command not recognized"
	replyBadSyntax   = "500 5.5.2 Error: bad syntax"
	replyTooLong     = "500 5.5.2 Error: line too long"
	replyRcptSyntax  = "501 5.5.4 Syntax: RCPT TO:<address>"
)

// Behavior scripts the server. The zero value accepts everything. Verbs are
// matched case-insensitively; "GREETING" stands for the connection's start.
type Behavior struct {
	// Greeting is the whole greeting reply, lines separated by "\r\n".
	// Default "220 smtptest ESMTP".
	Greeting string
	// EHLO is the reply to EHLO. Default
	// "250-smtptest\r\n250-PIPELINING\r\n250 8BITMIME".
	EHLO string
	// HELO is the reply to HELO. Default "250 smtptest".
	HELO string
	// Mail is the reply to MAIL. Default "250 2.1.0 Ok".
	Mail string
	// Rcpt returns the reply to RCPT TO; addr is the text between '<' and
	// '>' as sent (a quoted local part keeps its quotes). Default
	// "250 2.1.5 Ok" for every address. It is called from the server's
	// goroutines and must be safe for concurrent use.
	Rcpt func(addr string) string
	// Silent is the verb ("GREETING", "EHLO", "MAIL", "RCPT", "QUIT", ...)
	// at which the server stops replying for the rest of the session. It
	// keeps reading and recording lines until the client closes the
	// connection or the server is closed.
	Silent string
	// Drop is the verb at which the server closes the connection instead of
	// replying.
	Drop string
	// Delay is waited before every reply.
	Delay time.Duration
	// TLS, when set, makes the server announce STARTTLS (with the default
	// EHLO reply) and upgrade the connection when asked.
	TLS *tls.Config
	// Raw maps a verb to bytes written verbatim instead of its reply, e.g.
	// "garbage\r\n" or "250-ok\r\n" (a reply that never ends). The session
	// then goes on as if a reply had been sent.
	Raw map[string]string
	// OnCommand, when set, is called with every command line received
	// (without its line ending, as Lines records it), before the reply is
	// sent: a program serving the server can log the dialogue as it goes.
	// It is called from the server's goroutines and must be safe for
	// concurrent use.
	OnCommand func(line string)
}

// Users returns a Rcpt func that accepts the given addresses (local@domain
// in the form the client puts between the brackets, compared
// case-insensitively) with "250 2.1.5 Ok" and rejects any other as Postfix
// does: "550 5.1.1 <addr>: Recipient address rejected: User unknown in local
// recipient table".
func Users(addrs ...string) func(string) string {
	known := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		known[strings.ToLower(a)] = true
	}
	return func(addr string) string {
		if known[strings.ToLower(addr)] {
			return DefaultRcpt
		}
		return "550 5.1.1 <" + addr + ">: Recipient address rejected: User unknown in local recipient table"
	}
}

// Server is a running test server. Its methods are safe for concurrent use.
type Server struct {
	b    Behavior
	raw  map[string]string // upper-case verb -> bytes
	ln   net.Listener
	done chan struct{} // closed by Close
	sem  chan struct{} // one token per running session
	wg   sync.WaitGroup
	once sync.Once

	mu       sync.Mutex
	closed   bool
	conns    map[net.Conn]struct{}
	lines    []string
	counts   map[string]int
	sessions int
	peers    map[string]int // client IP -> connections
	tlsUp    int            // sessions upgraded with STARTTLS
}

// NewServer starts a server on 127.0.0.1:0 that behaves as b says. It is
// closed when the test ends (t.Cleanup), and Close waits for its goroutines.
func NewServer(t testing.TB, b Behavior) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtptest: listen: %v", err)
	}
	s := Start(ln, b)
	t.Cleanup(s.Close)
	return s
}

// Start serves ln in the background as b says, for a program that is not a
// test (the demo backend, on a fixed address). The server owns ln: Close
// closes it and must be called.
func Start(ln net.Listener, b Behavior) *Server {
	s := &Server{
		b:      b,
		raw:    make(map[string]string, len(b.Raw)),
		ln:     ln,
		done:   make(chan struct{}),
		sem:    make(chan struct{}, MaxSessions),
		conns:  map[net.Conn]struct{}{},
		counts: map[string]int{},
		peers:  map[string]int{},
	}
	for verb, bytes := range b.Raw {
		s.raw[strings.ToUpper(verb)] = bytes
	}
	s.b.Raw = nil
	s.wg.Add(1)
	go s.accept()
	return s
}

// Addr returns the address the server listens on, "127.0.0.1:port".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Lines returns every command line received, without its line ending, from
// all sessions in the order they arrived (at most MaxRecorded).
func (s *Server) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// Count returns how many commands with verb (the line's first word, compared
// case-insensitively: "RCPT" for "RCPT TO:<...>") were received.
func (s *Server) Count(verb string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[strings.ToUpper(verb)]
}

// Peers returns how many connections came from each client IP address.
func (s *Server) Peers() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.peers)
}

// Sessions returns how many connections were accepted.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

// WaitIdle waits at most d until no session is open, that is until every
// client that connected has gone, and reports whether that happened. Call it
// before Lines when the client may have sent a last line without waiting for
// a reply (after a timeout, say), so the transcript is complete.
func (s *Server) WaitIdle(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Close stops the server: it closes the listener and every connection and
// waits for the server's goroutines to end. It may be called more than once.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.done)
		_ = s.ln.Close()
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
	})
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		select {
		case s.sem <- struct{}{}:
		case <-s.done:
			return
		}
		c, err := s.ln.Accept()
		if err != nil {
			<-s.sem
			if s.isDone() || errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (out of descriptors, say): back off.
			select {
			case <-time.After(10 * time.Millisecond):
			case <-s.done:
				return
			}
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			<-s.sem
			return
		}
		s.conns[c] = struct{}{}
		s.sessions++
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			s.peers[ta.IP.String()]++
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c)
	}
}

func (s *Server) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// session is the state of one connection.
type session struct {
	s      *Server
	c      net.Conn
	silent bool
	tls    bool
}

func (s *Server) serve(c net.Conn) {
	defer func() {
		_ = c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		<-s.sem
		s.wg.Done()
	}()
	ss := &session{s: s, c: c}
	// One octet more than a whole line, so that ReadSlice reports a line
	// that is too long as a full buffer.
	br := bufio.NewReaderSize(c, MaxLine+1)
	if !ss.respond("GREETING", or(s.b.Greeting, DefaultGreeting)) {
		return
	}
	for {
		line, tooLong, err := readLine(br)
		if err != nil {
			return
		}
		if tooLong {
			if !ss.respond("", replyTooLong) {
				return
			}
			continue
		}
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		s.record(line, verb)
		if s.b.OnCommand != nil {
			s.b.OnCommand(line)
		}
		if verb == "STARTTLS" && s.b.TLS != nil && !ss.tls {
			if !ss.respond(verb, "220 2.0.0 Ready to start TLS") {
				return
			}
			tc := tls.Server(c, s.b.TLS)
			if err := tc.Handshake(); err != nil {
				return
			}
			s.mu.Lock()
			s.tlsUp++
			s.mu.Unlock()
			ss.c, ss.tls = tc, true
			br = bufio.NewReaderSize(tc, MaxLine+1) // nothing sent before the handshake counts
			continue
		}
		reply := s.reply(verb, arg)
		if verb == "EHLO" && s.b.EHLO == "" && s.b.TLS != nil && !ss.tls {
			reply = "250-smtptest\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME"
		}
		if !ss.respond(verb, reply) {
			return
		}
	}
}

// TLSSessions returns how many sessions were upgraded with STARTTLS.
func (s *Server) TLSSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tlsUp
}

// reply returns the scripted reply to a command.
func (s *Server) reply(verb, arg string) string {
	switch verb {
	case "EHLO":
		return or(s.b.EHLO, DefaultEHLO)
	case "HELO":
		return or(s.b.HELO, DefaultHELO)
	case "MAIL":
		return or(s.b.Mail, DefaultMail)
	case "RCPT":
		lt := strings.IndexByte(arg, '<')
		gt := strings.LastIndexByte(arg, '>')
		if lt < 0 || gt < lt {
			return replyRcptSyntax
		}
		if s.b.Rcpt == nil {
			return DefaultRcpt
		}
		return s.b.Rcpt(arg[lt+1 : gt])
	case "RSET", "NOOP":
		return replyOK
	case "QUIT":
		return replyBye
	case "":
		return replyBadSyntax
	}
	return replyUnknownVerb
}

// respond sends the reply to verb, or what the Behavior says instead of it,
// and reports whether the session goes on.
func (ss *session) respond(verb, reply string) bool {
	b := &ss.s.b
	switch {
	case ss.silent:
		return true
	case verb != "" && strings.EqualFold(verb, b.Drop):
		return false
	case verb != "" && strings.EqualFold(verb, b.Silent):
		ss.silent = true
		return true
	}
	if b.Delay > 0 {
		t := time.NewTimer(b.Delay)
		select {
		case <-t.C:
		case <-ss.s.done:
			t.Stop()
			return false
		}
	}
	out, raw := ss.s.raw[verb]
	if !raw {
		out = strings.TrimSuffix(reply, "\r\n") + "\r\n"
	}
	if _, err := ss.c.Write([]byte(out)); err != nil {
		return false
	}
	if raw {
		return verb != "QUIT"
	}
	// A 421 reply, or QUIT's, ends the session (RFC 5321 3.8, 4.1.1.10).
	return verb != "QUIT" && !strings.HasPrefix(lastLine(reply), "421")
}

func (s *Server) record(line, verb string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.lines) < MaxRecorded {
		s.lines = append(s.lines, line)
	}
	// Bound the map too: a client sending random words must not grow it
	// without end.
	if _, ok := s.counts[verb]; ok || len(s.counts) < 1024 {
		s.counts[verb]++
	}
}

// readLine reads one line and strips CRLF or a bare LF. A line longer than
// MaxLine octets, line ending included, is read to its end and discarded.
func readLine(br *bufio.Reader) (line string, tooLong bool, err error) {
	b, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = br.ReadSlice('\n')
		}
		return "", err == nil, err
	}
	if err != nil {
		return "", false, err
	}
	if len(b) > MaxLine {
		return "", true, nil
	}
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return string(b), false, nil
}

func lastLine(reply string) string {
	reply = strings.TrimSuffix(reply, "\r\n")
	if i := strings.LastIndex(reply, "\n"); i >= 0 {
		return reply[i+1:]
	}
	return reply
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
