package daemon

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/callout/directory"
	"github.com/calloutd/calloutd/internal/learn"
	"github.com/calloutd/calloutd/policyd"
)

// Routing is the part of the configuration a reload may replace as a whole:
// the routes with the prober that asks them, and the answer policies.
type Routing struct {
	Verifier *callout.Verifier
	// Policy is the global one ([callout] and [cache]); each route has its
	// own, with the route's overrides.
	Policy Policy
	routes map[string]*Policy // by route name
	fps    map[string]uint64  // fingerprint of each route, by name
	// logCachedDunno: log cached answers that pass too ([log] cached_dunno).
	logCachedDunno bool
	gate           gate
	lists          bool        // some route has a recipients_file
	names          domainNames // route domain entries, for the licence count
	learnedTTL     time.Duration
}

// PolicyFor returns route's policy, or the global one for a route that is
// not (or no longer) configured.
func (rt *Routing) PolicyFor(route string) *Policy {
	if p, ok := rt.routes[route]; ok {
		return p
	}
	return &rt.Policy
}

// PolicyOf is the policy of the route that decided, or of the first of the
// routes asked when none did (unreachable).
func (rt *Routing) PolicyOf(route string, asked []*callout.Route) *Policy {
	if route == "" {
		route = asked[0].Name
	}
	return rt.PolicyFor(route)
}

// fingerprint combines the precomputed fingerprints of routes (see
// routeFingerprint); it is the same on every node with the same
// configuration.
func (rt *Routing) fingerprint(routes []*callout.Route) uint64 {
	h := uint64(14695981039346656037)
	for _, r := range routes {
		fp, ok := rt.fps[r.Name]
		if !ok {
			fp = routeFingerprint(r)
		}
		h = (h ^ fp) * 1099511628211
	}
	return h
}

// maxWrites bounds the cache writes in flight: a store that hangs must not
// pile up goroutines without end. A write beyond it is dropped and counted
// as a failed "set".
const maxWrites = 1024

// Handler answers policy requests: cache first, then a callout.
type Handler struct {
	store    cache.Store
	inline   bool           // the store never blocks: write in the request's goroutine
	at       cache.ReaderAt // the store, when it reads as of a given time
	bounded  bool           // the store bounds its own calls: no deadline per lookup
	coal     cache.Coalescer
	counter  cache.Counter        // harvest counts: the store's when it has them
	limited  *cache.MemoryCounter // clients this node knows to be over the harvest limit
	stats    *stats               // licence count; nil: off
	catchall catchalls
	// learnHosts: route server host name → hostAddrs, to match relays
	// in the delivery log.
	learnHosts sync.Map
	queued     learn.Recipients // recipients per recent message, from qmgr's lines
	flight     singleflight.Group
	log        *slog.Logger
	routing    atomic.Pointer[Routing]
	obs        Observer
	now        func() time.Time

	writes        sync.WaitGroup
	inFlight      atomic.Int32
	refreshing    atomic.Int32
	refreshKeys   sync.Map // key → refreshInFlight, or time.Time: no refresh before
	refreshFailed atomic.Int32
	closeMu       sync.RWMutex // closed and writes.Add against Wait
	closed        bool
}

// NewHandler returns a Handler over store with the given routing. obs may
// be nil.
func NewHandler(store cache.Store, r *Routing, log *slog.Logger, obs Observer) *Handler {
	if obs == nil {
		obs = nopObserver{}
	}
	_, inline := store.(cache.Nonblocking)
	_, bounded := store.(cache.SelfBounded)
	coal, _ := store.(cache.Coalescer)
	at, _ := store.(cache.ReaderAt)
	counter, ok := store.(cache.Counter)
	if !ok {
		counter = cache.NewMemoryCounter(maxLimited)
	}
	h := &Handler{store: store, inline: inline, at: at, bounded: inline || bounded, coal: coal, counter: counter,
		limited: newLimited(), log: log, obs: obs, now: time.Now}
	h.routing.Store(r)
	return h
}

