package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/smtptest"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, nil))
}

// run starts the backend and serves until a signal arrives (or, in tests,
// until stop is closed). Exit codes: 0 stopped, 1 could not listen, 2
// usage or configuration error.
func run(args []string, stdout, stderr io.Writer, stop <-chan struct{}) int {
	fs := flag.NewFlagSet("demo-backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "contrib/calloutd.toml", "calloutd configuration `file`: the backend listens on its first route's servers")
	users := fs.String("users", "alice,bob", "comma-separated `mailboxes` that exist: addresses, or local parts of the route's first domain")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "demo backend: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	route, addrs, err := firstRoute(*path)
	if err != nil {
		fmt.Fprintf(stderr, "demo backend: %v\n", err)
		return 2
	}
	domain := strings.TrimPrefix(route.Domains[0], ".")
	var mailboxes []string
	for _, u := range strings.Split(*users, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if !strings.Contains(u, "@") {
			u += "@" + domain
		}
		mailboxes = append(mailboxes, u)
	}

	var lns []net.Listener
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			fmt.Fprintf(stderr, "demo backend: %v (is another demo, or a mail server, using that port?)\n", err)
			return 1
		}
		lns = append(lns, ln)
	}

	// One writer for every session's lines, so they never interleave.
	var mu sync.Mutex
	say := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stdout, format+"\n", a...)
	}
	known := smtptest.Users(mailboxes...)
	b := smtptest.Behavior{
		Greeting: "220 demo-backend ESMTP",
		EHLO:     "250-demo-backend\r\n250-PIPELINING\r\n250 8BITMIME",
		Rcpt: func(addr string) string {
			reply := known(addr)
			say("backend → %s", reply)
			return reply
		},
		OnCommand: func(line string) { say("backend ← %s", line) },
	}
	var servers []*smtptest.Server
	for _, ln := range lns {
		servers = append(servers, smtptest.Start(ln, b))
	}
	say("demo backend: listening on %s for route %s (%s); mailboxes %s",
		strings.Join(addrs, ", "), route.Name, strings.Join(route.Domains, ", "), strings.Join(mailboxes, ", "))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case <-sig:
	case <-stop:
	}
	for _, s := range servers {
		s.Close()
	}
	say("demo backend: stopped")
	return 0
}

// firstRoute returns the first route of the configuration at path and its
// servers as host:port, which must be loopback addresses.
func firstRoute(path string) (*config.Route, []string, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	if len(cfg.Routes) == 0 {
		return nil, nil, fmt.Errorf("%s: no [[route]]: nothing to play the backend of", path)
	}
	r := &cfg.Routes[0]
	if r.Kind == "ldap" {
		return nil, nil, fmt.Errorf("%s: route %s searches a directory (kind = \"ldap\"); the demo backend plays an SMTP route", path, r.Name)
	}
	var addrs []string
	for _, s := range r.Servers {
		hp, err := callout.ParseServer(s)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: route %s: %v", path, r.Name, err)
		}
		host, _, _ := net.SplitHostPort(hp)
		if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
			return nil, nil, fmt.Errorf("%s: route %s: server %q is not a loopback address; the demo backend listens only on this machine", path, r.Name, s)
		}
		addrs = append(addrs, hp)
	}
	return r, addrs, nil
}
