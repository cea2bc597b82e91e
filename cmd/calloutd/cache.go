package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/daemon"
)

// adminConfig loads the file for lookup and flush: the Redis store is
// asked directly, the memory store through the daemon's admin_socket.
func adminConfig(path string, stderr io.Writer) (*config.Config, int) {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "calloutd: %v\n", err)
		return nil, exitExConfig
	}
	if cfg.Cache.Store != "redis" && cfg.AdminSocket == "" {
		fmt.Fprintf(stderr, "calloutd: %s: admin_socket is \"\", so the running daemon's memory cache cannot be reached\n", path)
		return nil, exitExConfig
	}
	return cfg, 0
}

// redisStore opens the Redis store of cfg without a local layer, or says
// why it cannot be reached.
func redisStore(cfg *config.Config, stderr io.Writer, cmd string) (*cache.Redis, int) {
	s, err := daemon.NewStore(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, false)
	if err != nil {
		fmt.Fprintf(stderr, "calloutd %s: %v\n", cmd, err)
		return nil, exitExConfig
	}
	r := s.(*cache.Redis)
	if !r.Up() {
		fmt.Fprintf(stderr, "calloutd %s: redis %s: %s\n", cmd, strings.Join(cfg.Cache.Redis.Addrs, ","), r.Status())
		r.Close()
		return nil, exitUnavail
	}
	return r, 0
}

// lookup shows the cached verdict for one address.
func lookup(args []string, stdout, stderr io.Writer) int {
	fset, path := flags("lookup", stderr)
	if code, done := parse(fset, args, exitExUsage); done {
		return code
	}
	if fset.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: calloutd lookup [-config FILE] ADDRESS|@DOMAIN")
		return exitExUsage
	}
	key, err := daemon.LookupKey(fset.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "calloutd lookup: %q: %v\n", fset.Arg(0), err)
		return exitExUsage
	}
	cfg, code := adminConfig(*path, stderr)
	if cfg == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var e *cache.Entry
	where := ""
	if cfg.Cache.Store == "redis" {
		r, code := redisStore(cfg, stderr, "lookup")
		if r == nil {
			return code
		}
		defer r.Close()
		got, ok, err := r.Get(ctx, key)
		if err == nil && !r.Up() {
			err = errors.New(r.Status())
		}
		if err != nil {
			fmt.Fprintf(stderr, "calloutd lookup: %v\n", err)
			return exitUnavail
		}
		if ok {
			e = &got
		}
		where = "redis key " + r.RecipientKey(key)
	} else {
		resp, err := daemon.Admin(ctx, cfg.AdminSocket, daemon.AdminRequest{Op: "lookup", Address: fset.Arg(0)})
		if err != nil {
			fmt.Fprintf(stderr, "calloutd lookup: %v\n", err)
			return exitUnavail
		}
		if resp.Found {
			e = resp.Entry
		}
	}
	if e == nil {
		fmt.Fprintf(stdout, "%s: not cached\n", fset.Arg(0))
		return 1
	}
	verdict := e.Verdict
	if strings.HasPrefix(key, "@") {
		// A domain's catch-all verdict: the probe's address was accepted.
		verdict = "not catch-all (the backend rejected an address that cannot exist)"
		if e.Verdict == "valid" {
			verdict = "catch-all (the backend accepted an address that cannot exist: its recipients are not verified)"
		}
	}
	fmt.Fprintf(stdout, "%s\n  verdict   %s\n", fset.Arg(0), verdict)
	if e.Code != 0 {
		fmt.Fprintf(stdout, "  reply     %d %s\n", e.Code, strings.TrimSpace(e.Enhanced+" "+e.Text))
	}
	if e.Route != "" {
		fmt.Fprintf(stdout, "  from      route %s, server %s\n", e.Route, e.Server)
	}
	if e.Learned != "" {
		// Not asked: learned from the gateway's delivery log.
		fmt.Fprintf(stdout, "  learned   from the postfix log: queue id %s, logged %s (%s ago)\n", e.Learned,
			e.Verified.Format(time.RFC3339), time.Since(e.Verified).Round(time.Second))
	} else {
		fmt.Fprintf(stdout, "  verified  %s (%s ago)\n", e.Verified.Format(time.RFC3339), time.Since(e.Verified).Round(time.Second))
	}
	if e.Expires.IsZero() {
		fmt.Fprintf(stdout, "  expires   never (no TTL on the key)\n")
	} else {
		fmt.Fprintf(stdout, "  expires   %s (in %s)\n", e.Expires.Format(time.RFC3339), time.Until(e.Expires).Round(time.Second))
	}
	if where != "" {
		fmt.Fprintf(stdout, "  stored    %s\n", where)
	}
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
	var key, domain string
	switch {
	case *all && fset.NArg() == 0:
	case !*all && fset.NArg() == 1 && strings.HasPrefix(fset.Arg(0), "@"):
		req.Domain = fset.Arg(0)[1:]
		var err error
		if domain, err = daemon.CheckDomain(req.Domain); err != nil {
			fmt.Fprintf(stderr, "calloutd flush: %v\n", err)
			return exitExUsage
		}
	case !*all && fset.NArg() == 1:
		req.Address = fset.Arg(0)
		var err error
		if key, err = daemon.AddressKey(req.Address); err != nil {
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
	removed := 0
	if cfg.Cache.Store == "redis" {
		r, code := redisStore(cfg, stderr, "flush")
		if r == nil {
			return code
		}
		defer r.Close()
		var err error
		if key != "" {
			removed, err = r.DeleteCount(ctx, key)
		} else {
			removed, err = r.Flush(ctx, domain)
		}
		if err != nil {
			fmt.Fprintf(stderr, "calloutd flush: %v\n", err)
			return exitUnavail
		}
	} else {
		resp, err := daemon.Admin(ctx, cfg.AdminSocket, req)
		if err != nil {
			fmt.Fprintf(stderr, "calloutd flush: %v\n", err)
			return exitUnavail
		}
		removed = resp.Removed
	}
	fmt.Fprintf(stdout, "removed %d cached verdict(s)\n", removed)
	return 0
}