// SetRouting replaces routes and policy; requests already running finish
// with the old ones.
func (h *Handler) SetRouting(r *Routing) { h.routing.Store(r) }

// Routing returns the routes and policy in force.
func (h *Handler) Routing() *Routing { return h.routing.Load() }

// Wait waits for the cache writes in flight, before the store is closed;
// a handler still answering after it (a drain that ran out) writes nothing.
func (h *Handler) Wait() {
	h.closeMu.Lock()
	h.closed = true
	h.closeMu.Unlock()
	h.writes.Wait()
}

// HandlePolicy implements policyd.Handler.
func (h *Handler) HandlePolicy(ctx context.Context, req *policyd.Request) policyd.Action {
	a := h.handle(ctx, req)
	h.obs.PolicyRequest(req.ProtocolState, a)
	return a
}

// cacheTimeout is how long one cache call may take: a twentieth of the
// verdict's budget, between 20 ms and 500 ms (1.5 s of a 30 s budget at
// most, with the lookup and the write). A store slower than that is
// answered as a miss, so a hanging store costs Postfix little.
func cacheTimeout(budget time.Duration) time.Duration {
	return min(max(budget/20, 20*time.Millisecond), 500*time.Millisecond)
}

func (h *Handler) handle(ctx context.Context, req *policyd.Request) policyd.Action {
	if req.ProtocolState != "RCPT" || req.Recipient == "" {
		return policyd.Dunno
	}
	start := h.now()
	rt := h.routing.Load()
	client, skip := rt.gate.client(req)
	if skip != "" {
		h.obs.Skipped(skip)
		return policyd.Dunno
	}
	rcpt, err := callout.ParseAddress(req.Recipient)
	if err != nil {
		// Nothing we could put on the wire safely; Postfix judges it.
		h.log.Info("recipient not verified", "queue_id", req.QueueID, "client", req.ClientAddress,
			"recipient", req.Recipient, "reason", err.Error(), "action", string(policyd.Dunno))
		return policyd.Dunno
	}
	routes := rt.Verifier.Match(rcpt.Domain)
	if len(routes) == 0 {
		return policyd.Dunno
	}
	first := rt.PolicyFor(routes[0].Name)
	// One budget for the whole verdict, cache included: the first route's
	// request_timeout, from the request's start.
	deadline := start.Add(first.RequestTimeout)
	ctimeout := cacheTimeout(first.RequestTimeout)

	// What concerns the client or the domain is decided once, whatever
	// addresses are asked below.
	if !first.DryRun && h.harvestLimited(ctx, &rt.gate, client, rcpt, ctimeout) {
		h.obs.HarvestRejected()
		return HarvestAction(rt.gate.deferIt)
	}
	if first.ProbeCatchall && h.isCatchall(ctx, strings.ToLower(rcpt.Domain), ctimeout, deadline) {
		// Its backend says yes to everything: a callout would tell
		// nothing, and a verdict would count a mailbox that may not be.
		// What the delivery log taught still stands.
		if a, ok := h.learnedAnswer(ctx, req, rt, client, routes, rcpt, start, deadline, ctimeout); ok {
			return a
		}
		h.obs.Verdict(callout.Valid, "catchall")
		return policyd.Dunno
	}

	base := rcpt.Base(first.Delimiter)
	if base == rcpt {
		return h.answer(ctx, req, rt, client, routes, rcpt, start, deadline, ctimeout)
	}
	// What the delivery log taught about this very address (the backend
	// refused bob+news@ after END OF DATA) stands, whatever bob@'s
	// verdict says.
	if a, ok := h.learnedAnswer(ctx, req, rt, client, routes, rcpt, start, deadline, ctimeout); ok {
		return a
	}
	// recipient_delimiter: bob+news@ exists when bob@ does (asked first:
	// one verdict for all of bob's extensions, cached) or when bob+news@
	// itself does (an exact mailbox such as john-smith@ with "-" among
	// the delimiters), as Postfix looks both up. Unknown only when both
	// are; a deferral of either wins over the other's rejection.
	a := h.answer(ctx, req, rt, client, routes, base, start, deadline, ctimeout)
	if a == policyd.Dunno {
		return a
	}
	full := h.answer(ctx, req, rt, client, routes, rcpt, start, deadline, ctimeout)
	if full != policyd.Dunno && strings.HasPrefix(string(a), "DEFER") {
		return a
	}
	return full
}

