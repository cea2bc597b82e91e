package config

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/calloutd/calloutd/callout"
)

// PostfixPolicyTimeout is the timeout= of the check_policy_service line in
// the shipped Postfix snippets (contrib/postfix/main.cf.*). Without it,
// Postfix waits smtpd_policy_service_timeout, 100s by default.
const PostfixPolicyTimeout = 35 * time.Second

// Warning is something serve accepts but that is probably a mistake.
type Warning struct {
	Key string // "callout.helo_name", "route[1].servers[0]"
	Msg string
}

func (w Warning) String() string { return w.Key + ": " + w.Msg }

// Warnings are what c alone tells about itself, without looking at the
// system: a HELO name that is not fully qualified, a request_timeout that
// Postfix would not wait for. serve logs them at start.
func (c *Config) Warnings() []Warning {
	var ws []Warning
	helo := func(key, name string) {
		if !strings.Contains(name, ".") {
			// Backends with reject_non_fqdn_helo_hostname refuse us at RCPT.
			ws = append(ws, Warning{key, fmt.Sprintf("%q is not fully qualified; backends with reject_non_fqdn_helo_hostname refuse the callout", name)})
		}
	}
	timeout := func(key string, d Duration) {
		if d.D() >= PostfixPolicyTimeout {
			ws = append(ws, Warning{key, fmt.Sprintf("%s is not below the timeout=%s of check_policy_service in contrib/postfix/ (Postfix's default: 100s); "+
				"if Postfix gives up first it asks again, then applies default_action: raise timeout= in main.cf above request_timeout", FormatDuration(d.D()), FormatDuration(PostfixPolicyTimeout))})
		}
	}
	helo("callout.helo_name", c.Callout.HeloName)
	timeout("callout.request_timeout", c.Callout.RequestTimeout)
	for i, r := range c.Routes {
		if r.HeloName != nil {
			helo(fmt.Sprintf("route[%d].helo_name", i), *r.HeloName)
		}
		if r.RequestTimeout != nil {
			timeout(fmt.Sprintf("route[%d].request_timeout", i), *r.RequestTimeout)
		}
	}
	return ws
}

// Resolver looks up a host's addresses; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// CheckOptions are what Check asks the system through. The zero value
// asks the real one.
type CheckOptions struct {
	Resolver Resolver // nil: net.DefaultResolver
	// LocalAddrs are this host's addresses besides loopback; nil: those
	// of its network interfaces.
	LocalAddrs []netip.Addr
}

// Check looks at what serve needs from the system and would fail on
// later, without changing anything: the directory of a unix listener and
// the log file must be writable. It also returns c.Warnings and warns of
// a route server that is calloutd itself (an address of this host with
// the port calloutd listens on) or whose name does not resolve. Host
// names are resolved within ctx and c's dns.timeout each; "mx:" servers
// are not looked at.
//
// Files the routes read (tls_ca_file, ldap_ca_file, recipients_file) are
// not looked at here: building the routes reads them (see
// daemon.NewRouting).
func Check(ctx context.Context, c *Config, o CheckOptions) (errs []error, warnings []Warning) {
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.LocalAddrs == nil {
		o.LocalAddrs = interfaceAddrs()
	}
	for i, l := range c.Listen {
		if path, ok := strings.CutPrefix(l, "unix:"); ok {
			if err := checkSocketPath(path); err != nil {
				errs = append(errs, fmt.Errorf("listen[%d]: %w", i, err))
			}
		}
	}
	if c.Log.File != "" {
		if err := checkWritableFile(c.Log.File); err != nil {
			errs = append(errs, fmt.Errorf("log.file: %w", err))
		}
	}
	warnings = append(c.Warnings(), selfRoutes(ctx, c, o)...)
	if c.AdminSocket != "" {
		// The unit's RuntimeDirectory= makes /run/calloutd at start:
		// missing while calloutd is stopped is as it should be, but
		// anything else that stops serve from making the socket deserves
		// a word.
		dir := filepath.Dir(c.AdminSocket)
		_, statErr := os.Stat(dir)
		runtimeDir := dir == filepath.Dir(Default().AdminSocket) && errors.Is(statErr, fs.ErrNotExist)
		if err := checkSocketPath(c.AdminSocket); err != nil && !runtimeDir {
			warnings = append(warnings, Warning{"admin_socket", err.Error() + "; unless the directory is there and writable when serve starts, it runs without its admin socket (calloutd lookup, flush and learn cannot reach it; systemd's RuntimeDirectory=calloutd makes /run/calloutd)"})
		}
	}
	if p := c.Learn.PostfixLog; p != "" {
		// serve waits for a missing log and retries one it cannot read:
		// not an error, but nothing is learned meanwhile.
		if err := access(p, accessRead); err != nil {
			warnings = append(warnings, Warning{"learn.postfix_log", fmt.Sprintf("%s: cannot read it (%v); nothing is learned until it can (Debian: SupplementaryGroups=adm for /var/log/mail.log)", p, err)})
		}
	}
	return errs, warnings
}

