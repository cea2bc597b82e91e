package policyd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Bounds on a request. Postfix caps an attribute at 4 x 2048 octets of
// value; a little more for the name. A request of more attributes than any
// Postfix sends, or more octets in all, is refused.
const (
	MaxLineLength   = 4*2048 + 64
	MaxAttributes   = 128
	MaxRequestBytes = 64 * 1024
)

// ErrMalformed is wrapped by every error for a request that breaks the
// protocol; the connection must be closed without an answer.
var ErrMalformed = errors.New("malformed policy request")

// Request is one policy request. Attributes Postfix sends that calloutd does
// not use are ignored; all values are as Postfix sent them (internal form).
type Request struct {
	Request        string // always "smtpd_access_policy" once parsed
	ProtocolState  string // CONNECT, EHLO, HELO, MAIL, RCPT, DATA, END-OF-MESSAGE, VRFY, ETRN
	ProtocolName   string // SMTP, ESMTP
	ClientAddress  string
	ClientName     string
	ClientPort     string
	HeloName       string
	Sender         string
	Recipient      string
	RecipientCount string
	QueueID        string
	Instance       string
	SASLMethod     string
	SASLUsername   string
	ServerAddress  string
	ServerPort     string
	PolicyContext  string
}

// ReadRequest reads one request. It returns io.EOF when the peer closed the
// connection cleanly between requests, an error wrapping ErrMalformed for a
// protocol violation, or the read error.
func ReadRequest(br *bufio.Reader) (*Request, error) {
	r := new(Request)
	total, attrs := 0, 0
	for {
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) && total > 0 {
				return nil, fmt.Errorf("%w: connection closed within a request", ErrMalformed)
			}
			return nil, err
		}
		total += len(line) + 1
		if total > MaxRequestBytes {
			return nil, fmt.Errorf("%w: request longer than %d octets", ErrMalformed, MaxRequestBytes)
		}
		if len(line) == 0 {
			if attrs == 0 {
				return nil, fmt.Errorf("%w: empty request", ErrMalformed)
			}
			break
		}
		if attrs++; attrs > MaxAttributes {
			return nil, fmt.Errorf("%w: more than %d attributes", ErrMalformed, MaxAttributes)
		}
		name, value, ok := bytes.Cut(line, []byte{'='})
		if !ok || len(name) == 0 {
			return nil, fmt.Errorf("%w: line without name=value: %q", ErrMalformed, clip(line))
		}
		r.set(name, value)
	}
	if r.Request != "smtpd_access_policy" {
		return nil, fmt.Errorf("%w: request=%q, want smtpd_access_policy", ErrMalformed, clip([]byte(r.Request)))
	}
	return r, nil
}

// set stores one attribute. Only the names we use are converted to strings,
// so the per-request cost stays small.
func (r *Request) set(name, value []byte) {
	var p *string
	switch string(name) {
	case "request":
		p = &r.Request
	case "protocol_state":
		p = &r.ProtocolState
	case "protocol_name":
		p = &r.ProtocolName
	case "client_address":
		p = &r.ClientAddress
	case "client_name":
		p = &r.ClientName
	case "client_port":
		p = &r.ClientPort
	case "helo_name":
		p = &r.HeloName
	case "sender":
		p = &r.Sender
	case "recipient":
		p = &r.Recipient
	case "recipient_count":
		p = &r.RecipientCount
	case "queue_id":
		p = &r.QueueID
	case "instance":
		p = &r.Instance
	case "sasl_method":
		p = &r.SASLMethod
	case "sasl_username":
		p = &r.SASLUsername
	case "server_address":
		p = &r.ServerAddress
	case "server_port":
		p = &r.ServerPort
	case "policy_context":
		p = &r.PolicyContext
	default:
		return
	}
	*p = string(value)
}

// readLine returns one line without its "\n" (and a "\r" before it, which
// Postfix does not send but hand-made clients do). The slice is valid until
// the next read. The MaxLineLength bound holds whatever the size of br's
// buffer: a buffer too small for the longest line costs a copy, not a
// refusal of a line Postfix may send.
func readLine(br *bufio.Reader) ([]byte, error) {
	const most = MaxLineLength + 2 // "\r\n" after the longest line
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) && len(line) < most {
		long := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) && len(long) < most {
			line, err = br.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, errLineTooLong
	case err != nil && len(line) > 0 && errors.Is(err, io.EOF):
		return nil, fmt.Errorf("%w: connection closed within a line", ErrMalformed)
	case err != nil:
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > MaxLineLength {
		return nil, errLineTooLong
	}
	return line, nil
}

var errLineTooLong = fmt.Errorf("%w: line longer than %d octets", ErrMalformed, MaxLineLength)

func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}