// answer decides about rcpt, one address: recipients files, cache,
// callout.
func (h *Handler) answer(ctx context.Context, req *policyd.Request, rt *Routing, client netip.Addr, routes []*callout.Route,
	rcpt callout.Address, start, deadline time.Time, ctimeout time.Duration) policyd.Action {
	key := cache.KeyOf(req.Recipient, rcpt.Local, rcpt.Domain)
	if rt.lists {
		rest, route, listed := rt.Listed(rcpt, routes)
		switch {
		case listed:
			return h.fromList(ctx, req, rt, client, key, callout.Valid, route, start, deadline, ctimeout)
		case len(rest) == 0:
			return h.fromList(ctx, req, rt, client, key, callout.Unknown, route, start, deadline, ctimeout)
		}
		routes = rest
	}

	fp := rt.fingerprint(routes)
	e, ok := h.cached(ctx, req, key, ctimeout, fp, start)
	release := func() {}
	if !ok && h.coal != nil {
		// Another node (or request) may be verifying this address right
		// now: wait for its verdict rather than ask the backend again.
		cctx, cancel := context.WithDeadline(ctx, deadline)
		var found bool
		e, found, release = h.coal.Claim(cctx, key, leaseTime(deadline.Sub(start)))
		cancel()
		ok = found && usable(&e, fp)
	}
	if ok {
		if v, err := callout.ParseVerdict(e.Verdict); err == nil {
			release()
			return h.fromCache(ctx, req, rt, client, routes, key, fp, rcpt, v, &e, start, deadline, ctimeout)
		}
		h.log.Warn("ignoring cache entry with unknown verdict", "recipient", req.Recipient, "verdict", e.Verdict)
	}

	out, leader := h.verify(ctx, key, fp, rt, rcpt, routes, deadline)
	e = EntryOf(&out, start)
	e.Routes = fp
	// Unreachable says something about this node's network, not about
	// the recipient: a shared store keeps it to this node.
	e.Local = out.Verdict == callout.Unreachable
	p := rt.PolicyOf(out.Route, routes)
	if leader {
		h.obs.Verdict(out.Verdict, "callout")
		h.logUnrecognised(req, &out)
		h.write(key, e, p.TTL(out.Verdict), ctimeout, release)
		if out.Verdict == callout.Valid && p.ProbeCatchall {
			for _, r := range routes {
				if r.Name == out.Route {
					h.probeCatchall(rt, rcptDomain(key), r, p)
				}
			}
		}
	} else {
		// The leader logs, counts and stores the callout.
		release()
		h.obs.Verdict(out.Verdict, "coalesced")
	}
	h.stats.record(rt, key, out.Verdict, leader)
	action := Decide(out.Verdict, &e, false, p)
	if out.Verdict == callout.Unknown {
		h.countUnknown(ctx, &rt.gate, client, req, key, p.DryRun, ctimeout, deadline)
	}
	sent, dry := Send(action, p)
	if dry {
		h.obs.DryRunWouldReject(cmp.Or(out.Route, routes[0].Name))
	}
	h.logVerdict(req, out.Verdict, &e, false, sent, dry, action, h.now().Sub(start), &out)
	return sent
}

