package callout

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultPort is used for a server given without a port.
const DefaultPort = 25

// ParseServer normalises a backend given as "host", "host:port",
// "192.0.2.1", "[2001:db8::5]", "[2001:db8::5]:2525" or a bare IPv6 address
// into "host:port" as net.Dial takes it.
func ParseServer(s string) (string, error) {
	host, port := s, strconv.Itoa(DefaultPort)
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", fmt.Errorf("server %q: missing ']'", s)
		}
		host = s[1:end]
		switch rest := s[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			port = rest[1:]
		default:
			return "", fmt.Errorf("server %q: unexpected %q after ']'", s, rest)
		}
		if ip, err := netip.ParseAddr(host); err != nil || !ip.Is6() {
			return "", fmt.Errorf("server %q: %q is not an IPv6 address", s, host)
		}
	case strings.Count(s, ":") > 1:
		if ip, err := netip.ParseAddr(s); err != nil || !ip.Is6() {
			return "", fmt.Errorf("server %q: not an IPv6 address; write [addr]:port", s)
		}
	case strings.Contains(s, ":"):
		host, port, _ = strings.Cut(s, ":")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("server %q: invalid port %q", s, port)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if err := CheckHostname(strings.TrimSuffix(host, ".")); err != nil {
			return "", fmt.Errorf("server %q: %w", s, err)
		}
	}
	return net.JoinHostPort(host, port), nil
}
