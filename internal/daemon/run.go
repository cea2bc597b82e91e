package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/lmittmann/tint"
	"golang.org/x/sync/errgroup"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/policyd"
)

// NewLogger builds the logger [log] asks for, writing to w: tint's coloured
// text when w is a terminal, plain text otherwise, or JSON.
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(tint.NewHandler(w, &tint.Options{Level: level, NoColor: !isTerminal(w), TimeFormat: time.RFC3339Nano}))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// NewRouting builds the routes and policy of cfg. trace, if not nil, sees
// every SMTP line (debug logging, the tester).
func NewRouting(cfg *config.Config, trace func(callout.TraceEvent)) *Routing {
	client := &callout.Client{
		HeloName:       cfg.Callout.HeloName,
		MailFrom:       cfg.Callout.MailFrom,
		ConnectTimeout: cfg.Callout.ConnectTimeout.D(),
		CommandTimeout: cfg.Callout.CommandTimeout.D(),
		Trace:          trace,
	}
	routes := make([]callout.Route, len(cfg.Routes))
	for i, r := range cfg.Routes {
		routes[i] = callout.Route{Name: r.Name, Domains: r.Domains, Servers: r.Servers}
	}
	return &Routing{
		Verifier: callout.NewVerifier(client, routes),
		Policy: Policy{
			RequestTimeout:   cfg.Callout.RequestTimeout.D(),
			DeferUnreachable: cfg.Callout.UnreachableAction == "defer",
			DeferTempfail:    cfg.Callout.TempfailAction == "defer",
			PositiveTTL:      cfg.Cache.PositiveTTL.D(),
			NegativeTTL:      cfg.Cache.NegativeTTL.D(),
			TempfailTTL:      cfg.Cache.TempfailTTL.D(),
		},
	}
}

// Daemon is a configured calloutd: store, handler and policy server.
type Daemon struct {
	cfg     *config.Config
	log     *slog.Logger
	store   cache.Store
	handler *Handler
	server  *policyd.Server
}

// New builds a daemon from cfg, logging to log.
func New(cfg *config.Config, log *slog.Logger) (*Daemon, error) {
	var trace func(callout.TraceEvent)
	if log.Enabled(context.Background(), slog.LevelDebug) {
		trace = func(ev callout.TraceEvent) {
			dir := "<"
			if ev.Sent {
				dir = ">"
			}
			log.Debug("smtp", "server", ev.Server, "dir", dir, "line", ev.Line, "elapsed", ev.Elapsed)
		}
	}
	store := cache.NewMemory(cfg.Cache.MaxEntries)
	d := &Daemon{cfg: cfg, log: log, store: store}
	d.handler = NewHandler(store, NewRouting(cfg, trace), log)
	d.server = &policyd.Server{Handler: d.handler, Logger: log}
	return d, nil
}

// Handler returns the policy handler (for tests and the stdio mode).
func (d *Daemon) Handler() *Handler { return d.handler }

// Listen opens every policy listener of the configuration, or none.
func (d *Daemon) Listen() ([]net.Listener, error) {
	var ls []net.Listener
	for _, addr := range d.cfg.Listen {
		l, err := policyd.Listen(addr)
		if err != nil {
			for _, o := range ls {
				o.Close()
			}
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// Serve serves the policy protocol on ls until ctx is cancelled, then
// drains: in-flight requests get up to the request timeout plus five
// seconds to finish.
func (d *Daemon) Serve(ctx context.Context, ls []net.Listener) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, l := range ls {
		d.log.Info("listening for policy requests", "addr", l.Addr().String())
		g.Go(func() error {
			if err := d.server.Serve(l); !errors.Is(err, policyd.ErrServerClosed) {
				return fmt.Errorf("serve %s: %w", l.Addr(), err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		d.log.Info("shutting down, draining policy connections")
		sctx, cancel := context.WithTimeout(context.Background(), d.cfg.Callout.RequestTimeout.D()+5*time.Second)
		defer cancel()
		if err := d.server.Shutdown(sctx); err != nil {
			d.log.Warn("drain incomplete, connections closed", "err", err)
		}
		return nil
	})
	err := g.Wait()
	d.store.Close()
	return err
}

// ServeConn serves one policy connection (spawn mode) and returns when the
// peer closes it.
func (d *Daemon) ServeConn(c net.Conn) {
	d.server.ServeConn(c)
	d.store.Close()
}