// fromCache answers from a cached verdict v (entry e) of key, reached
// under routes (fingerprint fp).
func (h *Handler) fromCache(ctx context.Context, req *policyd.Request, rt *Routing, client netip.Addr, routes []*callout.Route,
	key string, fp uint64, rcpt callout.Address, v callout.Verdict, e *cache.Entry, start, deadline time.Time, ctimeout time.Duration) policyd.Action {
	h.obs.Verdict(v, "cache")
	p := rt.PolicyOf(e.Route, routes)
	if v == callout.Valid && p.PositiveRefresh > 0 && start.Sub(e.Verified) > p.PositiveRefresh {
		h.refresh(req.Recipient, key, rcpt, routes, rt, fp, e.Verified)
	}
	h.stats.record(rt, key, v, false)
	action := Decide(v, e, true, p)
	if v == callout.Unknown {
		h.countUnknown(ctx, &rt.gate, client, req, key, p.DryRun, ctimeout, deadline)
	}
	sent, dry := Send(action, p)
	if dry {
		h.obs.DryRunWouldReject(cmp.Or(e.Route, routes[0].Name))
	}
	// A cached pass is counted, not logged, unless asked: Postfix logs
	// the delivery, and the line would be most of its cost.
	if action != policyd.Dunno || rt.logCachedDunno {
		h.logVerdict(req, v, e, true, sent, dry, action, h.now().Sub(start), nil)
	}
	return sent
}

// learnedAnswer answers for rcpt from a verdict learned from the delivery
// log, if there is one, where the usual answer would not look: a domain
// found catch-all (a backend that accepts every address at RCPT and
// refuses unknown ones after END OF DATA is what learning is for), or a
// sub-address, whose mailbox is asked first.
func (h *Handler) learnedAnswer(ctx context.Context, req *policyd.Request, rt *Routing, client netip.Addr, routes []*callout.Route,
	rcpt callout.Address, start, deadline time.Time, ctimeout time.Duration) (policyd.Action, bool) {
	routes, ok := rt.unlisted(rcpt, routes)
	if !ok {
		return "", false
	}
	key := cache.KeyOf(req.Recipient, rcpt.Local, rcpt.Domain)
	fp := rt.fingerprint(routes)
	e, ok := h.cached(ctx, req, key, ctimeout, fp, start)
	if !ok || e.Learned == "" || e.Verdict != callout.Unknown.String() {
		return "", false
	}
	return h.fromCache(ctx, req, rt, client, routes, key, fp, rcpt, callout.Unknown, &e, start, deadline, ctimeout), true
}

// unlisted narrows routes to those a cached (or learned) verdict about
// rcpt comes from: ok false when a recipients_file decides about rcpt.
func (rt *Routing) unlisted(rcpt callout.Address, routes []*callout.Route) (rest []*callout.Route, ok bool) {
	if !rt.lists || len(routes) == 0 {
		return routes, true
	}
	rest, _, listed := rt.Listed(rcpt, routes)
	return rest, !listed && len(rest) > 0
}

// Listed answers from the routes' recipients files. An address one of
// them lists is valid (route names it). Otherwise rest are the routes left
// to ask: those with callout = false go, their file lacks the address; when
// none is left the address is unknown and route is the first that went.
func (rt *Routing) Listed(rcpt callout.Address, routes []*callout.Route) (rest []*callout.Route, route string, listed bool) {
	for i, r := range routes {
		p := rt.PolicyFor(r.Name)
		if p.List.Contains(rcpt.Local, rcpt.Domain) {
			return nil, r.Name, true
		}
		if p.NoCallout {
			if route == "" {
				route = r.Name
				rest = append(make([]*callout.Route, 0, len(routes)), routes[:i]...)
			}
			continue
		}
		if route != "" {
			rest = append(rest, r)
		}
	}
	if route == "" {
		return routes, "", false
	}
	return rest, route, false
}

// fromList answers with the verdict of route's recipients file.
func (h *Handler) fromList(ctx context.Context, req *policyd.Request, rt *Routing, client netip.Addr, key string,
	v callout.Verdict, route string, start, deadline time.Time, ctimeout time.Duration) policyd.Action {
	reason := "not_in_recipients_file"
	if v == callout.Valid {
		reason = "in_recipients_file"
	}
	h.obs.Verdict(v, "list")
	h.stats.record(rt, key, v, false)
	e := cache.Entry{Verdict: v.String(), Route: route, Reason: reason, Verified: start}
	p := rt.PolicyFor(route)
	action := Decide(v, &e, false, p)
	if v == callout.Unknown {
		h.countUnknown(ctx, &rt.gate, client, req, key, p.DryRun, ctimeout, deadline)
	}
	sent, dry := Send(action, p)
	if dry {
		h.obs.DryRunWouldReject(route)
	}
	h.logVerdict(req, v, &e, false, sent, dry, action, h.now().Sub(start), nil)
	return sent
}

