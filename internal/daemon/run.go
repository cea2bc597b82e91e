package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lmittmann/tint"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/callout/directory"
	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/internal/learn"
	"github.com/calloutd/calloutd/internal/logline"
	"github.com/calloutd/calloutd/internal/metrics"
	"github.com/calloutd/calloutd/internal/recipients"
	"github.com/calloutd/calloutd/policyd"
)

// NewLogger builds the logger [log] asks for, writing to w: tint's coloured
// text when w is a terminal, the same layout without colour otherwise, or
// JSON; the last two by logline, which writes a verdict line (one per
// request) in a quarter of tint's time. The level is a LevelVar so a
// reload can change it.
func NewLogger(c config.Log, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	level.Set(parseLevel(c.Level))
	switch {
	case c.Format == "json":
		return slog.New(logline.New(w, logline.JSON, level)), level
	case isTerminal(w):
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: level, TimeFormat: time.RFC3339Nano})), level
	}
	return slog.New(logline.New(w, logline.Text, level)), level
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s)) // validated by config
	return l
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// NewRouting builds the routes and policy of cfg: each route asks its
// servers with its own settings and answers with its own policy. trace, if
// not nil, sees every SMTP line (debug logging, the tester).
func NewRouting(cfg *config.Config, trace func(callout.TraceEvent)) (*Routing, error) {
	return newRouting(cfg, callout.PerRoute{Default: newClient(cfg, trace)}, directory.NewPool(), newMX(cfg), trace)
}

// newMX is the resolver of "mx:" route servers ([dns]); it keeps its
// answers for their TTL, across reloads.
func newMX(cfg *config.Config) *callout.MXResolver {
	return &callout.MXResolver{Server: cfg.DNS.Resolver, Timeout: cfg.DNS.Timeout.D()}
}

// smtpSettings are how a route's (or the global) [callout] keys ask SMTP
// servers.
func smtpSettings(co *config.Callout, rules *callout.Rules) (*callout.Settings, error) {
	st := &callout.Settings{
		HeloName:       co.HeloName,
		MailFrom:       co.MailFrom,
		ConnectTimeout: co.ConnectTimeout.D(),
		CommandTimeout: co.CommandTimeout.D(),
		Rules:          rules,
		Source4:        co.Source4,
		Source6:        co.Source6,
		TLS:            co.TLS,
	}
	if co.TLSVerify {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: co.TLSServerName}
		if co.TLSCAFile != "" {
			pool, err := loadCA(co.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("tls_ca_file: %w", err)
			}
			tc.RootCAs = pool
		}
		st.TLSConfig, st.TLSKey = tc, "verify|"+co.TLSServerName+"|"+co.TLSCAFile
	}
	return st, nil
}

func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}

// ldapProber is the directory prober of an LDAP route.
func ldapProber(r *config.Route, dir *directory.Pool, trace func(callout.TraceEvent)) (*directory.Prober, error) {
	st := &directory.Settings{StartTLS: r.LDAPStartTLS, BindDN: r.LDAPBindDN, BindPassword: r.LDAPBindPassword,
		BaseDN: r.LDAPBaseDN, Filter: r.LDAPFilter, Timeout: r.LDAPTimeout.D(), CAFile: r.LDAPCAFile,
		TLS: &tls.Config{MinVersion: tls.VersionTLS12}}
	if r.LDAPCAFile != "" {
		pool, err := loadCA(r.LDAPCAFile)
		if err != nil {
			return nil, fmt.Errorf("route %q: ldap_ca_file: %w", r.Name, err)
		}
		st.TLS.RootCAs = pool
	}
	return &directory.Prober{Settings: st, Pool: dir, Trace: trace}, nil
}

// newClient is a client with cfg's global [callout] settings: one session
// per probe, as calloutd check wants it.
func newClient(cfg *config.Config, trace func(callout.TraceEvent)) *callout.Client {
	c := &callout.Client{Trace: trace}
	// Routes carry their own settings; these serve calloutd check
	// -server, asked without a route.
	if st, err := smtpSettings(&cfg.Callout, nil); err == nil {
		c.Settings = *st
	}
	return c
}

