package callout

import (
	"errors"
	"fmt"
	"net"
	"os"
)

// Stage names where in a session something went wrong; it is also the
// "reason" a server counts as unavailable.
type Stage string

// Stages of a callout session, in dialogue order.
const (
	StageConnect  Stage = "connect"
	StageGreeting Stage = "greeting"
	StageHello    Stage = "hello"
	StageMail     Stage = "mail"
	StageRcpt     Stage = "rcpt"
	StageTLS      Stage = "starttls"
	StageDNS      Stage = "dns" // resolving an mx: server entry
	// A directory (LDAP) server: binding, or searching.
	StageBind   Stage = "ldap_bind"
	StageSearch Stage = "ldap_search"
)

// Error is what went wrong talking to one backend server: the stage, the
// command sent (if any), and either the server's reply or the local error
// (timeout, connection lost, malformed reply). Use errors.As to get it.
type Error struct {
	Server  string // host:port
	Stage   Stage
	Command string // the command line sent, "" for connect and greeting
	// Reply is set when the server answered; Err is nil then.
	Reply *Reply
	Err   error
	// Class is what a reply to RCPT TO meant when it made the server
	// unavailable (refused, unrecognised, ignored); zero otherwise.
	Class Classification
}

func (e *Error) Error() string {
	what := string(e.Stage)
	if e.Command != "" {
		what = e.Command
	}
	if e.Reply != nil {
		return fmt.Sprintf("%s: %s: server replied %s", e.Server, what, e.Reply)
	}
	return fmt.Sprintf("%s: %s: %v", e.Server, what, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Permanent reports whether the server gave a 5xx reply.
func (e *Error) Permanent() bool { return e.Reply != nil && e.Reply.Class() == 5 }

// Timeout reports whether the error is a deadline that passed.
func (e *Error) Timeout() bool {
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout() || errors.Is(e.Err, os.ErrDeadlineExceeded)
}

// Reason is a short, fixed label for why a server was unavailable, fit for
// a log key or a metric label: "connect", "timeout", "busy" (this node's
// own connection limit), "source_address", "greeting", "hello",
// "mail", "protocol" (malformed reply), "closed" (connection lost), or for
// a reply to RCPT TO its Classification's reason ("relay_denied",
// "client_refused", "policy", "closing", "unrecognised", "ignored", ...).
func (e *Error) Reason() string {
	switch {
	case e.Class.Meaning != 0:
		return e.Class.Reason
	case errors.Is(e.Err, ErrBusy):
		return "busy"
	case errors.Is(e.Err, ErrSourceAddress):
		return "source_address"
	case e.Timeout():
		return "timeout"
	case errors.Is(e.Err, ErrBreakerOpen):
		return "breaker_open"
	case errors.Is(e.Err, ErrNoSMTPUTF8):
		return "no_smtputf8"
	case e.Stage == StageConnect:
		return "connect"
	case e.Stage == StageBind || e.Stage == StageSearch:
		return string(e.Stage)
	case e.Stage == StageTLS:
		return "tls"
	case e.Stage == StageDNS:
		return "dns"
	case errors.Is(e.Err, ErrMalformedReply):
		return "protocol"
	case e.Reply == nil:
		return "closed"
	}
	return string(e.Stage)
}

// ErrNotAskable marks an error after which the server is not at fault: it
// answered, with a refusal or an error of its own (an LDAP bind refused,
// a search error), or the address could not be put to it. The circuit
// breaker does not count it.
var ErrNotAskable = errors.New("the server answered, or could not be asked about this address")

// ErrNoSMTPUTF8: the recipient's local part is UTF-8 and the server does
// not announce SMTPUTF8, so it cannot be asked (RFC 6531 3.2); nothing was
// sent, and it says nothing about the recipient or the server's health.
var ErrNoSMTPUTF8 = errors.New("server does not announce SMTPUTF8, needed for this UTF-8 address")

// ErrBusy is wrapped by the error of a probe that ran out of budget
// waiting for one of the connections this node allows itself to a server
// (max_connections_per_server, a directory's MaxSearches): the server was
// not asked, so the circuit breaker does not count it.
var ErrBusy = errors.New("every connection to the server allowed is in use")

// ErrSourceAddress is wrapped by the error of a callout that could not
// leave from its source_address: the address is not (or no longer) this
// host's, as when a floating address of an HA pair has moved to the other
// node. The server was not asked, so the circuit breaker does not count it.
var ErrSourceAddress = errors.New("the source address is not this host's")