// rcptDomain is the domain of a cache key.
func rcptDomain(key string) string { return key[strings.LastIndexByte(key, '@')+1:] }

// verify makes the callout for key. Requests for the same address under
// the same routes at the same moment share one: the first (the leader)
// makes it, the others wait for its outcome. It runs to deadline even if
// the leader's client goes away.
func (h *Handler) verify(ctx context.Context, key string, fp uint64, rt *Routing, rcpt callout.Address,
	routes []*callout.Route, deadline time.Time) (out callout.Outcome, leader bool) {
	v, _, _ := h.flight.Do(flightKey(key, fp), func() (any, error) {
		leader = true
		h.obs.CalloutBegin()
		start := h.now()
		vctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		out := rt.Verifier.VerifyRoutes(vctx, rcpt, routes)
		cancel()
		h.obs.CalloutEnd(&out, h.now().Sub(start))
		return &out, nil
	})
	return *v.(*callout.Outcome), leader
}

// flightKey: requests share a callout only under the same routes (a
// reload in between must not answer a new request with the old routes'
// verdict).
func flightKey(key string, fp uint64) string {
	return key + "\x00" + strconv.FormatUint(fp, 16)
}

// maxRefreshes bounds the background re-verifications in flight, and
// maxRefreshFailures the addresses whose failed refresh is remembered.
const (
	maxRefreshes       = 64
	maxRefreshFailures = 100_000
)

type refreshInFlight struct{}

// refresh verifies a valid verdict again in the background
// (stale-while-revalidate), coalesced with any callout for the same
// address. A definite answer replaces the entry; a failed one (tempfail,
// unreachable) keeps it until its TTL.
func (h *Handler) refresh(recipient, key string, rcpt callout.Address, routes []*callout.Route, rt *Routing, fp uint64, verified time.Time) {
	h.closeMu.RLock()
	defer h.closeMu.RUnlock()
	if h.closed {
		return
	}
	// A key maps to refreshInFlight while being refreshed, and to the
	// time it may be tried again after a failed refresh.
	if v, ok := h.refreshKeys.Load(key); ok {
		if until, failed := v.(time.Time); !failed || h.now().Before(until) {
			return
		}
	}
	if prev, loaded := h.refreshKeys.Swap(key, refreshInFlight{}); loaded {
		if _, busy := prev.(refreshInFlight); busy {
			return // another request started it just now
		}
		h.refreshFailed.Add(-1)
	}
	if h.refreshing.Add(1) > maxRefreshes {
		h.refreshing.Add(-1)
		h.refreshKeys.Delete(key)
		return
	}
	h.writes.Add(1)
	go func() {
		defer h.writes.Done()
		defer h.refreshing.Add(-1)
		defer h.recoverPanic("refresh")
		start := h.now()
		budget := rt.PolicyFor(routes[0].Name).RequestTimeout
		out, leader := h.verify(context.Background(), key, fp, rt, rcpt, routes, start.Add(budget))
		if out.Verdict != callout.Valid && out.Verdict != callout.Unknown {
			// Not again before another positive_refresh: a failing
			// backend is not asked once per hit. (Remembered for at
			// most maxRefreshFailures addresses.)
			if h.refreshFailed.Load() >= maxRefreshFailures {
				h.sweepRefreshFailures()
			}
			if h.refreshFailed.Add(1) <= maxRefreshFailures {
				h.refreshKeys.Store(key, h.now().Add(rt.PolicyOf("", routes).PositiveRefresh))
			} else {
				h.refreshFailed.Add(-1)
				h.refreshKeys.Delete(key)
			}
			h.log.Info("refresh of a valid verdict failed; the cached one stays until its TTL",
				"recipient", recipient, "verdict", out.Verdict.String(), "verified", verified)
			return
		}
		h.refreshKeys.Delete(key)
		if !leader {
			return // a request's callout answered: it stored the verdict
		}
		h.stats.record(rt, key, out.Verdict, true)
		e := EntryOf(&out, start)
		e.Routes = fp
		ttl := rt.PolicyOf(out.Route, routes).TTL(out.Verdict)
		if ttl > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), cacheTimeout(budget))
			h.set(ctx, key, e, ttl)
			cancel()
		}
		h.log.Debug("verdict refreshed", "recipient", recipient, "verdict", out.Verdict.String())
	}()
}

