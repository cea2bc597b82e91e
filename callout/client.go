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

// resultOf classifies a reply to RCPT TO. Only a 5xx that is about the
// recipient's address makes it Unknown: one with an enhanced code 5.1.x
// other than 5.1.0, 5.1.7 and 5.1.8 (sender-side codes), or one with no
// enhanced code at all (nothing to tell it apart). Anything else refuses us
// or our session, not the recipient, and Postfix (smtpd_delay_reject=yes,
// its default) reports client, HELO and sender refusals at RCPT: "554 5.7.1
// Client host rejected", "504 5.5.2 Helo command rejected", "550 5.1.0
// Sender address rejected". Taking those for "user unknown" would reject
// every recipient of the domain, so the server counts as unavailable. 552
// at RCPT is temporary (RFC 5321 4.5.3.1.10). 421 means the server is
// closing the session; 3xx is not an answer to RCPT.
func resultOf(server string, rcpt Address, rep Reply) (Result, error) {
	switch {
	case rep.Code == 421 || rep.Class() == 3 || rep.Class() == 5 && !aboutRecipient(rep):
		return Result{}, &Error{Server: server, Stage: StageRcpt, Command: "RCPT TO:<" + rcpt.Wire() + ">", Reply: &rep}
	case rep.Class() == 2:
		return Result{Verdict: Valid, Reply: rep}, nil
	case rep.Class() == 4 || rep.Code == 552:
		return Result{Verdict: TempFail, Reply: rep}, nil
	default:
		return Result{Verdict: Unknown, Reply: rep}, nil
	}
}

// aboutRecipient reports whether a 5xx reply to RCPT says the recipient's
// address is bad, as opposed to refusing the client, HELO or sender.
func aboutRecipient(rep Reply) bool {
	text := rep.Text()
	for _, s := range []string{"Client host rejected", "Helo command rejected", "Sender address rejected"} {
		if strings.Contains(text, s) {
			return false
		}
	}
	switch e := rep.Enhanced; {
	case e == "":
		return true
	case e == "5.1.0" || e == "5.1.7" || e == "5.1.8":
		return false
	default:
		return strings.HasPrefix(e, "5.1.")
	}
}

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
