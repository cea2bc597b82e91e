package callout

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"time"
)

// Prober asks one backend server about one recipient on behalf of a route,
// with the route's settings. Client opens a fresh session per call; a
// session pool can implement the same interface.
type Prober interface {
	// Probe returns Valid, Unknown or TempFail with the RCPT reply that
	// decided it, or an error (usually *Error) when the server could not
	// give an answer about the recipient, which makes it unavailable.
	// r may be nil: the prober's own settings apply.
	Probe(ctx context.Context, r *Route, server string, rcpt Address) (Result, error)
}

// Result is a backend's answer to RCPT TO.
type Result struct {
	Verdict Verdict // Valid, Unknown or TempFail
	Reply   Reply
	Class   Classification // what Reply means
}

// Dialer is what Client needs of net.Dialer; tests may wrap it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Settings are how a route's servers are asked. Zero values take the
// defaults named.
type Settings struct {
	// HeloName is sent with EHLO/HELO. Default "localhost".
	HeloName string
	// MailFrom is the envelope sender in wire form; "" is the null
	// sender <>.
	MailFrom string
	// ConnectTimeout bounds the TCP connect. Default 10s.
	ConnectTimeout time.Duration
	// CommandTimeout bounds the wait for each reply. Default 10s.
	CommandTimeout time.Duration
	// Rules are the route's own readings of replies; nil for none.
	Rules *Rules
	// Source4 and Source6, when valid, are the local addresses
	// connections to IPv4 and IPv6 servers leave from.
	Source4, Source6 netip.Addr
	// TLS is how STARTTLS is used: "" or "opportunistic" (when the server
	// announces it; a server whose handshake fails is asked again in
	// plain text), "required" (a server without working TLS cannot be
	// asked), "off".
	TLS string
	// TLSConfig verifies servers' certificates (tls_verify); nil encrypts
	// without verifying, as Postfix's "may" level does. TLSKey names it
	// for the session pool (sessions of different trust are different).
	TLSConfig *tls.Config
	TLSKey    string
}

// Source names the settings' source addresses ("" for none): sessions
// from different sources are different sessions.
func (st *Settings) Source() string {
	if !st.Source4.IsValid() && !st.Source6.IsValid() {
		return ""
	}
	return st.Source4.String() + "," + st.Source6.String()
}

// Client is a Prober that opens one SMTP session per probe: greeting,
// EHLO, MAIL FROM, RCPT TO, then QUIT. QUIT ends the transaction, so no RSET
// is needed before it. A probe uses its route's Settings, or the Client's
// own when the route has none. The zero value is usable but says EHLO
// localhost.
type Client struct {
	Settings
	// Dialer opens connections. Default a net.Dialer.
	Dialer Dialer
	// Trace, if set, sees every line sent and received.
	Trace func(TraceEvent)
}

// settings returns r's settings, or the client's own.
func (c *Client) settings(r *Route) *Settings {
	if r != nil && r.Settings != nil {
		return r.Settings
	}
	return &c.Settings
}

// Open connects to server and introduces us, returning a session that is
// ready for MAIL FROM. The caller must Quit or Close it.
func (c *Client) Open(ctx context.Context, server string) (*Session, error) {
	return c.openHello(ctx, &c.Settings, server)
}

func (c *Client) openHello(ctx context.Context, st *Settings, server string) (*Session, error) {
	s, err := c.openHelloTLS(ctx, st, server, st.TLS != "off")
	if errors.Is(err, errHandshake) && st.TLS != "required" && st.TLSConfig == nil {
		// Opportunistic: a server whose TLS is broken is asked in plain
		// text, on a new connection (the old one is unusable). Not when
		// certificates are verified: a man in the middle would only
		// have to present a bad one to get plain text.
		return c.openHelloTLS(ctx, st, server, false)
	}
	return s, err
}

func (c *Client) openHelloTLS(ctx context.Context, st *Settings, server string, useTLS bool) (*Session, error) {
	s, err := c.open(ctx, st, server)
	if err != nil {
		return nil, err
	}
	if err := s.Hello(ctx, st.heloName()); err != nil {
		s.Quit(ctx)
		return nil, err
	}
	if useTLS {
		if err := s.startTLS(ctx, st); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Probe implements Prober.
func (c *Client) Probe(ctx context.Context, r *Route, server string, rcpt Address) (Result, error) {
	st := c.settings(r)
	s, err := c.openHello(ctx, st, server)
	if err != nil {
		return Result{}, err
	}
	defer s.Quit(ctx)
	if err := s.canAsk(rcpt); err != nil {
		return Result{}, err
	}
	if err := s.Mail(ctx, st.MailFrom); err != nil {
		return Result{}, err
	}
	rep, err := s.Rcpt(ctx, rcpt)
	if err != nil {
		return Result{}, err
	}
	return ResultOf(server, rcpt, rep, st.Rules.Classify(rep))
}

// ResultOf turns a reply to RCPT TO and its classification into a Result,
// or into an *Error when the reply says nothing about the recipient
// (refused, unrecognised, ignored): the server is then unavailable for this
// verdict and the next one is asked.
func ResultOf(server string, rcpt Address, rep Reply, c Classification) (Result, error) {
	res := Result{Reply: rep, Class: c}
	switch c.Meaning {
	case MeansExists:
		res.Verdict = Valid
	case MeansUnknown:
		res.Verdict = Unknown
	case MeansTemporary:
		res.Verdict = TempFail
	default:
		return res, &Error{Server: server, Stage: StageRcpt, Command: "RCPT TO:<" + rcpt.Wire() + ">", Reply: &rep, Class: c}
	}
	return res, nil
}

func (st *Settings) heloName() string {
	if st.HeloName == "" {
		return "localhost"
	}
	return st.HeloName
}

func (st *Settings) connectTimeout() time.Duration {
	if st.ConnectTimeout <= 0 {
		return 10 * time.Second
	}
	return st.ConnectTimeout
}

func (st *Settings) commandTimeout() time.Duration {
	if st.CommandTimeout <= 0 {
		return 10 * time.Second
	}
	return st.CommandTimeout
}

func (c *Client) dialer(st *Settings) Dialer {
	if c.Dialer != nil {
		return c.Dialer
	}
	if st.Source() != "" {
		return &net.Dialer{ControlContext: bindSource(st.Source4, st.Source6)}
	}
	return &net.Dialer{}
}