// sweepRefreshFailures forgets the failed refreshes that may be tried
// again already.
func (h *Handler) sweepRefreshFailures() {
	now := h.now()
	h.refreshKeys.Range(func(k, v any) bool {
		if until, ok := v.(time.Time); ok && !now.Before(until) {
			if h.refreshKeys.CompareAndDelete(k, v) {
				h.refreshFailed.Add(-1)
			}
		}
		return true
	})
}

// cached looks key up and tells whether the entry may answer.
// now is the request's start: a store that reads as of a given time
// (memory) is asked as of then, with no second look at the clock.
func (h *Handler) cached(ctx context.Context, req *policyd.Request, key string, timeout time.Duration, fp uint64, now time.Time) (cache.Entry, bool) {
	var e cache.Entry
	var ok bool
	var err error
	if h.at != nil {
		e, ok = h.at.GetAt(key, now)
	} else {
		e, ok, err = h.lookup(ctx, key, timeout)
	}
	if err != nil {
		h.obs.CacheError("get")
		h.log.Warn("cache lookup failed, verifying without it", "recipient", req.Recipient, "err", err)
		return e, false
	}
	h.obs.CacheLookup(ok)
	return e, ok && usable(&e, fp)
}

// usable tells whether a cached entry may answer under the routes in force
// (fingerprint fp): a negative verdict reached under other routes (a
// reload since, or another node's configuration) is asked again, since a
// route added for a migration may hold the mailbox.
func usable(e *cache.Entry, fp uint64) bool {
	return e.Verdict == callout.Valid.String() || e.Routes == fp
}

// leaseTime is how long other nodes wait on the one verifying an address
// before they verify it themselves: a third of the verdict's budget, at
// most 10 s, so a waiter keeps two thirds for its own callout. A callout
// usually takes milliseconds; a node that dies mid-callout costs the
// others at most this. A callout that outlives the lease may be made a
// second time by another node, never answered wrongly.
func leaseTime(budget time.Duration) time.Duration {
	return min(max(budget/3, 100*time.Millisecond), 10*time.Second)
}

// lookup asks the store within timeout. The memory store never blocks, and
// the Redis store bounds its calls itself, so they are asked without a
// deadline of their own: a timer per cached answer would double its cost.
func (h *Handler) lookup(ctx context.Context, key string, timeout time.Duration) (cache.Entry, bool, error) {
	if h.bounded {
		return h.store.Get(ctx, key)
	}
	gctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return h.store.Get(gctx, key)
}

// write stores a verdict without making Postfix wait: in the background,
// within timeout, unless the store never blocks (memory). release (of a
// shared store's lease) is called once the verdict is stored, or at once
// when it is not.
func (h *Handler) write(key string, e cache.Entry, ttl, timeout time.Duration, release func()) {
	if ttl <= 0 {
		release()
		return
	}
	h.closeMu.RLock()
	defer h.closeMu.RUnlock()
	if h.closed {
		release()
		return
	}
	if h.inline {
		h.set(context.Background(), key, e, ttl)
		release()
		return
	}
	if h.inFlight.Add(1) > maxWrites {
		h.inFlight.Add(-1)
		h.obs.CacheError("set")
		h.log.Warn("cache store backlogged, verdict not stored", "key", key, "writes_in_flight", maxWrites)
		release()
		return
	}
	h.writes.Add(1)
	go func() {
		defer h.writes.Done()
		defer h.inFlight.Add(-1)
		defer release()
		defer h.recoverPanic("cache write")
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		h.set(ctx, key, e, ttl)
	}()
}

