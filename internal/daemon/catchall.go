package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/callout"
)

// Catch-all detection ([callout] probe_catchall). A backend that accepts
// every address of a domain (a catch-all alias, Exchange without
// recipient filtering, a backend that trusts the gateway) makes its 250s
// meaningless. After it accepts a recipient of a domain with no fresh
// catch-all verdict, it is asked, in the background, about a random
// address that cannot exist. The answer is the domain's verdict, cached
// under the key "@domain" for catchall_ttl (in Redis
// <key_prefix>rcpt:@domain, flushed with the domain): accepted means
// catch-all, and the domain's recipients get DUNNO without callouts;
// rejected means the backend can say no. Requests for the domain that
// arrive while the probe runs wait for it (within their budget), so a
// catch-all domain costs the backend at most a couple of RCPTs a day.

// catchallKey is the store key of a domain's catch-all verdict: no
// recipient's key starts with '@'.
func catchallKey(domain string) string { return "@" + domain }

type catchalls struct {
	inFlight sync.Map // key → chan struct{}, closed when the probe ends
	known    sync.Map // domain → time.Time: catch-all until
}

// count is how many domains this node knows to be catch-all now.
func (c *catchalls) count() int {
	n, now := 0, time.Now()
	c.known.Range(func(k, v any) bool {
		if now.Before(v.(time.Time)) {
			n++
		} else {
			c.known.Delete(k)
		}
		return true
	})
	return n
}

// isCatchall tells whether domain is known to be catch-all. With no
// verdict yet and a probe of the domain in flight, it waits for the probe,
// at most a third of what is left of the request's budget: a slow probe
// (a backend that tarpits the 550 it should give) must not spend it.
func (h *Handler) isCatchall(ctx context.Context, domain string, timeout time.Duration, deadline time.Time) bool {
	key := catchallKey(domain)
	e, ok, err := h.lookup(ctx, key, timeout)
	if err == nil && !ok {
		if ch, busy := h.catchall.inFlight.Load(key); busy {
			wait := time.NewTimer(time.Until(deadline) / 3)
			select {
			case <-ch.(chan struct{}):
				e, ok, err = h.lookup(ctx, key, timeout)
			case <-wait.C:
			case <-ctx.Done():
			}
			wait.Stop()
		}
	}
	if err != nil || !ok || e.Verdict != callout.Valid.String() {
		return false
	}
	if !e.Expires.IsZero() {
		h.catchall.known.Store(domain, e.Expires)
	}
	return true
}

// probeCatchall asks route, in the background, about an address of domain
// that cannot exist, unless the domain has a fresh verdict or a probe is
// already running.
func (h *Handler) probeCatchall(rt *Routing, domain string, route *callout.Route, p *Policy) {
	key := catchallKey(domain)
	done := make(chan struct{})
	if _, busy := h.catchall.inFlight.LoadOrStore(key, done); busy {
		return
	}
	h.closeMu.RLock()
	defer h.closeMu.RUnlock()
	if h.closed {
		h.catchall.inFlight.Delete(key)
		close(done)
		return
	}
	h.writes.Add(1)
	go func() {
		defer h.writes.Done()
		defer close(done)
		defer h.catchall.inFlight.Delete(key)
		defer h.recoverPanic("catch-all probe")
		ctx, cancel := context.WithTimeout(context.Background(), p.RequestTimeout)
		defer cancel()
		if _, ok, _ := h.lookup(ctx, key, cacheTimeout(p.RequestTimeout)); ok {
			return // another request or node probed it meanwhile
		}
		// A neutral local part: a backend or filter must not be able to
		// recognise the probe and answer it otherwise.
		probe := callout.Address{Local: randomHex(), Domain: domain}
		out := rt.Verifier.VerifyRoutes(ctx, probe, []*callout.Route{route})
		if out.Verdict != callout.Valid && out.Verdict != callout.Unknown {
			return // no answer: asked again after the domain's next accepted recipient
		}
		catchall := out.Verdict == callout.Valid
		e := cache.Entry{Verdict: out.Verdict.String(), Route: route.Name, Server: out.Server, Reason: "catchall_probe", Verified: h.now()}
		if out.Reply.Code != 0 {
			e.Code, e.Enhanced, e.Text = out.Reply.Code, out.Reply.Enhanced, replyText(out.Reply)
		}
		h.set(ctx, key, e, p.CatchallTTL)
		h.obs.Catchall(domain, catchall)
		if catchall {
			h.catchall.known.Store(domain, h.now().Add(p.CatchallTTL))
			h.log.Warn("domain is catch-all: its backend accepted an address that cannot exist, so its recipients are not verified (DUNNO, no callouts) until the next probe",
				"domain", domain, "route", route.Name, "server", out.Server, "probe", probe.String(), "for", p.CatchallTTL)
		} else {
			h.log.Debug("domain is not catch-all", "domain", domain, "route", route.Name, "server", out.Server)
		}
	}()
}

// randomHex is an unpredictable local part, never reused: a backend or a
// harvester cannot learn it and create it.
func randomHex() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
