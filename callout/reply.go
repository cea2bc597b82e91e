package callout

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Bounds on what a backend may send as one reply. RFC 5321 4.5.3.1.5 caps a
// reply line at 512 octets; we accept more from sloppy servers but not
// without end, so a hostile backend cannot make us buffer without limit.
const (
	maxReplyLine  = 2048
	maxReplyLines = 64
)

// ErrMalformedReply is wrapped by errors for replies that are not SMTP.
var ErrMalformedReply = errors.New("malformed SMTP reply")

// Reply is one SMTP reply, possibly spanning several lines (RFC 5321 4.2).
type Reply struct {
	Code int // three-digit reply code, e.g. 550
	// Enhanced is the RFC 3463 status code from the start of the first
	// line ("5.1.1"), or "" when the server gave none or one whose class
	// does not match Code.
	Enhanced string
	// Lines holds the text of each line, without code, separator and
	// enhanced code: RFC 2034 servers (Gmail, Exchange) repeat the enhanced
	// code on every line of a multi-line reply, and it is taken off each
	// line where it equals the first line's.
	Lines []string
}

// Text joins the reply's lines with a space.
func (r Reply) Text() string { return strings.Join(r.Lines, " ") }

// String renders the reply as the server's first line would read.
func (r Reply) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%03d", r.Code)
	if r.Enhanced != "" {
		b.WriteString(" " + r.Enhanced)
	}
	if t := r.Text(); t != "" {
		b.WriteString(" " + t)
	}
	return b.String()
}

// Class returns the first digit of the code: 2, 3, 4 or 5.
func (r Reply) Class() int { return r.Code / 100 }

// ReadReply reads one complete reply. Every line must start with the same
// three digits followed by '-' (more lines follow), ' ' or the end of the line
// (last line). Lines may end in CRLF or a bare LF.
func ReadReply(br *bufio.Reader) (Reply, error) { return readReply(br, nil) }

// readReply is ReadReply; raw, if not nil, sees each line as it was read.
func readReply(br *bufio.Reader, raw func(string)) (Reply, error) {
	var r Reply
	for n := 0; ; n++ {
		if n == maxReplyLines {
			return Reply{}, fmt.Errorf("%w: more than %d lines", ErrMalformedReply, maxReplyLines)
		}
		line, err := readLine(br)
		if err != nil {
			return Reply{}, err
		}
		if raw != nil {
			raw(line)
		}
		code, more, text, err := parseReplyLine(line)
		if err != nil {
			return Reply{}, err
		}
		if n == 0 {
			r.Code = code
			r.Enhanced, text = splitEnhanced(code, text)
		} else if code != r.Code {
			return Reply{}, fmt.Errorf("%w: code %03d within reply %03d", ErrMalformedReply, code, r.Code)
		} else if r.Enhanced != "" {
			if e, rest := splitEnhanced(code, text); e == r.Enhanced {
				text = rest
			}
		}
		r.Lines = append(r.Lines, text)
		if !more {
			return r, nil
		}
	}
}

// readLine reads one line of at most maxReplyLine octets and strips its
// line ending.
func readLine(br *bufio.Reader) (string, error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) > maxReplyLine+2 {
			return "", fmt.Errorf("%w: line longer than %d octets", ErrMalformedReply, maxReplyLine)
		}
		buf = append(buf, frag...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if len(buf) > 0 && errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%w: connection closed within a line", ErrMalformedReply)
		}
		return "", err
	}
	buf = buf[:len(buf)-1]
	if n := len(buf); n > 0 && buf[n-1] == '\r' {
		buf = buf[:n-1]
	}
	return string(buf), nil
}

func parseReplyLine(line string) (code int, more bool, text string, err error) {
	if len(line) < 3 {
		return 0, false, "", fmt.Errorf("%w: %q", ErrMalformedReply, clip(line))
	}
	for i := 0; i < 3; i++ {
		c := line[i]
		if c < '0' || c > '9' {
			return 0, false, "", fmt.Errorf("%w: %q", ErrMalformedReply, clip(line))
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code > 599 {
		return 0, false, "", fmt.Errorf("%w: code %03d out of range", ErrMalformedReply, code)
	}
	if len(line) == 3 {
		return code, false, "", nil
	}
	switch line[3] {
	case '-':
		more = true
	case ' ':
	default:
		return 0, false, "", fmt.Errorf("%w: %q", ErrMalformedReply, clip(line))
	}
	return code, more, line[4:], nil
}

// splitEnhanced takes an RFC 3463 status code "c.sss.ddd" off the start of
// text when its class matches the reply code's first digit.
func splitEnhanced(code int, text string) (enhanced, rest string) {
	end := strings.IndexByte(text, ' ')
	word := text
	if end >= 0 {
		word = text[:end]
	}
	if !IsEnhancedCode(word) || int(word[0]-'0') != code/100 {
		return "", text
	}
	if end < 0 {
		return word, ""
	}
	return word, strings.TrimLeft(text[end:], " ")
}

// IsEnhancedCode reports whether s has the form class.subject.detail of
// RFC 3463: class 2, 4 or 5, subject and detail of one to three digits.
func IsEnhancedCode(s string) bool {
	if len(s) < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.' {
		return false
	}
	parts := strings.Split(s[2:], ".")
	if len(parts) != 2 {
		return false
	}
	for _, p := range parts {
		if len(p) < 1 || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return true
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
