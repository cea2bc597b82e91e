package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

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
	// Only admin_socket is needed: the daemon has the rest. (A full load
	// would want the LDAP passwords of the daemon's environment.)
	socket, err := adminSocket(*path)
	if err != nil {
		fmt.Fprintf(stderr, "calloutd: %v\n", err)
		return exitExConfig
	}
	counts := map[string]int{}
	lines, unsent := 0, 0
	var queued learn.Recipients
	err = learn.ReadLines(stdin, func(line string) {
		lines++
		if queued.Note(line) {
			// How many recipients the message had: a refusal after
			// END OF DATA that names none is only learned from with one.
			counts[daemon.LearnIgnored]++
			return
		}
		b, err := learn.Parse(line, time.Now())
		if errors.Is(err, learn.ErrNotBounce) {
			counts[daemon.LearnIgnored]++
			return
		}
		res, err := askLearn(socket, line, queued.Count(b.QueueID))
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

// adminSocket reads admin_socket from the configuration file at path.
func adminSocket(path string) (string, error) {
	v := struct {
		AdminSocket *string `toml:"admin_socket"`
	}{}
	if _, err := toml.DecodeFile(path, &v); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	socket := config.Default().AdminSocket
	if v.AdminSocket != nil {
		socket = *v.AdminSocket
	}
	if socket == "" {
		return "", fmt.Errorf("%s: admin_socket is \"\", so the running daemon cannot be asked to learn", path)
	}
	if !filepath.IsAbs(socket) {
		return "", fmt.Errorf("%s: admin_socket: %q: socket path must be absolute", path, socket)
	}
	return socket, nil
}

// askLearn sends one line to the daemon, trying once more a second later
// if it cannot be reached (a restart).
func askLearn(socket, line string, recipients int) (daemon.LearnResult, error) {
	var err error
	for try := 0; try < 2; try++ {
		if try > 0 {
			time.Sleep(time.Second)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var resp daemon.AdminResponse
		resp, err = daemon.Admin(ctx, socket, daemon.AdminRequest{Op: "learn", Line: line, Recipients: recipients})
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
