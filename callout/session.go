package callout

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// TraceEvent is one line of an SMTP dialogue, for debugging and for the
// admin's tester. Sent is true for lines we wrote, false for replies.
type TraceEvent struct {
	Server  string
	Sent    bool
	Line    string
	Elapsed time.Duration // since the session started
}

// Session is one SMTP connection to a backend. Open returns it greeted and
// introduced (after EHLO or HELO), ready for MAIL. It is not safe for
// concurrent use. Each command waits at most the command timeout and never
// past the context's deadline; cancelling the context aborts a blocked read.
type Session struct {
	server     string
	conn       net.Conn
	br         *bufio.Reader
	cmdTimeout time.Duration
	trace      func(TraceEvent)
	start      time.Time
	broken     bool // a command got no reply; the connection is unusable

	// Extensions are the EHLO keywords the server announced, upper-case,
	// mapped to their parameters; nil after a HELO fallback.
	Extensions map[string]string
	// Greeting is the server's 220 greeting.
	Greeting Reply
	// TLS tells that the session runs over STARTTLS.
	TLS bool
}

// open dials server and reads the greeting.
func (c *Client) open(ctx context.Context, st *Settings, server string) (*Session, error) {
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, st.connectTimeout())
	conn, err := c.dialer(st).DialContext(dctx, "tcp", server)
	cancel()
	if err != nil {
		if errors.Is(err, ErrSourceAddress) {
			if host, _, _ := net.SplitHostPort(server); !isIPLiteral(host) {
				// A name with addresses of both families: the error
				// is of the first family tried, and says nothing of
				// the other's server, which may be down: the server
				// is counted as failing, as without a source address.
				err = fmt.Errorf("%s", err.Error())
			}
		}
		return nil, &Error{Server: server, Stage: StageConnect, Err: err}
	}
	s := &Session{
		server:     server,
		conn:       conn,
		br:         bufio.NewReaderSize(conn, 1024),
		cmdTimeout: st.commandTimeout(),
		trace:      c.Trace,
		start:      start,
	}
	rep, err := s.exchange(ctx, StageGreeting, "")
	if err != nil {
		s.Close()
		return nil, err
	}
	s.Greeting = rep
	if rep.Code != 220 {
		s.Close()
		return nil, &Error{Server: server, Stage: StageGreeting, Reply: &rep}
	}
	return s, nil
}

// Hello introduces us: EHLO, and HELO if the server refuses EHLO with 5xx.
func (s *Session) Hello(ctx context.Context, name string) error {
	cmd := "EHLO " + name
	rep, err := s.exchange(ctx, StageHello, cmd)
	if err != nil {
		return err
	}
	if rep.Class() == 5 {
		cmd = "HELO " + name
		rep, err = s.exchange(ctx, StageHello, cmd)
		if err != nil {
			return err
		}
		if rep.Class() == 2 {
			return nil
		}
	}
	if rep.Class() != 2 {
		// cmd is the command refused: EHLO when it got 4xx (421 too many
		// connections, say), HELO when both were refused.
		return &Error{Server: s.server, Stage: StageHello, Command: cmd, Reply: &rep}
	}
	s.Extensions = make(map[string]string, len(rep.Lines))
	for _, l := range rep.Lines[1:] {
		kw, param, _ := strings.Cut(l, " ")
		s.Extensions[strings.ToUpper(kw)] = param
	}
	return nil
}

// errHandshake marks a failed TLS handshake, after which an opportunistic
// client asks again in plain text.
var errHandshake = errors.New("TLS handshake failed")

// ErrNoSTARTTLS: tls = "required" and the server does not announce
// STARTTLS.
var ErrNoSTARTTLS = errors.New("server does not announce STARTTLS, and TLS is required")

