package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/internal/config"
	"github.com/calloutd/calloutd/policyd"
)

// gate is what [policy] and [harvest] say about clients: who is not
// verified at all, and how many unknown recipients one may collect.
type gate struct {
	trusted  []netip.Prefix
	skipAuth bool

	maxUnknown int64 // 0: no harvest limit
	window     time.Duration
	deferIt    bool // harvest.action = "defer"
	v4, v6     int  // prefix lengths clients are grouped by
}

func newGate(cfg *config.Config) gate {
	h := &cfg.Harvest
	return gate{
		trusted: cfg.Policy.Trusted, skipAuth: cfg.Policy.SkipAuthenticated,
		maxUnknown: int64(h.MaxUnknown), window: h.Window.D(), deferIt: h.Action == "defer",
		v4: h.IPv4Prefix, v6: h.IPv6Prefix,
	}
}

// Reasons a request is not verified, as counted in
// calloutd_requests_skipped_total.
const (
	skipTrusted       = "trusted_network"
	skipAuthenticated = "authenticated"
)

// client parses the request's client address (the zero Addr when Postfix
// sent none or "unknown") and tells why the client is not verified, if it
// is not.
func (g *gate) client(req *policyd.Request) (netip.Addr, string) {
	if g.skipAuth && req.SASLUsername != "" {
		return netip.Addr{}, skipAuthenticated
	}
	if len(g.trusted) == 0 && g.maxUnknown == 0 {
		return netip.Addr{}, ""
	}
	a, err := netip.ParseAddr(req.ClientAddress)
	if err != nil {
		return netip.Addr{}, ""
	}
	// Postfix writes an IPv4 client of an IPv6 socket as ::ffff:a.b.c.d.
	a = a.Unmap().WithZone("")
	for _, p := range g.trusted {
		if p.Contains(a) {
			return a, skipTrusted
		}
	}
	return a, ""
}

// harvestKey names a client's count: its network at the configured prefix
// length, so that a /64 counts as one client however many addresses it
// uses ("harvest:203.0.113.9/32", "harvest:2001:db8:1:2::/64").
func (g *gate) harvestKey(a netip.Addr) string {
	bits := g.v4
	if a.Is6() {
		bits = g.v6
	}
	p, _ := a.Prefix(bits)
	return "harvest:" + p.String()
}

// maxLimited bounds the clients this node remembers as over the limit.
const maxLimited = 100_000

// harvestLimited tells whether client is over the harvest limit. A client
// known here to be over it costs no store call; otherwise its count is
// read (with Redis, the count all nodes share). A store that cannot be
// asked limits no one.
func (h *Handler) harvestLimited(ctx context.Context, g *gate, client netip.Addr, rcpt callout.Address, timeout time.Duration) bool {
	if g.maxUnknown == 0 || !client.IsValid() || exempt(rcpt) {
		return false
	}
	key := g.harvestKey(client)
	if n, _, _ := h.limited.Count(ctx, key); n > 0 {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	n, left, err := h.counter.Count(cctx, key)
	cancel()
	if err != nil {
		h.obs.CacheError("count")
		return false
	}
	if n >= g.maxUnknown && left > 0 {
		h.remember(ctx, key, left)
		return true
	}
	return false
}

// limitedMemo bounds how long this node answers a limited client from its
// own memory: an admin's redis-cli DEL, or a reload that raises
// max_unknown, frees the client within it.
const limitedMemo = 2 * time.Second

func (h *Handler) remember(ctx context.Context, key string, left time.Duration) {
	_, _, _ = h.limited.Add(ctx, key, "", min(left, limitedMemo))
}

// countUnknown counts an unknown recipient (its cache key) against the
// client; the one that reaches the limit is logged (once per client per
// window, across nodes with Redis: only one SADD reaches the limit). A
// dry run's unknown recipients are not counted: verdicts the admin does
// not trust yet must not refuse mail for other routes. It waits at most
// timeout, and never past deadline.
func (h *Handler) countUnknown(ctx context.Context, g *gate, client netip.Addr, req *policyd.Request, rcptKey string,
	dry bool, timeout time.Duration, deadline time.Time) {
	if g.maxUnknown == 0 || !client.IsValid() || dry {
		return
	}
	key := g.harvestKey(client)
	if d := h.now().Add(timeout); d.Before(deadline) {
		deadline = d
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	n, left, err := h.counter.Add(cctx, key, rcptKey, g.window)
	cancel()
	if err != nil {
		h.obs.CacheError("count")
		return
	}
	if n < g.maxUnknown {
		return
	}
	h.remember(ctx, key, left)
	if n == g.maxUnknown {
		h.obs.HarvestLimited()
		h.log.LogAttrs(ctx, slog.LevelWarn, "client reached the harvest limit; its further recipients are refused without a callout",
			slog.String("client", req.ClientAddress), slog.String("network", key[len("harvest:"):]),
			slog.Int64("unknown", n), slog.Duration("for", left.Round(time.Second)))
	}
}

// exempt: postmaster must always be reachable (RFC 5321 4.5.1), also by
// a client over the harvest limit.
func exempt(rcpt callout.Address) bool { return strings.EqualFold(rcpt.Local, "postmaster") }

// newLimited is the memory of clients over the harvest limit.
func newLimited() *cache.MemoryCounter { return cache.NewMemoryCounter(maxLimited) }
