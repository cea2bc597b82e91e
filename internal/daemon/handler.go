package daemon

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/policyd"
)

// Routing is the part of the configuration a reload may replace as a whole:
// the routes with the client that asks them, and the answer policy.
type Routing struct {
	Verifier *callout.Verifier
	Policy   Policy
}

// Handler answers policy requests: cache first, then a callout.
type Handler struct {
	store   cache.Store
	log     *slog.Logger
	routing atomic.Pointer[Routing]
	obs     Observer
	now     func() time.Time
}

// NewHandler returns a Handler over store with the given routing. obs may
// be nil.
func NewHandler(store cache.Store, r *Routing, log *slog.Logger, obs Observer) *Handler {
	if obs == nil {
		obs = nopObserver{}
	}
	h := &Handler{store: store, log: log, obs: obs, now: time.Now}
	h.routing.Store(r)
	return h
}

// SetRouting replaces routes and policy; requests already running finish
// with the old ones.
func (h *Handler) SetRouting(r *Routing) { h.routing.Store(r) }

// Routing returns the routes and policy in force.
func (h *Handler) Routing() *Routing { return h.routing.Load() }

// HandlePolicy implements policyd.Handler.
func (h *Handler) HandlePolicy(ctx context.Context, req *policyd.Request) policyd.Action {
	a := h.handle(ctx, req)
	h.obs.PolicyRequest(req.ProtocolState, a)
	return a
}

func (h *Handler) handle(ctx context.Context, req *policyd.Request) policyd.Action {
	if req.ProtocolState != "RCPT" || req.Recipient == "" {
		return policyd.Dunno
	}
	start := h.now()
	rt := h.routing.Load()
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
	key := cache.Key(rcpt.Local, rcpt.Domain)

	e, ok, err := h.store.Get(ctx, key)
	if err != nil {
		h.obs.CacheError("get")
		h.log.Warn("cache lookup failed, verifying without it", "recipient", req.Recipient, "err", err)
	} else {
		h.obs.CacheLookup(ok)
	}
	fp := routesFingerprint(routes)
	if ok && e.Verdict != callout.Valid.String() && e.Routes != fp {
		// Reached under other routes (a reload since): a route added for
		// a migration may hold the mailbox, so ask again.
		ok = false
	}
	if ok {
		if v, err := callout.ParseVerdict(e.Verdict); err == nil {
			h.obs.Verdict(v, "cache")
			action := Decide(v, &e, true, &rt.Policy)
			h.logVerdict(req, v, &e, true, action, h.now().Sub(start), nil)
			return action
		}
		h.log.Warn("ignoring cache entry with unknown verdict", "recipient", req.Recipient, "verdict", e.Verdict)
	}

	h.obs.CalloutBegin()
	cstart := h.now()
	vctx, cancel := context.WithTimeout(ctx, rt.Policy.RequestTimeout)
	out := rt.Verifier.VerifyRoutes(vctx, rcpt, routes)
	cancel()
	h.obs.CalloutEnd(&out, h.now().Sub(cstart))
	h.obs.Verdict(out.Verdict, "callout")
	e = EntryOf(&out, start)
	e.Routes = fp
	if err := h.store.Set(ctx, key, e, rt.Policy.TTL(out.Verdict)); err != nil {
		h.obs.CacheError("set")
		h.log.Warn("cache store failed", "recipient", req.Recipient, "err", err)
	}
	action := Decide(out.Verdict, &e, false, &rt.Policy)
	h.logVerdict(req, out.Verdict, &e, false, action, h.now().Sub(start), &out)
	return action
}

// logVerdict writes the one line per verdict an admin greps for.
func (h *Handler) logVerdict(req *policyd.Request, v callout.Verdict, e *cache.Entry, cached bool,
	action policyd.Action, d time.Duration, out *callout.Outcome) {
	attrs := make([]slog.Attr, 0, 14)
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
	if out != nil {
		attrs = append(attrs, slog.Int("attempts", len(out.Attempts)))
		if out.Err != nil {
			attrs = append(attrs, slog.String("err", out.Err.Error()))
		}
	}
	h.log.LogAttrs(context.Background(), slog.LevelInfo, "verdict", attrs...)
}

// routesFingerprint hashes the names and servers of routes (FNV-1a), the
// same on every node with the same configuration.
func routesFingerprint(routes []*callout.Route) uint64 {
	h := uint64(14695981039346656037)
	add := func(s string) {
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= 1099511628211
		}
		h ^= 0xff // separator
		h *= 1099511628211
	}
	for _, r := range routes {
		add(r.Name)
		for _, s := range r.Servers {
			add(s)
		}
	}
	return h
}