// checkSocketPath: serve creates the socket at path, replacing a stale
// one, in a directory that must exist.
func checkSocketPath(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("%s exists and is not a socket", path)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return writableDir(filepath.Dir(path))
}

// checkWritableFile: serve appends to path, creating it if missing.
func checkWritableFile(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return writableDir(filepath.Dir(path))
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", path)
	}
	if err := access(path, accessWrite); err != nil {
		return fmt.Errorf("%s: cannot write: %w", path, err)
	}
	return nil
}

func writableDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if err := access(dir, accessWrite|accessSearch); err != nil {
		return fmt.Errorf("directory %s: cannot create files in it: %w", dir, err)
	}
	return nil
}

// endpoint is an address calloutd listens on; a zero addr is every
// address of this host.
type endpoint struct {
	addr      netip.Addr
	port      string
	key, text string // "listen[0]", "127.0.0.1:10040"
}

// selfRoutes warns of route servers that are one of calloutd's own TCP
// listeners: such a route would ask calloutd itself (which does not speak
// SMTP) instead of a backend.
func selfRoutes(ctx context.Context, c *Config, o CheckOptions) []Warning {
	var ws []Warning
	lookup := func(host string) ([]netip.Addr, error) {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if a, err := netip.ParseAddr(host); err == nil {
			return []netip.Addr{a.Unmap()}, nil
		}
		lctx, cancel := context.WithTimeout(ctx, c.DNS.Timeout.D())
		defer cancel()
		addrs, err := o.Resolver.LookupNetIP(lctx, "ip", host)
		for i := range addrs {
			addrs[i] = addrs[i].Unmap()
		}
		return addrs, err
	}
	var own []endpoint
	type listen struct{ key, addr string }
	var listens []listen
	for i, l := range c.Listen {
		listens = append(listens, listen{fmt.Sprintf("listen[%d]", i), l})
	}
	if c.MetricsListen != "" {
		listens = append(listens, listen{"metrics_listen", c.MetricsListen})
	}
	for _, ln := range listens {
		key, l := ln.key, ln.addr
		host, port, err := net.SplitHostPort(l)
		if err != nil || strings.HasPrefix(l, "unix:") {
			continue
		}
		if a, err := netip.ParseAddr(host); host == "" || err == nil && a.IsUnspecified() {
			own = append(own, endpoint{port: port, key: key, text: l})
			continue
		}
		addrs, _ := lookup(host) // serve itself will say if it cannot listen there
		for _, a := range addrs {
			own = append(own, endpoint{addr: a, port: port, key: key, text: l})
		}
	}
	local := func(a netip.Addr) bool {
		if a.IsLoopback() {
			return true
		}
		for _, l := range o.LocalAddrs {
			if l.Unmap() == a {
				return true
			}
		}
		return false
	}
	for i, r := range c.Routes {
		if r.Kind == "ldap" {
			continue
		}
		for j, s := range r.Servers {
			key := fmt.Sprintf("route[%d].servers[%d]", i, j)
			if callout.IsMX(s) {
				continue // resolved at run time, through [dns]; not checked
			}
			host, port, err := net.SplitHostPort(s)
			if err != nil {
				continue // Load normalised servers to host:port
			}
			addrs, err := lookup(host)
			if err != nil {
				ws = append(ws, Warning{key, fmt.Sprintf("%q: %v", host, err)})
				continue
			}
		found:
			for _, a := range addrs {
				for _, e := range own {
					if e.port == port && (e.addr == a || !e.addr.IsValid() && local(a)) {
						ws = append(ws, Warning{key, fmt.Sprintf("%q is calloutd itself (%s = %q): the route would ask calloutd, not a mail server",
							s, e.key, e.text)})
						break found
					}
				}
			}
		}
	}
	return ws
}

// interfaceAddrs are the addresses of this host's network interfaces.
func interfaceAddrs() []netip.Addr {
	out := []netip.Addr{}
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, ifa := range ifas {
		if p, err := netip.ParsePrefix(ifa.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}