// startTLS upgrades the session (RFC 3207) when the server announces
// STARTTLS: the 220, the handshake, then EHLO again, since what the
// server announced in plain text no longer holds. Anything the server
// sent after its 220 and before the handshake is dropped with the old
// reader: plain text must never pass for a reply inside the TLS session.
// With tls = "required", no STARTTLS or a refusal is an error.
func (s *Session) startTLS(ctx context.Context, st *Settings) error {
	required := st.TLS == "required"
	if !hasKey(s.Extensions, "STARTTLS") {
		if required {
			return &Error{Server: s.server, Stage: StageTLS, Err: ErrNoSTARTTLS}
		}
		return nil
	}
	rep, err := s.exchange(ctx, StageTLS, "STARTTLS")
	if err != nil {
		return err
	}
	if rep.Code != 220 {
		if required {
			return &Error{Server: s.server, Stage: StageTLS, Command: "STARTTLS", Reply: &rep}
		}
		return nil // plain text, as before
	}
	// Opportunistic TLS does not verify, as Postfix's "may" level.
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	if st.TLSConfig != nil {
		cfg = st.TLSConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(s.server)
	}
	hctx, cancel := context.WithTimeout(ctx, s.cmdTimeout)
	defer cancel()
	tc := tls.Client(s.conn, cfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		s.broken = true
		return &Error{Server: s.server, Stage: StageTLS, Err: fmt.Errorf("%w: %w", errHandshake, err)}
	}
	if n := s.br.Buffered(); n > 0 && s.trace != nil {
		s.trace(TraceEvent{Server: s.server, Line: fmt.Sprintf("(%d octets sent before the TLS handshake dropped)", n), Elapsed: time.Since(s.start)})
	}
	s.conn, s.br = tc, bufio.NewReaderSize(tc, 1024)
	s.TLS = true
	if s.trace != nil {
		cs := tc.ConnectionState()
		s.trace(TraceEvent{Server: s.server, Line: fmt.Sprintf("(TLS %s, %s)", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite)), Elapsed: time.Since(s.start)})
	}
	return s.Hello(ctx, st.heloName())
}

// Mail starts a transaction with MAIL FROM:<from>. from is a mailbox in wire
// form or "" for the null sender. Anything but 2xx is an *Error.
func (s *Session) Mail(ctx context.Context, from string) error {
	cmd := s.mailCmd(from)
	rep, err := s.exchange(ctx, StageMail, cmd)
	if err != nil {
		return err
	}
	if rep.Class() != 2 {
		return &Error{Server: s.server, Stage: StageMail, Command: cmd, Reply: &rep}
	}
	return nil
}

// Rcpt sends RCPT TO:<rcpt> and returns the server's reply, whatever its
// code. The error is set only when no reply could be read.
func (s *Session) Rcpt(ctx context.Context, rcpt Address) (Reply, error) {
	return s.exchange(ctx, StageRcpt, "RCPT TO:<"+rcpt.Wire()+">")
}

// Reset aborts the transaction with RSET so the session can serve another.
func (s *Session) Reset(ctx context.Context) error {
	rep, err := s.exchange(ctx, StageMail, "RSET")
	if err != nil {
		return err
	}
	if rep.Class() != 2 {
		return &Error{Server: s.server, Stage: StageMail, Command: "RSET", Reply: &rep}
	}
	return nil
}

// Quit says QUIT, waits briefly for the reply and closes the connection.
// A server that does not answer does not hold up the caller for long; one
// that already failed to answer, or a context that has ended, gets no QUIT
// at all: the connection is just closed, so a verdict is never late for
// politeness' sake.
func (s *Session) Quit(ctx context.Context) {
	if s.broken || ctx.Err() != nil {
		s.Close()
		return
	}
	ctx, cancel := context.WithTimeout(ctx, min(s.cmdTimeout, quitTimeout))
	defer cancel()
	_, _ = s.exchange(ctx, StageMail, "QUIT")
	s.Close()
}

// quitTimeout bounds the wait for QUIT's reply, which decides nothing.
const quitTimeout = time.Second

// idle tells whether a session that sat unused is still fit: the server has
// sent nothing (a 421 or an "idle timeout" notice) and not closed it. It
// does not block.
func (s *Session) idle() bool {
	if s.broken || s.br.Buffered() > 0 {
		return false
	}
	return quiet(s.conn)
}

// Close closes the connection without QUIT.
func (s *Session) Close() error { return s.conn.Close() }

// errUnsafeCommand guards the wire: callers validate what they put in a
// command, but a CR or LF must never reach the server whatever a caller did.
var errUnsafeCommand = errors.New("refusing to send a command containing CR, LF or NUL")

