package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/calloutd/calloutd/cache"
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
func (h *Handler) harvestLimited(ctx context.Context, g *gate, client netip.Addr, timeout time.Duration) bool {
	if g.maxUnknown == 0 || !client.IsValid() {
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
		_, _, _ = h.limited.Add(ctx, key, left)
		return true
	}
	return false
}

// countUnknown counts an unknown verdict against the client; the one
// that reaches the limit is logged (once per client per window, across
// nodes with Redis: only one INCR returns the limit).
func (h *Handler) countUnknown(ctx context.Context, g *gate, client netip.Addr, req *policyd.Request, dry bool, timeout time.Duration) {
	if g.maxUnknown == 0 || !client.IsValid() {
		return
	}
	key := g.harvestKey(client)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	n, left, err := h.counter.Add(cctx, key, g.window)
	cancel()
	if err != nil {
		h.obs.CacheError("count")
		return
	}
	if n < g.maxUnknown {
		return
	}
	_, _, _ = h.limited.Add(ctx, key, left)
	if n == g.maxUnknown {
		h.obs.HarvestLimited()
		attrs := []slog.Attr{slog.String("client", req.ClientAddress), slog.String("network", key[len("harvest:"):]),
			slog.Int64("unknown", n), slog.Duration("for", left.Round(time.Second))}
		if dry {
			attrs = append(attrs, slog.Bool("dry_run", true))
		}
		h.log.LogAttrs(ctx, slog.LevelWarn, "client reached the harvest limit; its further recipients are refused without a callout", attrs...)
	}
}

// newLimited is the memory of clients over the harvest limit.
func newLimited() *cache.MemoryCounter { return cache.NewMemoryCounter(maxLimited) }