// NewPool is the daemon's session pool, with cfg's [callout] pool keys.
func NewPool(cfg *config.Config, trace func(callout.TraceEvent)) *callout.Pool {
	co := &cfg.Callout
	size := co.PoolSize
	if size == 0 {
		size = -1 // no idle sessions: one per probe
	}
	return callout.NewPool(newClient(cfg, trace), callout.PoolSettings{
		Size: size, MaxConns: co.MaxConnectionsPerServer, IdleTimeout: co.PoolIdleTimeout.D(),
		MaxAge: co.MaxSessionAge.D(), MaxErrors: co.SessionMaxErrors, MaxRecipients: co.SessionMaxRecipients,
	})
}

// newRouting builds cfg's routes over prober, with their recipients
// files read; a file that cannot be read or has a bad line is an error.
// LDAP routes search through dir (trace, if set, sees their searches);
// prober must dispatch to them (callout.PerRoute).
func newRouting(cfg *config.Config, prober callout.Prober, dir *directory.Pool, mx *callout.MXResolver,
	trace func(callout.TraceEvent)) (*Routing, error) {
	rt := &Routing{
		Policy:         policyOf(&cfg.Callout, cfg.Cache.PositiveTTL, cfg.Cache.NegativeTTL, cfg.Cache.TempfailTTL, cfg.Cache.PositiveRefresh),
		logCachedDunno: cfg.Log.CachedDunno,
		learnedTTL:     cfg.Learn.LearnedTTL.D(),
		gate:           newGate(cfg),
		names:          newDomainNames(cfg),
		routes:         make(map[string]*Policy, len(cfg.Routes)),
		fps:            make(map[string]uint64, len(cfg.Routes)),
	}
	rt.Policy.DryRun = cfg.Policy.DryRun
	routes := make([]callout.Route, len(cfg.Routes))
	for i, r := range cfg.Routes {
		e := &r.Effective
		if r.Kind == "ldap" {
			dp, err := ldapProber(&r, dir, trace)
			if err != nil {
				return nil, err
			}
			routes[i] = callout.Route{Name: r.Name, Domains: r.Domains, Servers: r.LDAPURLs, Prober: dp}
		} else {
			st, err := smtpSettings(&e.Callout, e.Rules)
			if err != nil {
				return nil, fmt.Errorf("route %q: %w", r.Name, err)
			}
			routes[i] = callout.Route{Name: r.Name, Domains: r.Domains, Servers: r.Servers, Settings: st}
		}
		p := policyOf(&e.Callout, e.PositiveTTL, e.NegativeTTL, e.TempfailTTL, cfg.Cache.PositiveRefresh)
		p.DryRun, p.NoCallout, p.Delimiter = e.DryRun, e.NoCallout, e.Callout.RecipientDelimiter
		if r.RecipientsFile != "" {
			l, err := recipients.Load(r.RecipientsFile)
			if err == nil && l.Len() == 0 && e.NoCallout {
				// A file emptied or truncated by whatever writes it
				// would make every address of the route unknown.
				err = fmt.Errorf("%s is empty, and with callout = false every address of the route would be unknown", r.RecipientsFile)
			}
			if err != nil {
				return nil, fmt.Errorf("route %q: recipients_file: %w", r.Name, err)
			}
			p.List, rt.lists = l, true
		}
		rt.routes[r.Name] = &p
	}
	for i := range routes {
		rt.fps[routes[i].Name] = routeFingerprint(&routes[i])
	}
	rt.Verifier = callout.NewVerifier(prober, routes)
	rt.Verifier.SetMX(mx)
	return rt, nil
}

func policyOf(co *config.Callout, positive, negative, tempfail, refresh config.Duration) Policy {
	return Policy{
		RequestTimeout:   co.RequestTimeout.D(),
		DeferUnreachable: co.UnreachableAction == "defer",
		DeferTempfail:    co.TempfailAction == "defer",
		PositiveTTL:      positive.D(),
		NegativeTTL:      negative.D(),
		TempfailTTL:      tempfail.D(),
		PositiveRefresh:  refresh.D(),
		ProbeCatchall:    co.ProbeCatchall,
		CatchallTTL:      co.CatchallTTL.D(),
	}
}

