package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/daemon"
	"github.com/calloutd/calloutd/internal/learn"
)

// learnCmd reads Postfix log lines on standard input and hands each
// delivery refused after END OF DATA to the running daemon, which decides
// whether it teaches anything (the same code as [learn] postfix_log):
//
//	journalctl -f -o cat -t postfix/smtp | calloutd learn
//
// Other lines are skipped here. A line the daemon could not be asked about
// (it is restarting) is reported and skipped: the stream goes on.
func learnCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fset, path := flags("learn", stderr)
	verbose := fset.Bool("v", false, "print what came of each delivery refused after END OF DATA")
	if code, done := parse(fset, args, exitExUsage); done {
		return code
	}
	if fset.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: calloutd learn [-config FILE] [-v] < LOG")
		return exitExUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "calloutd: %v\n", err)
		return exitExConfig
	}
	if cfg.AdminSocket == "" {
		fmt.Fprintf(stderr, "calloutd: %s: admin_socket is \"\", so the running daemon cannot be asked to learn\n", *path)
		return exitExConfig
	}
	counts := map[string]int{}
	lines, unsent := 0, 0
	err = learn.ReadLines(stdin, func(line string) {
		lines++
		if _, err := learn.Parse(line, time.Now()); errors.Is(err, learn.ErrNotBounce) {
			counts[daemon.LearnIgnored]++
			return
		}
		res, err := askLearn(cfg.AdminSocket, line)
		if err != nil {
			unsent++
			fmt.Fprintf(stderr, "calloutd learn: line %d not learned from: %v\n", lines, err)
			return
		}
		counts[res.Result]++
		if *verbose || res.Result == daemon.LearnLearned {
			msg := res.Result
			if res.Why != "" {
				msg += ": " + res.Why
			}
			fmt.Fprintf(stdout, "%s %s\n", cmp.Or(res.Address, "-"), msg)
		}
	})
	if err != nil {
		fmt.Fprintf(stderr, "calloutd learn: reading standard input: %v\n", err)
		return 1
	}
	var parts []string
	for r, n := range counts {
		parts = append(parts, fmt.Sprintf("%s %d", r, n))
	}
	sort.Strings(parts)
	if unsent > 0 {
		parts = append(parts, fmt.Sprintf("daemon unreachable %d", unsent))
	}
	fmt.Fprintf(stderr, "calloutd learn: %d lines: %s\n", lines, strings.Join(parts, ", "))
	if unsent > 0 {
		return exitUnavail
	}
	return 0
}

// askLearn sends one line to the daemon, trying once more a second later
// if it cannot be reached (a restart).
func askLearn(socket, line string) (daemon.LearnResult, error) {
	var err error
	for try := 0; try < 2; try++ {
		if try > 0 {
			time.Sleep(time.Second)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var resp daemon.AdminResponse
		resp, err = daemon.Admin(ctx, socket, daemon.AdminRequest{Op: "learn", Line: line})
		cancel()
		switch {
		case err != nil:
			continue
		case resp.Error != "":
			return daemon.LearnResult{}, errors.New(resp.Error)
		case resp.Learn == nil:
			return daemon.LearnResult{}, errors.New("the daemon does not know the learn request (an older calloutd?)")
		}
		return *resp.Learn, nil
	}
	return daemon.LearnResult{}, err
}
