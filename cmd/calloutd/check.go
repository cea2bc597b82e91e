package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/daemon"
)

// check verifies addresses now, bypassing the cache, and shows the SMTP
// dialogue: the admin's tester when a backend changes. Exit 0 when every
// address is valid, else the worst of 1 (unknown) and 2 (tempfail,
// unreachable, or no route); 64 and up for usage and configuration errors.
func check(args []string, stdout, stderr io.Writer) int {
	fset, path := flags("check", stderr)
	server := fset.String("server", "", "ask this `host:port` instead of the configured routes")
	if code, done := parse(fset, args, exitExUsage); done {
		return code
	}
	if fset.NArg() == 0 {
		fmt.Fprintln(stderr, "calloutd check: no address given\nusage: calloutd check [-config FILE] [-server HOST:PORT] ADDRESS...")
		return exitExUsage
	}
	configSet := false
	fset.Visit(func(f *flag.Flag) {
		if f.Name == "config" {
			configSet = true
		}
	})
	cfg, err := config.Load(*path)
	if err != nil && *server != "" && !configSet && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission)) {
		// A bare -server needs no file: a missing one, or one this user
		// may not read (/etc/calloutd is root:calloutd 0750).
		cfg, err = config.Default(), nil
	}
	if err != nil {
		fmt.Fprintf(stderr, "calloutd: %v\n", err)
		return exitExConfig
	}
	var addrs []callout.Address
	for _, s := range fset.Args() {
		a, err := callout.ParseAddress(s)
		if err != nil {
			fmt.Fprintf(stderr, "calloutd check: %q: %v\n", s, err)
			return exitExUsage
		}
		addrs = append(addrs, a)
	}
	if *server != "" {
		hp, err := callout.ParseServer(*server)
		if err != nil {
			fmt.Fprintf(stderr, "calloutd check: -server: %v\n", err)
			return exitExUsage
		}
		domains := []string{}
		for _, a := range addrs {
			domains = append(domains, a.Domain)
		}
		r := config.Route{Name: "-server", Domains: domains, Servers: []string{hp}}
		if err := cfg.Resolve("-server", &r); err != nil {
			fmt.Fprintf(stderr, "calloutd: %v\n", err)
			return exitExConfig
		}
		cfg.Routes = []config.Route{r}
	}

	worst := 0
	for i, a := range addrs {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		worst = max(worst, checkOne(cfg, a, stdout))
	}
	return worst
}

func checkOne(cfg *config.Config, a callout.Address, w io.Writer) int {
	fmt.Fprintf(w, "%s\n", a)
	last := ""
	rt, err := daemon.NewRouting(cfg, func(ev callout.TraceEvent) {
		if ev.Server != last {
			fmt.Fprintf(w, "  server %s\n", ev.Server)
			last = ev.Server
		}
		arrow := "←"
		if ev.Sent {
			arrow = "→"
		}
		fmt.Fprintf(w, "  %8s %s %s\n", ms(ev.Elapsed), arrow, printable(ev.Line))
	})
	if err != nil {
		fmt.Fprintf(w, "  %v\n", err)
		return 2
	}
	routes := rt.Verifier.Match(a.Domain)
	if len(routes) == 0 {
		fmt.Fprintf(w, "  no route covers %s: calloutd answers DUNNO without a callout\n", a.Domain)
		return 2
	}
	if base := a.Base(rt.PolicyFor(routes[0].Name).Delimiter); base != a {
		fmt.Fprintf(w, "  verifying %s (recipient_delimiter of route %s)\n", base, routes[0].Name)
		a = base
	}
	rest, route, listed := rt.Listed(a, routes)
	switch {
	case listed:
		fmt.Fprintf(w, "  verdict  valid: listed in the recipients_file of route %s, no callout\n", route)
		return 0
	case len(rest) == 0:
		e := cache.Entry{Verdict: callout.Unknown.String()}
		action := daemon.Decide(callout.Unknown, &e, false, rt.PolicyFor(route))
		fmt.Fprintf(w, "  verdict  unknown: not in the recipients_file of route %s (callout = false)\n", route)
		fmt.Fprintf(w, "  action   action=%s\n", action)
		return 1
	}
	routes = rest
	ctx, cancel := context.WithTimeout(context.Background(), rt.PolicyFor(routes[0].Name).RequestTimeout)
	defer cancel()
	start := time.Now()
	out := rt.Verifier.VerifyRoutes(ctx, a, routes)
	for _, at := range out.Attempts {
		res := fmt.Sprintf("%s (%s) [%s]", at.Result.Verdict, printable(at.Result.Reply.String()), at.Result.Class)
		if at.Err != nil {
			var ce *callout.Error
			reason := "error"
			if errors.As(at.Err, &ce) {
				reason = ce.Reason()
			}
			res = fmt.Sprintf("unavailable [%s]: %v", reason, at.Err)
		}
		fmt.Fprintf(w, "  attempt  route %s, server %s, %s: %s\n", at.Route, at.Server, ms(at.Duration), res)
	}
	e := daemon.EntryOf(&out, start)
	action := daemon.Decide(out.Verdict, &e, false, rt.PolicyOf(out.Route, routes))
	fmt.Fprintf(w, "  verdict  %s", out.Verdict)
	if out.Route != "" {
		fmt.Fprintf(w, " from route %s, server %s", out.Route, out.Server)
	}
	if out.Reply.Code != 0 {
		fmt.Fprintf(w, ": %s [%s]", printable(out.Reply.String()), out.Class)
	} else if out.Err != nil {
		fmt.Fprintf(w, ": %v", out.Err)
	}
	fmt.Fprintf(w, " (%s)\n", ms(time.Since(start)))
	fmt.Fprintf(w, "  action   action=%s\n", action)
	switch out.Verdict {
	case callout.Valid:
		return 0
	case callout.Unknown:
		return 1
	default:
		return 2
	}
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}

// printable replaces control characters a hostile backend might send (ANSI
// escapes for the admin's terminal) with '?'.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