func (h *Handler) set(ctx context.Context, key string, e cache.Entry, ttl time.Duration) {
	if err := h.store.Set(ctx, key, e, ttl); err != nil {
		h.obs.CacheError("set")
		h.log.Warn("cache store failed", "key", key, "err", err)
	}
}

// recoverPanic logs and counts a panic in a goroutine of the handler's own;
// use it deferred.
func (h *Handler) recoverPanic(what string) {
	if v := recover(); v != nil {
		h.obs.Panic()
		h.log.Error("panic recovered", "in", what, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	}
}

// logUnrecognised logs, at warn, every reply calloutd could not read, so
// the admin can add it to a route's rules and the corpus can grow.
func (h *Handler) logUnrecognised(req *policyd.Request, out *callout.Outcome) {
	for _, a := range out.Attempts {
		if a.Result.Class.Meaning == callout.MeansUnrecognised {
			h.log.Warn("backend reply not recognised, treated as no answer", "recipient", req.Recipient,
				"route", a.Route, "server", a.Server, "reply", policyd.Text(a.Result.Reply.String(), ""))
		}
	}
}

// logVerdict writes the one line per verdict an admin greps for.
// In a dry run, action is DUNNO and would is what would have been sent.
func (h *Handler) logVerdict(req *policyd.Request, v callout.Verdict, e *cache.Entry, cached bool,
	action policyd.Action, dry bool, would policyd.Action, d time.Duration, out *callout.Outcome) {
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("queue_id", req.QueueID),
		slog.String("client", req.ClientAddress),
		slog.String("sender", req.Sender),
		slog.String("recipient", req.Recipient),
		slog.String("verdict", v.String()),
		slog.Bool("cached", cached),
		slog.String("action", string(action)),
		slog.String("route", e.Route),
		slog.String("server", e.Server),
		slog.Duration("duration", d),
	)
	if e.Code != 0 {
		attrs = append(attrs, slog.Int("reply_code", e.Code), slog.String("reply", e.Text))
	}
	if e.Reason != "" {
		attrs = append(attrs, slog.String("reason", e.Reason))
	}
	if e.Learned != "" {
		// Learned from the delivery log: the refused delivery's queue id.
		attrs = append(attrs, slog.String("learned_from", e.Learned))
	}
	if dry {
		attrs = append(attrs, slog.Bool("dry_run", true), slog.String("would_action", string(would)))
	}
	if out != nil {
		attrs = append(attrs, slog.Int("attempts", len(out.Attempts)))
		if out.Err != nil {
			attrs = append(attrs, slog.String("err", out.Err.Error()))
		}
	}
	h.log.LogAttrs(context.Background(), slog.LevelInfo, "verdict", attrs...)
}

// routeFingerprint hashes a route's name, servers, HELO, sender and reply
// rules (FNV-1a): what it asks and how it reads the answers. An admin who
// fixes a misread reply with ignore_replies, or a mail_from a backend
// refused, must not keep getting the old 550.
func routeFingerprint(r *callout.Route) uint64 {
	h := uint64(14695981039346656037)
	add := func(s string) {
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= 1099511628211
		}
		h ^= 0xff // separator
		h *= 1099511628211
	}
	add(r.Name)
	for _, s := range r.Servers {
		add(s)
	}
	if st := r.Settings; st != nil {
		add(st.HeloName)
		add(st.MailFrom)
		if st.Rules != nil {
			for _, re := range st.Rules.Unknown {
				add("u:" + re.String())
			}
			for _, re := range st.Rules.Ignore {
				add("i:" + re.String())
			}
		}
	}
	if dp, ok := r.Prober.(*directory.Prober); ok {
		add("ldap:" + dp.Settings.BaseDN)
		add(dp.Settings.Filter)
		add(dp.Settings.BindDN)
	}
	return h
}
