package metrics

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/policyd"
)

const ns = "calloutd"

// Metrics is the registry and every collector calloutd exports.
type Metrics struct {
	Registry *prometheus.Registry

	policyRequests   *prometheus.CounterVec
	policyConns      prometheus.Gauge
	verdicts         *prometheus.CounterVec
	cacheHits        prometheus.Counter
	cacheMisses      prometheus.Counter
	cacheErrors      *prometheus.CounterVec
	calloutDuration  *prometheus.HistogramVec
	calloutsInFlight prometheus.Gauge
	backendAttempts  *prometheus.CounterVec
	backendFailures  *prometheus.CounterVec
	backendReplies   *prometheus.CounterVec
	panics           prometheus.Counter
	redisErrors      *prometheus.CounterVec
	backendUp        *prometheus.GaugeVec
	skipped          *prometheus.CounterVec
	dryRun           *prometheus.CounterVec
	harvestRejected  prometheus.Counter
	harvestLimited   prometheus.Counter
	validRecipients  *prometheus.GaugeVec
	catchallProbes   *prometheus.CounterVec
	learnLines       *prometheus.CounterVec
	// Series of the hot path, resolved once.
	rcptRequests    map[string]prometheus.Counter
	cachedVerdicts  [callout.Unreachable + 1]prometheus.Counter
	attemptDuration *prometheus.HistogramVec
	reloads         *prometheus.CounterVec
	reloadOK        prometheus.Gauge
	reloadTimestamp prometheus.Gauge
}

// CacheStats is what a store tells about the entries this process holds.
type CacheStats interface {
	Len() int
	Evictions() uint64
}

// StoreHealth is what a networked store (Redis) tells about itself.
type StoreHealth interface {
	Up() bool       // the store answered the last time it was asked
	Tracking() bool // the local layer is kept coherent and in use
}

