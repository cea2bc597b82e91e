package callout

import (
	"context"
	"net"
	"strings"
	"time"
)

// Prober asks one backend server about one recipient. Client opens a fresh
// session per call; a session pool can implement the same interface.
type Prober interface {
	// Probe returns Valid, Unknown or TempFail with the RCPT reply that
	// decided it, or an error (usually *Error) when the server could not
	// give an answer about the recipient, which makes it unavailable.
	Probe(ctx context.Context, server string, rcpt Address) (Result, error)
}

// Result is a backend's answer to RCPT TO.
type Result struct {
	Verdict Verdict // Valid, Unknown or TempFail
	Reply   Reply
}

// Dialer is what Client needs of net.Dialer; tests may wrap it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Client is a Prober that opens one SMTP session per probe: greeting,
// EHLO, MAIL FROM, RCPT TO, then QUIT. QUIT ends the transaction, so no RSET
// is needed before it. The zero value is usable but says EHLO localhost.
type Client struct {
	// HeloName is sent with EHLO/HELO. Default "localhost".
	HeloName string
	// MailFrom is the envelope sender in wire form; "" (the default) is the
	// null sender <>.
	MailFrom string
	// ConnectTimeout bounds the TCP connect. Default 10s.
	ConnectTimeout time.Duration
	// CommandTimeout bounds the wait for each reply. Default 10s.
	CommandTimeout time.Duration
	// Dialer opens connections. Default a net.Dialer.
	Dialer Dialer
	// Trace, if set, sees every line sent and received.
	Trace func(TraceEvent)
}

// Open connects to server and introduces us, returning a session that is
// ready for MAIL FROM. The caller must Quit or Close it.
func (c *Client) Open(ctx context.Context, server string) (*Session, error) {
	s, err := c.open(ctx, server)
	if err != nil {
		return nil, err
	}
	if err := s.Hello(ctx, c.heloName()); err != nil {
		s.Quit(ctx)
		return nil, err
	}
	return s, nil
}

// Probe implements Prober.
func (c *Client) Probe(ctx context.Context, server string, rcpt Address) (Result, error) {
	s, err := c.Open(ctx, server)
	if err != nil {
		return Result{}, err
	}
	defer s.Quit(ctx)
	if err := s.Mail(ctx, c.MailFrom); err != nil {
		return Result{}, err
	}
	rep, err := s.Rcpt(ctx, rcpt)
	if err != nil {
		return Result{}, err
	}
	return resultOf(server, rcpt, rep)
}

// resultOf classifies a reply to RCPT TO. 421 means the server is closing
// the session, which says nothing about the recipient; so does anything that
// is not 2xx, 4xx or 5xx. A 5xx with an enhanced code of class 5.7 (security
// or policy: "554 5.7.1 Relay access denied", "Client host rejected") refuses
// us, not the recipient: Postfix with smtpd_delay_reject rejects a client or
// sender at RCPT. Counting it as "user unknown" would reject every recipient
// of the domain, so the server counts as unavailable instead.
func resultOf(server string, rcpt Address, rep Reply) (Result, error) {
	switch {
	case rep.Code == 421 || rep.Class() == 3 || rep.Class() == 5 && isPolicyRejection(rep):
		return Result{}, &Error{Server: server, Stage: StageRcpt, Command: "RCPT TO:<" + rcpt.Wire() + ">", Reply: &rep}
	case rep.Class() == 2:
		return Result{Verdict: Valid, Reply: rep}, nil
	case rep.Class() == 4:
		return Result{Verdict: TempFail, Reply: rep}, nil
	default:
		return Result{Verdict: Unknown, Reply: rep}, nil
	}
}

// isPolicyRejection reports whether rep's enhanced code is 5.7.x.
func isPolicyRejection(rep Reply) bool { return strings.HasPrefix(rep.Enhanced, "5.7.") }

func (c *Client) heloName() string {
	if c.HeloName == "" {
		return "localhost"
	}
	return c.HeloName
}

func (c *Client) connectTimeout() time.Duration {
	if c.ConnectTimeout <= 0 {
		return 10 * time.Second
	}
	return c.ConnectTimeout
}

func (c *Client) commandTimeout() time.Duration {
	if c.CommandTimeout <= 0 {
		return 10 * time.Second
	}
	return c.CommandTimeout
}

func (c *Client) dialer() Dialer {
	if c.Dialer == nil {
		return &net.Dialer{}
	}
	return c.Dialer
}