// Daemon is a configured calloutd: store, handler, policy server, metrics
// and admin endpoints.
type Daemon struct {
	path    string // configuration file, re-read by Reload
	cfg     atomic.Pointer[config.Config]
	log     *slog.Logger
	level   *slog.LevelVar
	store   cache.Store
	pool    *callout.Pool
	dir     *directory.Pool // LDAP routes' connections
	mx      *callout.MXResolver
	breaker *callout.Breaker
	handler *Handler
	server  *policyd.Server
	metrics *metrics.Metrics
	version string

	reloadMu  sync.Mutex
	ready     atomic.Bool
	listening atomic.Int32 // policy listeners being served
}

// Options are the parts of a daemon that do not come from the file.
type Options struct {
	Path    string         // configuration file, for Reload
	Logger  *slog.Logger   // default slog.Default()
	Level   *slog.LevelVar // the Logger's level, changed by Reload; may be nil
	Version string         // for calloutd_build_info
}

// New builds a daemon from cfg. With the Redis store, a Redis that cannot
// be reached is no error: the daemon starts degraded and recovers by
// itself.
func New(cfg *config.Config, o Options) (*Daemon, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	d := &Daemon{path: o.Path, log: o.Logger, level: o.Level, version: o.Version}
	// The store's background work may count an error before the metrics
	// exist.
	var mp atomic.Pointer[metrics.Metrics]
	store, err := NewStore(cfg, d.log, func(op string) {
		if m := mp.Load(); m != nil {
			m.RedisError(op)
		}
	}, true)
	if err != nil {
		return nil, err
	}
	d.store = store
	d.cfg.Store(cfg)
	d.metrics = metrics.New(o.Version, store.(metrics.CacheStats))
	mp.Store(d.metrics)
	// The pool outlives reloads; its lines go to d.trace, which looks at
	// the log level each time.
	d.pool = NewPool(cfg, d.trace)
	d.metrics.WatchPool(d.pool)
	d.dir = directory.NewPool()
	d.mx = newMX(cfg)
	d.breaker = &callout.Breaker{Next: callout.PerRoute{Default: d.pool}, OnChange: d.breakerChanged}
	rt, err := newRouting(cfg, d.breaker, d.dir, d.mx, d.trace)
	if err != nil {
		d.dir.Close()
		d.pool.Close()
		store.Close()
		return nil, err
	}
	d.handler = NewHandler(store, rt, d.log, d.metrics)
	d.metrics.WatchCatchalls(d.handler.catchall.count)
	if w := cfg.Stats.Window.D(); w > 0 {
		tally, ok := store.(cache.Tally)
		if !ok {
			tally = cache.NewMemoryTally(statsMemoryKeys)
		}
		d.handler.stats = newStats(tally, w, d.log)
	}
	d.markBackends(nil, cfg)
	d.server = &policyd.Server{Handler: d.handler, Logger: d.log, ConnState: d.metrics.ConnState, Panicked: d.metrics.Panic}
	return d, nil
}