// New registers every metric. cache may be nil (no memory store).
func New(version string, cache CacheStats) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		policyRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "policy_requests_total",
			Help: "Policy requests answered, by protocol_state (RCPT, DATA, ...) and action (dunno, reject, defer, defer_if_permit, other).",
		}, []string{"protocol_state", "action"}),
		policyConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "policy_connections",
			Help: "Policy connections from Postfix open now.",
		}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "verdicts_total",
			Help: "Verdicts given, by verdict (valid, unknown, tempfail, unreachable) and source (cache, callout, coalesced: another request's callout for the same address, made at the same moment; list: a route's recipients_file; catchall: a domain known to be catch-all, answered without a callout).",
		}, []string{"verdict", "source"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "cache_hits_total",
			Help: "Verdict cache lookups that found an entry.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "cache_misses_total",
			Help: "Verdict cache lookups that found nothing.",
		}),
		cacheErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "cache_errors_total",
			Help: "Verdict cache operations that failed (store unreachable), by op (get, set; count: the harvest limit's counters).",
		}, []string{"op"}),
		calloutDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "callout_duration_seconds",
			Help:    "Time to reach a verdict by callout, all routes and servers, by route (the one that answered, or the first asked) and outcome (valid, unknown, tempfail, unreachable).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "outcome"}),
		attemptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "backend_attempt_duration_seconds",
			Help:    "Time one backend server took, from connect to the end of the session or its failure, by server (host:port).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"server"}),
		calloutsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "callouts_in_flight",
			Help: "Callouts running now.",
		}),
		backendAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "backend_attempts_total",
			Help: "Backend servers asked, by server (host:port).",
		}, []string{"server"}),
		backendFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "backend_failures_total",
			Help: "Backend servers that could not answer about the recipient, by server and reason: connect, timeout, breaker_open (skipped: its circuit breaker is open), greeting, hello, mail, protocol, closed, canceled, other, dns (an mx: server entry could not be resolved), tls (STARTTLS refused, missing with tls = \"required\", or a failed handshake), no_smtputf8 (a UTF-8 address and a server without SMTPUTF8), ldap_bind, ldap_search (an LDAP route's directory); or, for a reply to RCPT TO that refused us, its reason (relay_denied, client_refused, helo_refused, sender_refused, policy, rate_limited, closing) or unrecognised.",
		}, []string{"server", "reason"}),
		backendReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "backend_replies_total",
			Help: "Replies to RCPT TO, by server, meaning (exists, unknown, temporary, refused, unrecognised, ignored) and reason (accepted, no_such_user, disabled, moved, admin, greylisted, rate_limited, quota, too_many_recipients, temporary, relay_denied, client_refused, helo_refused, sender_refused, policy, closing, protocol, unrecognised, ignored); for an LDAP route's directory, exists/ldap_found and unknown/ldap_not_found.",
		}, []string{"server", "meaning", "reason"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "panics_total",
			Help: "Panics recovered while answering a request; the request was answered DUNNO and the daemon lived on. Any increase is a bug: please report it with the logged stack.",
		}),
		backendUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "backend_up",
			Help: "1 while a backend server's circuit breaker is closed; 0 while it is open (the server failed at the connection level 3 times in a row and is skipped, with a trial after a cool-down of 1 s doubling to 1 min).",
		}, []string{"server"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "redis_errors_total",
			Help: "Redis operations that failed, by op: get, set, delete, flush, lease, decode (a value calloutd could not read, treated as a miss), tracking (the invalidation connection was lost or could not be made), count (the harvest limit's counters), tally (the licence count's sketches).",
		}, []string{"op"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "requests_skipped_total",
			Help: "RCPT requests answered DUNNO without a callout or a cache lookup, by reason: trusted_network (policy.trusted_networks), authenticated (a SASL client, policy.skip_authenticated).",
		}, []string{"reason"}),
		dryRun: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "dry_run_would_reject_total",
			Help: "Answers a dry run (policy.dry_run or a route's dry_run) did not send: DUNNO went out instead of this reject or deferral, by route.",
		}, []string{"route"}),
		harvestRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "harvest_rejected_total",
			Help: "RCPT requests refused by the directory-harvest limit (harvest.max_unknown), without a callout or a cache lookup.",
		}),
		harvestLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "harvest_clients_limited_total",
			Help: "Times a client (network) reached the directory-harvest limit; each is logged once.",
		}),
		validRecipients: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "valid_recipients",
			Help: "Licence count: distinct valid recipients over the stats window, by domain a route names (estimated; exact below a few hundred). Computed every 5 minutes, for domains this node has seen in the window; with Redis every node reports the shared figure.",
		}, []string{"domain"}),
		catchallProbes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "catchall_probes_total",
			Help: "Catch-all probes (probe_catchall) that got an answer, by result: catchall (the backend accepted an address that cannot exist) or not_catchall.",
		}, []string{"result"}),
		learnLines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "learn_lines_total",
			Help: "Lines of the gateway's Postfix log weighed for learning ([learn] postfix_log, calloutd learn), by result: learned (a negative verdict stored), ignored (not a delivery refused after END OF DATA), malformed, not_backend (the relay is not a server of the recipient's route), not_unknown (the reply does not say the recipient is unknown), stale (older than learned_ttl), listed (a recipients_file decides), ambiguous (the refusal may be about another recipient of the message), store_error.",
		}, []string{"result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "config_reloads_total",
			Help: "Configuration reloads (SIGHUP), by result (success, failure).",
		}, []string{"result"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "config_last_reload_successful",
			Help: "1 if the last configuration reload succeeded (or none was tried since start), 0 if it failed and an older configuration is running.",
		}),
		reloadTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last loaded successfully, in Unix seconds.",
		}),
	}
	r.MustRegister(m.policyRequests, m.policyConns, m.verdicts, m.cacheHits, m.cacheMisses, m.cacheErrors,
		m.calloutDuration, m.calloutsInFlight, m.backendAttempts, m.backendFailures, m.backendReplies, m.panics, m.attemptDuration, m.redisErrors, m.backendUp,
		m.skipped, m.dryRun, m.harvestRejected, m.harvestLimited, m.validRecipients, m.catchallProbes, m.learnLines, m.reloads, m.reloadOK, m.reloadTimestamp)
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Name: "build_info",
		Help:        "Always 1; the labels tell the calloutd version and the Go version that built it.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	}, func() float64 { return 1 }))
	if cache != nil {
		r.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: ns, Name: "cache_entries",
				Help: "Entries held in this process: the memory store's, or the Redis store's local layers (expired ones until looked up or evicted).",
			}, func() float64 { return float64(cache.Len()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Namespace: ns, Name: "cache_evictions_total",
				Help: "Entries evicted from this process's verdict memory to stay within max_entries.",
			}, func() float64 { return float64(cache.Evictions()) }),
		)
	}
	health, _ := cache.(StoreHealth)
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Name: "store_up",
		Help: "1 when the verdict store answers (always, for the memory store); 0 while Redis is unreachable and verdicts are kept in this node's memory.",
	}, func() float64 { return b2f(health == nil || health.Up()) }))
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Name: "redis_tracking_up",
		Help: "1 while the Redis store's local layer is in use: every master's invalidation connection is up and answered lately; 0 while every lookup asks Redis (and always 0 for the memory store).",
	}, func() float64 { return b2f(health != nil && health.Tracking()) }))
	for _, op := range []string{"get", "set", "delete", "flush", "lease", "decode", "tracking", "count", "tally"} {
		m.redisErrors.WithLabelValues(op)
	}
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, l := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(l)
	}
	for _, op := range []string{"get", "set", "count"} {
		m.cacheErrors.WithLabelValues(op)
	}
	for _, r := range []string{"trusted_network", "authenticated"} {
		m.skipped.WithLabelValues(r)
	}
	for _, r := range []string{"catchall", "not_catchall"} {
		m.catchallProbes.WithLabelValues(r)
	}
	for _, r := range LearnResults {
		m.learnLines.WithLabelValues(r)
	}
	m.rcptRequests = make(map[string]prometheus.Counter)
	for _, a := range []string{"dunno", "reject", "defer", "defer_if_permit", "other"} {
		m.rcptRequests[a] = m.policyRequests.WithLabelValues("RCPT", a)
	}
	for v := callout.Valid; v <= callout.Unreachable; v++ {
		m.cachedVerdicts[v] = m.verdicts.WithLabelValues(v.String(), "cache")
	}
	m.reloadOK.Set(1)
	m.reloadTimestamp.SetToCurrentTime()
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// PoolStats is what the callout session pool tells about itself.
type PoolStats interface {
	Stats() (open, idle int)
}

