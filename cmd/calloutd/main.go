// Command calloutd is a Postfix policy server that verifies recipients by
// SMTP callout to the backend that holds their mailboxes.
//
//	calloutd serve [-config FILE] [-stdio]
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
)

// version is set at build time with -ldflags "-X main.version=..."; else
// the module version from the build info is used.
var version = ""

// Exit codes for usage and configuration errors (BSD sysexits).
const (
	exitUsage  = 2
	exitConfig = 78 // EX_CONFIG
)

const usage = `Usage:
  calloutd serve [-config FILE] [-stdio]   run the policy server
  calloutd version                         print the version
  calloutd -version                        same

Run "calloutd serve -h" for the flags of serve.
`

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

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath, "configuration `file`")
	stdio := fs.Bool("stdio", false, "serve one policy connection on standard input and output (Postfix spawn(8)); logs go to log.file, else syslog")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "calloutd serve: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "calloutd: %v\n", err)
		return exitConfig
	}
	if *stdio {
		return serveStdio(cfg, stderr)
	}
	log := daemon.NewLogger(cfg.Log, os.Stderr)
	if cfg.Log.File != "" {
		f, err := os.OpenFile(cfg.Log.File, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			fmt.Fprintf(stderr, "calloutd: log.file: %v\n", err)
			return exitConfig
		}
		defer f.Close()
		log = daemon.NewLogger(cfg.Log, f)
	}
	d, err := daemon.New(cfg, log)
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
	log.Info("calloutd started", "version", versionString(), "config", *path, "routes", len(cfg.Routes))
	if err := d.Serve(ctx, ls); err != nil {
		log.Error("calloutd stopped", "err", err)
		return 1
	}
	log.Info("calloutd stopped")
	return 0
}