// exchange writes cmd (unless it is "") and reads one reply, within the
// command timeout and the context's deadline.
func (s *Session) exchange(ctx context.Context, stage Stage, cmd string) (Reply, error) {
	var reps [1]Reply
	err := s.exchangeMany(ctx, stage, reps[:], cmd)
	return reps[0], err
}

// mailCmd is MAIL FROM:<from>, with the SMTPUTF8 parameter when the
// server announces it: a pooled transaction may then take any recipient,
// UTF-8 or not (RFC 6531 3.4 lets a client use it whenever announced).
func (s *Session) mailCmd(from string) string {
	if hasKey(s.Extensions, "SMTPUTF8") {
		return "MAIL FROM:<" + from + "> SMTPUTF8"
	}
	return "MAIL FROM:<" + from + ">"
}

// canAsk tells whether rcpt may be asked on this session: a UTF-8 address
// only of a server that announces SMTPUTF8.
func (s *Session) canAsk(rcpt Address) error {
	if rcpt.UTF8() && !hasKey(s.Extensions, "SMTPUTF8") {
		return &Error{Server: s.server, Stage: StageRcpt, Err: ErrNoSMTPUTF8}
	}
	return nil
}

// mailRcpt pipelines MAIL FROM and RCPT TO in one write (RFC 2920) and
// reads both replies. mailErr is MAIL's refusal (RCPT's reply then means
// nothing); err is a failure to talk at all.
func (s *Session) mailRcpt(ctx context.Context, from string, rcpt Address) (rep Reply, mailErr, err error) {
	mail := s.mailCmd(from)
	var reps [2]Reply
	if err := s.exchangeMany(ctx, StageMail, reps[:], mail, "RCPT TO:<"+rcpt.Wire()+">"); err != nil {
		return Reply{}, nil, err
	}
	if reps[0].Class() != 2 {
		return Reply{}, &Error{Server: s.server, Stage: StageMail, Command: mail, Reply: &reps[0]}, nil
	}
	return reps[1], nil, nil
}

// exchangeMany writes cmds in one write (none for the greeting: a single
// "") and reads one reply for each into reps, within the command timeout
// and the context's deadline.
func (s *Session) exchangeMany(ctx context.Context, stage Stage, reps []Reply, cmds ...string) error {
	deadline := time.Now().Add(s.cmdTimeout)
	ctxDeadline := false
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, ctxDeadline = d, true
	}
	cmd := strings.Join(cmds, " + ") // for errors and logs
	fail := func(err error) error {
		s.broken = true
		ctxErr := ctx.Err()
		if ctxErr == nil && ctxDeadline && errors.Is(err, os.ErrDeadlineExceeded) {
			// The connection's deadline was the context's, and it can pass
			// before the context's own timer has marked it done: it is
			// still the context's deadline that ended the wait.
			ctxErr = context.DeadlineExceeded
		}
		if ctxErr != nil {
			err = fmt.Errorf("%w: %w", ctxErr, err)
		}
		return &Error{Server: s.server, Stage: stage, Command: cmd, Err: err}
	}
	for _, c := range cmds {
		if strings.ContainsAny(c, "\r\n\x00") {
			return fail(errUnsafeCommand)
		}
	}
	if err := s.conn.SetDeadline(deadline); err != nil {
		return fail(err)
	}
	// Cancelling ctx must unblock a read that is stuck on a silent server.
	stop := context.AfterFunc(ctx, func() { _ = s.conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			// The context ended as the exchange did: its past
			// deadline may land on the connection after we return,
			// so the session must not be used again.
			s.broken = true
		}
	}()

	if cmd != "" {
		for _, c := range cmds {
			s.emit(true, c)
		}
		if _, err := s.conn.Write([]byte(strings.Join(cmds, "\r\n") + "\r\n")); err != nil {
			return fail(err)
		}
	}
	var raw func(string)
	if s.trace != nil {
		raw = func(line string) { s.emit(false, line) }
	}
	for i := range reps {
		rep, err := readReply(s.br, raw)
		if err != nil {
			return fail(err)
		}
		reps[i] = rep
	}
	return nil
}

func (s *Session) emit(sent bool, line string) {
	if s.trace != nil {
		s.trace(TraceEvent{Server: s.server, Sent: sent, Line: line, Elapsed: time.Since(s.start)})
	}
}

func isIPLiteral(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}