// WatchPool exports the session pool's sessions.
func (m *Metrics) WatchPool(p PoolStats) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Name: "backend_sessions_open",
			Help: "SMTP sessions to backend servers open now, busy or idle in the pool.",
		}, func() float64 { open, _ := p.Stats(); return float64(open) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Name: "backend_sessions_idle",
			Help: "SMTP sessions to backend servers idle in the pool, each holding its one open transaction.",
		}, func() float64 { _, idle := p.Stats(); return float64(idle) }),
	)
}

// BackendUp sets a server's breaker state.
func (m *Metrics) BackendUp(server string, up bool) { m.backendUp.WithLabelValues(server).Set(b2f(up)) }

// ForgetBackend drops a server no route asks any more.
func (m *Metrics) ForgetBackend(server string) { m.backendUp.DeleteLabelValues(server) }

// RedisError counts a failed Redis operation.
func (m *Metrics) RedisError(op string) { m.redisErrors.WithLabelValues(op).Inc() }

// ActionLabel reduces an action to a label of bounded cardinality.
func ActionLabel(a policyd.Action) string {
	s := string(a)
	switch {
	case s == string(policyd.Dunno):
		return "dunno"
	case strings.HasPrefix(s, "DEFER_IF_PERMIT"):
		return "defer_if_permit"
	case len(s) >= 3 && s[0] == '5':
		return "reject"
	case len(s) >= 3 && s[0] == '4':
		return "defer"
	}
	return "other"
}

// PolicyRequest implements daemon.Observer. The common series (RCPT with
// each action) are looked up once, not per request.
func (m *Metrics) PolicyRequest(state string, a policyd.Action) {
	action := ActionLabel(a)
	if state == "RCPT" {
		if c := m.rcptRequests[action]; c != nil {
			c.Inc()
			return
		}
	}
	switch state {
	case "CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY", "ETRN":
	default:
		state = "other" // a hostile client must not mint label values
	}
	m.policyRequests.WithLabelValues(state, action).Inc()
}

// CacheLookup implements daemon.Observer.
func (m *Metrics) CacheLookup(hit bool) {
	if hit {
		m.cacheHits.Inc()
	} else {
		m.cacheMisses.Inc()
	}
}

// CacheError implements daemon.Observer.
func (m *Metrics) CacheError(op string) { m.cacheErrors.WithLabelValues(op).Inc() }

