package cache

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// A minimal RESP3 reader and writer for the invalidation connection (see
// tracking.go), which must read push frames between replies: go-redis keeps
// its connections to itself, so this one connection is spoken by hand. It
// reads every RESP3 type, and refuses absurd sizes instead of allocating
// them: the peer is a server we chose, but a wrong port must not cost
// gigabytes.

const (
	respMaxBulk  = 1 << 20 // a key is far shorter; a HELLO reply too
	respMaxItems = 1 << 16 // keys in one invalidation message
	respMaxDepth = 8
)

// respPush is a RESP3 push frame (">"): an out-of-band message such as
// ["invalidate", [keys...]].
type respPush []any

// respError is an error reply ("-" or "!").
type respError string

func (e respError) Error() string { return "redis: " + string(e) }

var errRESP = errors.New("redis: malformed reply")

// writeCommand writes args as a RESP array of bulk strings.
func writeCommand(w *bufio.Writer, args ...string) error {
	fmt.Fprintf(w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(w, "$%d\r\n%s\r\n", len(a), a)
	}
	return w.Flush()
}

// readValue reads one RESP3 value: string (simple, bulk, verbatim, big
// number), int64, float64 kept as its text, bool, nil, respError, []any
// (array, set, map as key, value, ...), or respPush. Attributes are read
// and dropped.
func readValue(r *bufio.Reader) (any, error) {
	return readDepth(r, 0)
}

func readDepth(r *bufio.Reader, depth int) (any, error) {
	if depth > respMaxDepth {
		return nil, fmt.Errorf("%w: nested too deep", errRESP)
	}
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	if len(line) == 0 {
		return nil, fmt.Errorf("%w: empty line", errRESP)
	}
	kind, rest := line[0], string(line[1:])
	switch kind {
	case '+', ',', '(':
		return rest, nil
	case '-':
		return respError(rest), nil
	case ':':
		n, err := strconv.ParseInt(rest, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: integer %q", errRESP, rest)
		}
		return n, nil
	case '_':
		return nil, nil
	case '#':
		return rest == "t", nil
	case '$', '=', '!':
		n, err := strconv.Atoi(rest)
		if err != nil || n < -1 || n > respMaxBulk {
			return nil, fmt.Errorf("%w: bulk length %q", errRESP, rest)
		}
		if n == -1 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return nil, fmt.Errorf("%w: bulk not ended by CRLF", errRESP)
		}
		if kind == '!' {
			return respError(buf[:n]), nil
		}
		return string(buf[:n]), nil
	case '*', '~', '>', '%', '|':
		n, err := strconv.Atoi(rest)
		if err != nil || n < -1 || n > respMaxItems {
			return nil, fmt.Errorf("%w: length %q", errRESP, rest)
		}
		if n == -1 {
			return nil, nil
		}
		if kind == '%' || kind == '|' {
			n *= 2
		}
		items := make([]any, n)
		for i := range items {
			if items[i], err = readDepth(r, depth+1); err != nil {
				return nil, err
			}
		}
		switch kind {
		case '>':
			return respPush(items), nil
		case '|':
			// An attribute precedes the value it describes; it
			// counts as a level, so a stream of them ends.
			return readDepth(r, depth+1)
		}
		return items, nil
	}
	return nil, fmt.Errorf("%w: type %q", errRESP, kind)
}

// readLine reads one CRLF-terminated line without its CRLF.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: line too long", errRESP)
		}
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: line not ended by CRLF", errRESP)
	}
	return line[:len(line)-2], nil
}
