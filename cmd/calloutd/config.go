package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/daemon"
)

// checkTimeout bounds config -check: the host names of routes and
// listeners are resolved, each within dns.timeout.
const checkTimeout = 30 * time.Second

// configCmd prints the configuration in force with every default filled
// in (postconf), or only what differs from the defaults (-n, postconf -n),
// or checks it (-check) the way serve would before starting. Exit 0 when
// the file is good (warnings allowed, on standard error), 78 (EX_CONFIG)
// when serve would refuse it, 64 on a usage error.
func configCmd(args []string, stdout, stderr io.Writer) int {
	fset, path := flags("config", stderr)
	nonDefault := fset.Bool("n", false, "print only the keys that differ from the defaults (like postconf -n)")
	check := fset.Bool("check", false, "check the file and what serve needs from the system; print only warnings and errors")
	if code, done := parse(fset, args, exitExUsage); done {
		return code
	}
	if fset.NArg() > 0 || *nonDefault && *check {
		fmt.Fprintln(stderr, "usage: calloutd config [-config FILE] [-n | -check]")
		return exitExUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "calloutd: %v\n", err)
		return exitExConfig
	}
	if !*check {
		pr := config.Print
		if *nonDefault {
			pr = config.PrintNonDefault
		}
		if err := pr(stdout, cfg); err != nil {
			fmt.Fprintf(stderr, "calloutd config: %v\n", err)
			return 1
		}
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	errs, warnings := config.Check(ctx, cfg, config.CheckOptions{})
	if len(errs) == 0 {
		// Build the routes as serve does: this reads the CA and
		// recipients files, with serve's own code and messages.
		if _, err := daemon.NewRouting(cfg, nil); err != nil {
			errs = append(errs, err)
		}
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "calloutd: warning: %s: %s\n", filepath.Base(*path), w)
	}
	for _, err := range errs {
		fmt.Fprintf(stderr, "calloutd: %s: %v\n", filepath.Base(*path), err)
	}
	if len(errs) > 0 {
		return exitExConfig
	}
	return 0
}