// Verdict implements daemon.Observer.
func (m *Metrics) Verdict(v callout.Verdict, source string) {
	if source == "cache" && int(v) < len(m.cachedVerdicts) && m.cachedVerdicts[v] != nil {
		m.cachedVerdicts[v].Inc() // the hot path: no label lookup
		return
	}
	m.verdicts.WithLabelValues(v.String(), source).Inc()
}

// CalloutBegin implements daemon.Observer.
func (m *Metrics) CalloutBegin() { m.calloutsInFlight.Inc() }

// CalloutEnd implements daemon.Observer.
func (m *Metrics) CalloutEnd(out *callout.Outcome, d time.Duration) {
	m.calloutsInFlight.Dec()
	route := out.Route
	if route == "" && len(out.Attempts) > 0 {
		route = out.Attempts[0].Route
	}
	if out.Verdict != 0 {
		m.calloutDuration.WithLabelValues(route, out.Verdict.String()).Observe(d.Seconds())
	}
	for _, a := range out.Attempts {
		m.backendAttempts.WithLabelValues(a.Server).Inc()
		m.attemptDuration.WithLabelValues(a.Server).Observe(a.Duration.Seconds())
		c := a.Result.Class
		if c.Meaning != 0 {
			m.backendReplies.WithLabelValues(a.Server, c.Meaning.String(), c.Reason).Inc()
		}
		// A reply the route's ignore_replies matched is the admin's
		// choice, not a failing server.
		if a.Err != nil && c.Meaning != callout.MeansIgnored {
			m.backendFailures.WithLabelValues(a.Server, reason(a.Err)).Inc()
		}
	}
}

func reason(err error) string {
	var ce *callout.Error
	if errors.As(err, &ce) {
		if errors.Is(err, context.Canceled) {
			return "canceled"
		}
		return ce.Reason()
	}
	return "other"
}

// Panic implements daemon.Observer.
func (m *Metrics) Panic() { m.panics.Inc() }

// Skipped implements daemon.Observer.
func (m *Metrics) Skipped(reason string) { m.skipped.WithLabelValues(reason).Inc() }

// DryRunWouldReject implements daemon.Observer.
func (m *Metrics) DryRunWouldReject(route string) { m.dryRun.WithLabelValues(route).Inc() }

// HarvestRejected implements daemon.Observer.
func (m *Metrics) HarvestRejected() { m.harvestRejected.Inc() }

// ValidRecipients sets the licence count of domain; n < 0 removes the
// series.
func (m *Metrics) ValidRecipients(domain string, n int64) {
	if n < 0 {
		m.validRecipients.DeleteLabelValues(domain)
		return
	}
	m.validRecipients.WithLabelValues(domain).Set(float64(n))
}

// Catchall implements daemon.Observer.
func (m *Metrics) Catchall(_ string, catchall bool) {
	if catchall {
		m.catchallProbes.WithLabelValues("catchall").Inc()
	} else {
		m.catchallProbes.WithLabelValues("not_catchall").Inc()
	}
}

// LearnResults are the results of calloutd_learn_lines_total (daemon's
// Learn* constants).
var LearnResults = []string{"learned", "ignored", "malformed", "not_backend", "not_unknown", "stale", "listed", "ambiguous", "store_error"}

// Learned implements daemon.Observer.
func (m *Metrics) Learned(result string) { m.learnLines.WithLabelValues(result).Inc() }

// WatchCatchalls exports calloutd_catchall_domains: how many domains this
// node knows to be catch-all.
func (m *Metrics) WatchCatchalls(count func() int) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Name: "catchall_domains",
		Help: "Domains this node knows to be catch-all (probe_catchall): their recipients get DUNNO without callouts until the next probe.",
	}, func() float64 { return float64(count()) }))
}

// HarvestLimited implements daemon.Observer.
func (m *Metrics) HarvestLimited() { m.harvestLimited.Inc() }

// ConnState counts open policy connections (policyd.Server.ConnState).
func (m *Metrics) ConnState(delta int) { m.policyConns.Add(float64(delta)) }

// Reloaded counts a configuration reload.
func (m *Metrics) Reloaded(ok bool) {
	if ok {
		m.reloads.WithLabelValues("success").Inc()
		m.reloadOK.Set(1)
		m.reloadTimestamp.SetToCurrentTime()
	} else {
		m.reloads.WithLabelValues("failure").Inc()
		m.reloadOK.Set(0)
	}
}
