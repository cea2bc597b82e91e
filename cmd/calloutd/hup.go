package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/calloutd/calloutd/internal/logfile"
)

// hupEarly takes SIGHUP from the moment serve starts: without it, a reload
// while the daemon is still starting (logrotate's) would kill it with the
// signal's default action, an exit systemd does not restart. One that
// arrives before serving is acted on once serving begins.
func hupEarly() chan os.Signal {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	return sig
}

// forwardHUP takes SIGHUP for serve. Each one first reopens the log file,
// if there is one (logrotate renamed it, then reloaded us), then goes on to
// the daemon on the returned channel, which re-reads the configuration:
// the reopen happens whatever the reload then makes of the file, and the
// reload's own lines land in the new file. stop ends the forwarding.
// sig has been given to signal.Notify for SIGHUP (early: see hupEarly).
func forwardHUP(ctx context.Context, sig chan os.Signal, lf *logfile.File, log *slog.Logger) (hup <-chan os.Signal, stop func()) {
	out := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-sig:
				if lf != nil {
					if err := lf.Reopen(); err != nil {
						log.Error("log file not reopened, still writing to the previous one", "file", lf.Path(), "err", err)
					} else {
						log.Info("log file reopened", "file", lf.Path())
					}
				}
				select {
				case out <- s:
				default: // a reload still to come reads the file anyway
				}
			}
		}
	}()
	return out, func() {
		signal.Stop(sig)
		cancel()
		<-done
	}
}
