package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/daemon"
)

// adminConfig loads the file for lookup and flush, which need only its
// admin_socket (and, with Redis, the store's address).
func adminConfig(path string, stderr io.Writer) (*config.Config, int) {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "calloutd: %v\n", err)
		return nil, exitExConfig
	}
	if cfg.AdminSocket == "" {
		fmt.Fprintf(stderr, "calloutd: %s: admin_socket is \"\", so the running daemon's memory cache cannot be reached\n", path)
		return nil, exitExConfig
	}
	return cfg, 0
}

// lookup shows the cached verdict for one address.
func lookup(args []string, stdout, stderr io.Writer) int {
	fset, path := flags("lookup", stderr)
	if code, done := parse(fset, args, exitExUsage); done {
		return code
	}
	if fset.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: calloutd lookup [-config FILE] ADDRESS")
		return exitExUsage
	}
	if _, err := daemon.AddressKey(fset.Arg(0)); err != nil {
		fmt.Fprintf(stderr, "calloutd lookup: %q: %v\n", fset.Arg(0), err)
		return exitExUsage
	}
	cfg, code := adminConfig(*path, stderr)
	if cfg == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := daemon.Admin(ctx, cfg.AdminSocket, daemon.AdminRequest{Op: "lookup", Address: fset.Arg(0)})
	if err != nil {
		fmt.Fprintf(stderr, "calloutd lookup: %v\n", err)
		return exitUnavail
	}
	if !resp.Found {
		fmt.Fprintf(stdout, "%s: not cached\n", fset.Arg(0))
		return 1
	}
	e := resp.Entry
	fmt.Fprintf(stdout, "%s\n  verdict   %s\n", fset.Arg(0), e.Verdict)
	if e.Code != 0 {
		fmt.Fprintf(stdout, "  reply     %d %s\n", e.Code, strings.TrimSpace(e.Enhanced+" "+e.Text))
	}
	if e.Route != "" {
		fmt.Fprintf(stdout, "  from      route %s, server %s\n", e.Route, e.Server)
	}
	fmt.Fprintf(stdout, "  verified  %s (%s ago)\n", e.Verified.Format(time.RFC3339), time.Since(e.Verified).Round(time.Second))
	fmt.Fprintf(stdout, "  expires   %s (in %s)\n", e.Expires.Format(time.RFC3339), time.Until(e.Expires).Round(time.Second))
	return 0
}

// flush forgets cached verdicts: one address, a whole domain, or all.
func flush(args []string, stdout, stderr io.Writer) int {
	fset, path := flags("flush", stderr)
	all := fset.Bool("all", false, "forget every cached verdict")
	if code, done := parse(fset, args, exitExUsage); done {
		return code
	}
	req := daemon.AdminRequest{Op: "flush", All: *all}
	switch {
	case *all && fset.NArg() == 0:
	case !*all && fset.NArg() == 1 && strings.HasPrefix(fset.Arg(0), "@"):
		req.Domain = fset.Arg(0)[1:]
		if _, err := daemon.DomainMatcher(req.Domain); err != nil {
			fmt.Fprintf(stderr, "calloutd flush: %v\n", err)
			return exitExUsage
		}
	case !*all && fset.NArg() == 1:
		req.Address = fset.Arg(0)
		if _, err := daemon.AddressKey(req.Address); err != nil {
			fmt.Fprintf(stderr, "calloutd flush: %q: %v\n", req.Address, err)
			return exitExUsage
		}
	default:
		fmt.Fprintln(stderr, "usage: calloutd flush [-config FILE] ADDRESS | @DOMAIN | -all")
		return exitExUsage
	}
	cfg, code := adminConfig(*path, stderr)
	if cfg == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := daemon.Admin(ctx, cfg.AdminSocket, req)
	if err != nil {
		fmt.Fprintf(stderr, "calloutd flush: %v\n", err)
		return exitUnavail
	}
	fmt.Fprintf(stdout, "removed %d cached verdict(s)\n", resp.Removed)
	return 0
}
