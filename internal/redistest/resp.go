package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// The raw RESP client below is what the helpers poll with: one short
// connection per call, which is far cheaper than running redis-cli every
// 25 ms. Replies decode to string (simple and bulk strings), int64, nil
// (null bulk or array), []any (arrays), or a respError.

const (
	dialTimeout = time.Second
	callTimeout = 2 * time.Second
	maxBulk     = 64 << 20 // a reply larger than this is refused
	maxDepth    = 8        // nesting of arrays in a reply
)

// respError is an error reply from the server, such as "MOVED 12 host:port".
type respError string

func (e respError) Error() string { return string(e) }

// call connects to addr, authenticates with pass when it is not empty, sends
// one command and returns its reply. An error reply comes back as respError.
func call(addr, pass string, args ...string) (any, error) {
	return callWithin(callTimeout, addr, pass, args...)
}

// callWithin is call with a time limit of its own.
func callWithin(limit time.Duration, addr, pass string, args ...string) (any, error) {
	conn, err := net.DialTimeout("tcp", addr, min(limit, dialTimeout))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(limit)); err != nil {
		return nil, err
	}
	r := bufio.NewReader(conn)
	if pass != "" {
		if _, err := roundTrip(conn, r, "AUTH", pass); err != nil {
			return nil, fmt.Errorf("AUTH: %w", err)
		}
	}
	return roundTrip(conn, r, args...)
}

// callString is call for a command whose reply is a string.
func callString(addr, pass string, args ...string) (string, error) {
	v, err := call(addr, pass, args...)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: reply is %T, not a string", args[0], v)
	}
	return s, nil
}

func roundTrip(w io.Writer, r *bufio.Reader, args ...string) (any, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return nil, err
	}
	return readReply(r, 0)
}

func readReply(r *bufio.Reader, depth int) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || !strings.HasSuffix(line, "\r\n") {
		return nil, fmt.Errorf("malformed RESP line %q", line)
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '+':
		return body, nil
	case '-':
		return nil, respError(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || n > maxBulk {
			return nil, fmt.Errorf("bad bulk length %q", body)
		}
		if n == -1 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		if string(buf[n:]) != "\r\n" {
			return nil, errors.New("bulk string not followed by CRLF")
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || n > maxBulk {
			return nil, fmt.Errorf("bad array length %q", body)
		}
		if n == -1 {
			return nil, nil
		}
		if depth >= maxDepth {
			return nil, errors.New("reply nested too deeply")
		}
		arr := make([]any, 0, min(n, 1024))
		for range n {
			v, err := readReply(r, depth+1)
			if err != nil {
				// An error reply inside an array (EXEC) is a value.
				var re respError
				if !errors.As(err, &re) {
					return nil, err
				}
				v = re
			}
			arr = append(arr, v)
		}
		return arr, nil
	}
	return nil, fmt.Errorf("unknown RESP type in %q", line)
}

// infoField returns the value of field in an INFO reply, "" when absent.
func infoField(info, field string) string {
	for line := range strings.SplitSeq(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
		if ok && k == field {
			return v
		}
	}
	return ""
}

// info runs INFO section on addr and returns field's value.
func info(addr, pass, section, field string) (string, error) {
	s, err := callString(addr, pass, "INFO", section)
	if err != nil {
		return "", err
	}
	return infoField(s, field), nil
}

// pairs turns a flat [k1 v1 k2 v2 ...] reply (SENTINEL MASTER and friends)
// into a map, values formatted as text.
func pairs(v any) (map[string]string, error) {
	arr, ok := v.([]any)
	if !ok || len(arr)%2 != 0 {
		return nil, fmt.Errorf("not a list of field/value pairs: %v", v)
	}
	m := make(map[string]string, len(arr)/2)
	for i := 0; i < len(arr); i += 2 {
		m[fmt.Sprint(arr[i])] = fmt.Sprint(arr[i+1])
	}
	return m, nil
}

// hostPort turns an [ip port] reply into "ip:port".
func hostPort(v any) (string, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) < 2 {
		return "", fmt.Errorf("not an address: %v", v)
	}
	return net.JoinHostPort(fmt.Sprint(arr[0]), fmt.Sprint(arr[1])), nil
}