// NewStore opens the verdict store cfg names. For Redis, track false leaves
// out the local layer and its invalidation connections (the admin
// commands, which read Redis itself).
func NewStore(cfg *config.Config, log *slog.Logger, onError func(op string), track bool) (cache.Store, error) {
	if cfg.Cache.Store != "redis" {
		return cache.NewMemory(cfg.Cache.MaxEntries), nil
	}
	r := cfg.Cache.Redis
	var tc *tls.Config
	if r.TLS {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	s, err := cache.NewRedis(cache.RedisOptions{
		Addrs: r.Addrs, MasterName: r.MasterName, Username: r.Username, Password: r.Password, DB: r.DB,
		KeyPrefix: r.KeyPrefix, TLS: tc, DialTimeout: r.DialTimeout.D(), ReadTimeout: r.ReadTimeout.D(),
		LocalEntries: cfg.Cache.MaxEntries, NoTracking: !track, Logger: log, OnError: onError,
	})
	if err != nil {
		return nil, fmt.Errorf("cache.redis: %w", err)
	}
	return s, nil
}

// trace logs every SMTP line at debug level.
func (d *Daemon) trace(ev callout.TraceEvent) {
	if !d.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	dir := "<"
	if ev.Sent {
		dir = ">"
	}
	d.log.Debug("smtp", "server", ev.Server, "dir", dir, "line", ev.Line, "elapsed", ev.Elapsed)
}

// Handler returns the policy handler.
func (d *Daemon) Handler() *Handler { return d.handler }

// Metrics returns the daemon's metrics.
func (d *Daemon) Metrics() *metrics.Metrics { return d.metrics }

// Config returns the configuration in force.
func (d *Daemon) Config() *config.Config { return d.cfg.Load() }

// Listeners are the sockets a daemon serves, opened before it drops into
// Serve so that errors (port in use) stop the start.
type Listeners struct {
	Policy  []net.Listener
	Metrics net.Listener // nil if metrics_listen = ""
	Admin   net.Listener // nil if admin_socket = "" or it could not be made
}

// Close closes every listener.
func (ls *Listeners) Close() {
	for _, l := range append(slices.Clone(ls.Policy), ls.Metrics, ls.Admin) {
		if l != nil {
			l.Close()
		}
	}
}

// Listen opens every listener of the configuration, or none. An admin socket
// that cannot be created is logged and skipped: it is a convenience, not a
// reason to refuse mail.
func (d *Daemon) Listen() (*Listeners, error) {
	cfg := d.Config()
	ls := &Listeners{}
	for _, addr := range cfg.Listen {
		l, err := policyd.Listen(addr)
		if err != nil {
			ls.Close()
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		ls.Policy = append(ls.Policy, l)
	}
	if cfg.MetricsListen != "" {
		l, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			ls.Close()
			return nil, fmt.Errorf("metrics_listen %s: %w", cfg.MetricsListen, err)
		}
		ls.Metrics = l
	}
	if cfg.AdminSocket != "" {
		l, err := listenAdmin(cfg.AdminSocket)
		if err != nil {
			d.log.Warn("admin socket unavailable; flush and lookup will not reach this daemon", "admin_socket", cfg.AdminSocket, "err", err)
		} else {
			ls.Admin = l
		}
	}
	return ls, nil
}

func listenAdmin(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	l, err := policyd.Listen("unix:" + path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Serve serves ls until ctx is cancelled, then drains: in-flight policy
// requests get up to the request timeout plus five seconds to finish.
// hup delivers reload requests (SIGHUP); it may be nil.
func (d *Daemon) Serve(ctx context.Context, ls *Listeners, hup <-chan os.Signal) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, l := range ls.Policy {
		d.log.Info("listening for policy requests", "addr", l.Addr().String())
		g.Go(func() error {
			if err := d.server.Serve(l); !errors.Is(err, policyd.ErrServerClosed) {
				return fmt.Errorf("serve %s: %w", l.Addr(), err)
			}
			return nil
		})
	}
	var httpSrv *http.Server
	if ls.Metrics != nil {
		httpSrv = &http.Server{Handler: d.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
		d.log.Info("serving metrics", "addr", ls.Metrics.Addr().String())
		g.Go(func() error {
			if err := httpSrv.Serve(ls.Metrics); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics: %w", err)
			}
			return nil
		})
	}
	if ls.Admin != nil {
		d.log.Info("admin socket ready", "path", ls.Admin.Addr().String())
		g.Go(func() error { d.serveAdmin(gctx, ls.Admin); return nil })
	}
	if hup != nil {
		g.Go(func() error {
			for {
				select {
				case <-gctx.Done():
					return nil
				case <-hup:
					_ = d.Reload()
				}
			}
		})
	}
	if path := d.Config().Learn.PostfixLog; path != "" {
		// Opened before serving: every line logged from now on is read.
		f := &learn.Follower{Path: path, Log: d.log}
		if err := f.Open(); err != nil {
			d.log.Error("cannot read the postfix log", "file", path, "err", err)
		}
		g.Go(func() error { d.followLog(gctx, f); return nil })
	}
	stopStats := d.runStats()
	d.listening.Store(int32(len(ls.Policy)))
	d.ready.Store(true)
	g.Go(func() error {
		<-gctx.Done()
		d.ready.Store(false)
		d.log.Info("shutting down, draining policy connections")
		sctx, cancel := context.WithTimeout(context.Background(), d.Config().MaxRequestTimeout()+5*time.Second)
		defer cancel()
		if err := d.server.Shutdown(sctx); err != nil {
			d.log.Warn("drain incomplete, connections closed", "err", err)
		}
		if ls.Admin != nil {
			ls.Admin.Close()
		}
		if httpSrv != nil {
			_ = httpSrv.Shutdown(sctx)
		}
		return nil
	})
	err := g.Wait()
	d.handler.Wait()
	stopStats()
	d.dir.Close()
	d.pool.Close()
	d.store.Close()
	return err
}

// followLog learns from the Postfix log at path until ctx is done. A log
// that cannot be read is logged and tried again every 10 seconds: the
// policy service goes on without learning.
func (d *Daemon) followLog(ctx context.Context, f *learn.Follower) {
	path := f.Path
	d.log.Info("learning from the postfix log", "file", path)
	for {
		err := f.Run(ctx, func(line string) { d.handler.Learn(ctx, line, 0) })
		if ctx.Err() != nil {
			return
		}
		d.log.Error("cannot read the postfix log, not learning; trying again in 10s", "file", path, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

// ServeConn serves one policy connection (spawn mode) and returns when the
// peer closes it.
func (d *Daemon) ServeConn(c net.Conn) {
	stopStats := d.runStats()
	d.server.ServeConn(c)
	d.handler.Wait()
	stopStats()
	d.dir.Close()
	d.pool.Close()
	d.store.Close()
}

// statsMemoryKeys bounds the memory store's licence-count keys (one per
// domain, kind and day: some 2,200 active domains over 30 days). A key
// takes about 230 B for a few recipients, 12 KiB beyond 1,536 a day.
const statsMemoryKeys = 200_000

// runStats starts the licence count's writer; the function it returns
// stops it after a last write.
func (d *Daemon) runStats() (stop func()) {
	s := d.handler.stats
	if s == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer d.handler.recoverPanic("licence count")
		s.run(ctx, d.metrics.ValidRecipients, func() []string { return namedDomains(d.Config()) })
	}()
	return func() { cancel(); <-done }
}

// Reload re-reads the configuration file. Routes, timeouts, actions, TTLs
// and the log level take effect at once, without closing connections; a
// change to anything bound at start (listeners, store, admin socket, log
// format or file) is logged as needing a restart. A bad file is refused
// and the running configuration stays.
func (d *Daemon) Reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	cfg, err := config.Load(d.path)
	var rt *Routing
	if err == nil {
		rt, err = newRouting(cfg, d.breaker, d.dir, d.mx, d.trace)
	}
	if err != nil {
		d.metrics.Reloaded(false)
		d.log.Error("configuration reload failed, keeping the running configuration", "config", d.path, "err", err)
		return err
	}
	old := d.Config()
	if restart := restartKeys(old, cfg); len(restart) > 0 {
		d.log.Warn("configuration changes that need a restart were not applied", "keys", restart)
	}
	if d.level != nil {
		d.level.Set(parseLevel(cfg.Log.Level))
	}
	d.handler.SetRouting(rt)
	d.markBackends(old, cfg)
	// Sessions of servers no route asks any more, or asked with another
	// HELO name or sender, are closed; the others are kept.
	d.pool.Retain(poolKeys(cfg))
	d.dir.Retain(ldapKeys(rt))
	// Keep what was not applied, so Config() tells what is in force.
	cfg.Listen, cfg.MetricsListen, cfg.AdminSocket = old.Listen, old.MetricsListen, old.AdminSocket
	cfg.Cache.Store, cfg.Cache.MaxEntries, cfg.Cache.Redis, cfg.Log.Format, cfg.Log.File = old.Cache.Store, old.Cache.MaxEntries, old.Cache.Redis, old.Log.Format, old.Log.File
	cfg.Stats, cfg.DNS, cfg.Learn.PostfixLog = old.Stats, old.DNS, old.Learn.PostfixLog
	d.cfg.Store(cfg)
	d.metrics.Reloaded(true)
	d.log.Info("configuration reloaded", "config", d.path, "routes", len(cfg.Routes))
	return nil
}

// breakerChanged logs and exports a server's breaker opening or closing.
func (d *Daemon) breakerChanged(server string, up bool) {
	d.metrics.BackendUp(server, up)
	if up {
		d.log.Info("backend server answers again; circuit breaker closed", "server", server)
		return
	}
	d.log.Warn("backend server failing at the connection level; skipped (circuit breaker open) until a trial succeeds", "server", server)
}

// markBackends exports calloutd_backend_up for cfg's servers (1 unless
// their breaker is open) and drops the servers of old that cfg no longer
// has.
func (d *Daemon) markBackends(old, cfg *config.Config) {
	now := map[string]bool{}
	for _, r := range cfg.Routes {
		for _, s := range append(slices.Clone(r.Servers), r.LDAPURLs...) {
			now[s] = true
			d.metrics.BackendUp(s, d.breaker.Up(s))
		}
	}
	if old != nil {
		for _, r := range old.Routes {
			for _, s := range append(slices.Clone(r.Servers), r.LDAPURLs...) {
				if !now[s] {
					d.metrics.ForgetBackend(s)
				}
			}
		}
	}
}

// poolKeys tells which pooled sessions cfg's routes still use.
func poolKeys(cfg *config.Config) func(server, helo, from, source, tls string) bool {
	type key struct{ server, helo, from, source, tls string }
	keep := map[key]bool{}
	for _, r := range cfg.Routes {
		st, err := smtpSettings(&r.Effective.Callout, nil)
		if err != nil {
			continue // newRouting refused this configuration already
		}
		for _, srv := range r.Servers {
			if callout.IsMX(srv) {
				// Its servers are whatever DNS says now: keep sessions
				// asked this way to any server (an MX host dropped from
				// DNS closes them when idle).
				srv = ""
			}
			keep[key{srv, st.HeloName, st.MailFrom, st.Source(), st.TLS + "|" + st.TLSKey}] = true
		}
	}
	return func(server, helo, from, source, tls string) bool {
		return keep[key{server, helo, from, source, tls}] || keep[key{"", helo, from, source, tls}]
	}
}

// ldapKeys are the pooled directory connections rt's LDAP routes use.
func ldapKeys(rt *Routing) []directory.Key {
	var keys []directory.Key
	for _, r := range rt.Verifier.Routes() {
		if dp, ok := r.Prober.(*directory.Prober); ok {
			keys = append(keys, dp.Keys(r.Servers)...)
		}
	}
	return keys
}

// restartKeys names the settings that differ and are only read at start.
func restartKeys(a, b *config.Config) []string {
	var keys []string
	if !slices.Equal(a.Listen, b.Listen) {
		keys = append(keys, "listen")
	}
	for _, k := range []struct {
		name string
		a, b any
	}{
		{"metrics_listen", a.MetricsListen, b.MetricsListen},
		{"admin_socket", a.AdminSocket, b.AdminSocket},
		{"cache.store", a.Cache.Store, b.Cache.Store},
		{"cache.max_entries", a.Cache.MaxEntries, b.Cache.MaxEntries},
		{"cache.redis", true, a.Cache.Redis.Same(b.Cache.Redis)},
		{"callout.pool_size", a.Callout.PoolSize, b.Callout.PoolSize},
		{"callout.max_connections_per_server", a.Callout.MaxConnectionsPerServer, b.Callout.MaxConnectionsPerServer},
		{"callout.pool_idle_timeout", a.Callout.PoolIdleTimeout, b.Callout.PoolIdleTimeout},
		{"callout.max_session_age", a.Callout.MaxSessionAge, b.Callout.MaxSessionAge},
		{"callout.session_max_errors", a.Callout.SessionMaxErrors, b.Callout.SessionMaxErrors},
		{"callout.session_max_recipients", a.Callout.SessionMaxRecipients, b.Callout.SessionMaxRecipients},
		{"log.format", a.Log.Format, b.Log.Format},
		{"log.file", a.Log.File, b.Log.File},
		{"stats.window", a.Stats.Window, b.Stats.Window},
		{"dns", a.DNS, b.DNS},
		{"learn.postfix_log", a.Learn.PostfixLog, b.Learn.PostfixLog},
	} {
		if k.a != k.b {
			keys = append(keys, k.name)
		}
	}
	return keys
}

// httpHandler serves /metrics, /healthz and /readyz.
func (d *Daemon) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !d.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: policy listeners are not serving")
			return
		}
		cfg := d.Config()
		// The memory store lives in this process and cannot be down.
		// A degraded Redis store still answers (from callouts and this
		// node's memory), so the daemon stays ready and says why.
		status := "reachable"
		if st, ok := d.store.(interface{ Status() string }); ok {
			status = st.Status()
		}
		fmt.Fprintf(w, "ready\nlisteners: %d serving\nconfig: loaded, %d routes\nstore: %s, %s\n",
			d.listening.Load(), len(cfg.Routes), cfg.Cache.Store, status)
	})
	return mux
}
