// Command calloutd is a Postfix policy server that verifies recipients by
// SMTP callout to the backend that holds their mailboxes.
//
//	calloutd serve [-config FILE] [-stdio]
//	calloutd check [-config FILE] [-server HOST:PORT] ADDRESS...
//	calloutd lookup [-config FILE] ADDRESS
//	calloutd flush [-config FILE] ADDRESS | @DOMAIN | -all
//	calloutd learn [-config FILE] [-v] < LOG
//	calloutd config [-config FILE] [-n | -check]
//	calloutd version
//
// See docs/ for configuration and operation.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/daemon"
	"github.com/calloutd/calloutd/internal/logfile"
)

// version is set at build time with -ldflags "-X main.version=..."; else
// the module version from the build info is used.
var version = ""

// Exit codes. serve and version use 2 for usage errors like most daemons;
// check, lookup and flush use BSD sysexits so scripts can tell a verdict
// (0, 1, 2) from a mistake (64 and up).
const (
	exitUsage    = 2
	exitExUsage  = 64 // EX_USAGE
	exitUnavail  = 69 // EX_UNAVAILABLE: the daemon could not be reached
	exitExConfig = 78 // EX_CONFIG
)

const usage = `Usage:
  calloutd serve  [-config FILE] [-stdio]            run the policy server
  calloutd check  [-config FILE] [-server HOST:PORT] ADDRESS...
                                                     verify now, bypassing the cache
  calloutd lookup [-config FILE] ADDRESS|@DOMAIN     show the cached verdict (@DOMAIN: catch-all)
  calloutd flush  [-config FILE] ADDRESS|@DOMAIN|-all  forget cached verdicts
  calloutd report [-config FILE] [-json]             licence count per domain
  calloutd learn  [-config FILE] [-v] < LOG          learn from Postfix log lines on standard input
  calloutd config [-config FILE] [-n | -check]       print the configuration in force, defaults
                                                     filled in (-n: only what differs from them);
                                                     -check: validate as serve would, exit 78 if bad
  calloutd version                                   print the version (also -version)

FILE defaults to ` + config.DefaultPath + `. Run "calloutd COMMAND -h" for a command's flags.
`

// stdin is what "calloutd learn" reads; tests replace it.
var stdin io.Reader = os.Stdin

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "version", "-version", "--version":
		if len(args) > 1 {
			fmt.Fprint(stderr, usage)
			return exitUsage
		}
		fmt.Fprintln(stdout, "calloutd", versionString())
		return 0
	case "serve":
		return serve(args[1:], stderr)
	case "check":
		return check(args[1:], stdout, stderr)
	case "lookup":
		return lookup(args[1:], stdout, stderr)
	case "flush":
		return flush(args[1:], stdout, stderr)
	case "report":
		return report(args[1:], stdout, stderr)
	case "learn":
		return learnCmd(args[1:], stdin, stdout, stderr)
	case "config":
		return configCmd(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "calloutd: unknown command %q\n%s", args[0], usage)
		return exitUsage
	}
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// flags returns a flag set for cmd with the -config flag every command has.
func flags(cmd string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, fs.String("config", config.DefaultPath, "configuration `file`")
}

// parse parses args; done is true when the command should exit with code.
func parse(fs *flag.FlagSet, args []string, usageCode int) (code int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return usageCode, true
	}
	return 0, false
}

func serve(args []string, stderr io.Writer) int {
	fs, path := flags("serve", stderr)
	stdio := fs.Bool("stdio", false, "serve one policy connection on standard input and output (Postfix spawn(8)); logs go to log.file, else syslog")
	if code, done := parse(fs, args, exitUsage); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "calloutd serve: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	var sighup chan os.Signal
	if !*stdio {
		sighup = hupEarly()
		defer signal.Stop(sighup)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		if *stdio {
			// spawn(8) connects stderr to Postfix: say it where an
			// admin will look, with the default log settings.
			quietStderr(nil)
			log, _ := syslogLogger(config.Default().Log)
			log.Error("calloutd serve -stdio: configuration error", "err", err)
			return exitExConfig
		}
		fmt.Fprintf(stderr, "calloutd: %v\n", err)
		return exitExConfig
	}
	if *stdio {
		return serveStdio(cfg)
	}
	var (
		w       io.Writer     = os.Stderr
		logFile *logfile.File // reopened on SIGHUP
	)
	if cfg.Log.File != "" {
		f, err := logfile.Open(cfg.Log.File)
		if err != nil {
			fmt.Fprintf(stderr, "calloutd: log.file: %v\n", err)
			return exitExConfig
		}
		defer f.Close()
		w, logFile = f, f
	}
	log, level := daemon.NewLogger(cfg.Log, w)
	d, err := daemon.New(cfg, daemon.Options{Path: *path, Logger: log, Level: level, Version: versionString()})
	if err != nil {
		fmt.Fprintf(stderr, "calloutd: %v\n", err)
		return 1
	}
	ls, err := d.Listen()
	if err != nil {
		fmt.Fprintf(stderr, "calloutd: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup, stopHUP := forwardHUP(ctx, sighup, logFile, log)
	defer stopHUP()
	log.Info("calloutd started", "version", versionString(), "config", *path, "routes", len(cfg.Routes))
	for _, w := range cfg.Warnings() {
		log.Warn("configuration warning", "key", w.Key, "warning", w.Msg)
	}
	if err := d.Serve(ctx, ls, hup); err != nil {
		log.Error("calloutd stopped", "err", err)
		return 1
	}
	log.Info("calloutd stopped")
	return 0
}
