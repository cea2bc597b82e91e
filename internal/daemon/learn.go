package daemon

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/internal/learn"
)

// Learning from the gateway's delivery log ([learn]). Some backends
// (Exchange 2013 and later without recipient filtering) accept every
// recipient at RCPT and refuse unknown ones only after END OF DATA, so a
// callout learns nothing from them. The gateway's Postfix logs each such
// refusal; a refusal by a server of the route that covers the recipient,
// whose reply the callout classifier reads as "unknown", becomes a
// negative verdict for learned_ttl (from the log line's time), marked with
// the line's queue id. Nothing else in the log is trusted.

// Results of weighing one log line (calloutd_learn_lines_total{result}).
const (
	LearnLearned    = "learned"     // a negative verdict stored
	LearnIgnored    = "ignored"     // not a delivery refused after END OF DATA
	LearnMalformed  = "malformed"   // claims to be one, but does not read as Postfix writes it
	LearnNotBackend = "not_backend" // no route covers the recipient, or the relay is none of its servers
	LearnNotUnknown = "not_unknown" // the reply does not say the recipient is unknown
	LearnStale      = "stale"       // the line is older than learned_ttl
	LearnListed     = "listed"      // a recipients_file decides about the address
	LearnAmbiguous  = "ambiguous"   // the refusal may be about another recipient of the message
	LearnStoreError = "store_error" // the store could not be written
)

// LearnResults lists every result, for metrics.
var LearnResults = []string{LearnLearned, LearnIgnored, LearnMalformed, LearnNotBackend, LearnNotUnknown, LearnStale, LearnListed, LearnAmbiguous, LearnStoreError}

// LearnResult is what came of one log line.
type LearnResult struct {
	Result  string `json:"result"`            // one of the Learn* constants
	Address string `json:"address,omitempty"` // the recipient, when the line named one
	Why     string `json:"why,omitempty"`     // for a line not learned from: why
}

// learnHostTTL is how long a route server's host name resolution is kept
// for matching relays.
const learnHostTTL = 5 * time.Minute

type hostAddrs struct {
	addrs []netip.Addr
	until time.Time
}

// Learn weighs one line of the gateway's Postfix log and stores the
// negative verdict it teaches, if any. recipients is how many recipients
// the refused message had, when the caller knows it from qmgr's line (0:
// what this handler saw of qmgr's lines says). A refusal after END OF
// DATA is about the whole SMTP transaction: when Postfix delivered several
// recipients in it, each is logged with the same reply, and only a reply
// that names the recipient says which of them is unknown.
func (h *Handler) Learn(ctx context.Context, line string, recipients int) LearnResult {
	defer h.recoverPanic("learning")
	if h.queued.Note(line) {
		return h.learned(LearnResult{Result: LearnIgnored})
	}
	now := h.now()
	b, err := learn.Parse(line, now)
	if errors.Is(err, learn.ErrNotBounce) {
		return h.learned(LearnResult{Result: LearnIgnored})
	}
	if err != nil {
		return h.learned(LearnResult{Result: LearnMalformed, Why: err.Error()})
	}
	res := LearnResult{Address: b.Recipient}
	if b.OrigTo != "" {
		// The gateway rewrote the address senders use (an alias): RCPT
		// is asked about that one, and on a Postfix that logs addresses
		// unquoted (before 3.5) a sender can forge the pair.
		res.Result, res.Why = LearnAmbiguous, "the gateway rewrote <"+b.OrigTo+"> into this recipient"
		return h.learned(res)
	}
	rcpt, err := callout.ParseAddress(b.Recipient)
	if err != nil {
		res.Result, res.Why = LearnMalformed, "recipient: "+err.Error()
		return h.learned(res)
	}
	rt := h.routing.Load()
	routes, ok := rt.unlisted(rcpt, rt.Verifier.Match(rcpt.Domain))
	if !ok {
		res.Result, res.Why = LearnListed, "a recipients_file decides about this address"
		return h.learned(res)
	}
	route, server := h.relayRoute(ctx, rt, routes, &b)
	if route == nil {
		res.Result, res.Why = LearnNotBackend, "relay "+b.RelayName+"["+b.RelayAddr.String()+"]:"+strconv.Itoa(b.RelayPort)+" is not a server of a route for "+rcpt.Domain
		return h.learned(res)
	}
	reply, err := callout.ReadReply(bufio.NewReader(strings.NewReader(strings.Join(learn.ReplyLines(b.Reply), "\r\n") + "\r\n")))
	if err != nil {
		res.Result, res.Why = LearnMalformed, "reply: "+err.Error()
		return h.learned(res)
	}
	var rules *callout.Rules
	if route.Settings != nil {
		rules = route.Settings.Rules
	}
	class := rules.Classify(reply)
	if class.Meaning != callout.MeansUnknown || !strings.HasPrefix(b.DSN, "5.") {
		res.Result, res.Why = LearnNotUnknown, "reply means "+class.String()+", dsn "+b.DSN
		return h.learned(res)
	}
	if named := learn.NamedAddresses(b.Reply); len(named) > 0 {
		if !slices.ContainsFunc(named, func(a string) bool { return sameAddress(a, rcpt) }) {
			res.Result, res.Why = LearnAmbiguous, "the reply is about <"+named[0]+">, not this recipient"
			return h.learned(res)
		}
	} else {
		if recipients <= 0 {
			recipients = h.queued.Count(b.QueueID)
		}
		if recipients != 1 {
			res.Result, res.Why = LearnAmbiguous, "the reply names no recipient, and the message had "+strconv.Itoa(recipients)+" recipients"
			if recipients == 0 {
				res.Why = "the reply names no recipient, and how many the message had is not known (qmgr's \"nrcpt=\" line of " + b.QueueID + " was not read)"
			}
			return h.learned(res)
		}
	}
	when := b.Time
	if when.IsZero() || when.After(now) {
		when = now
	}
	ttl := rt.learnedTTL - now.Sub(when)
	if ttl <= 0 {
		res.Result, res.Why = LearnStale, "logged "+when.Format(time.RFC3339)+", older than learn.learned_ttl"
		return h.learned(res)
	}
	key := cache.Key(rcpt.Local, rcpt.Domain)
	e := cache.Entry{
		Verdict: callout.Unknown.String(), Code: reply.Code, Enhanced: reply.Enhanced, Text: replyText(reply),
		Route: route.Name, Server: server, Reason: class.Reason, Verified: when,
		Routes: rt.fingerprint(routes), Learned: b.QueueID,
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := h.store.Set(sctx, key, e, ttl); err != nil {
		h.obs.CacheError("set")
		res.Result, res.Why = LearnStoreError, err.Error()
		h.log.Warn("learned verdict not stored", "recipient", b.Recipient, "queue_id", b.QueueID, "err", err)
		return h.learned(res)
	}
	res.Result = LearnLearned
	h.log.Info("recipient learned unknown from the delivery log", "recipient", b.Recipient, "queue_id", b.QueueID,
		"route", route.Name, "server", server, "reply", reply.String(), "logged", when.Format(time.RFC3339), "ttl", ttl.Round(time.Second).String())
	return h.learned(res)
}

func (h *Handler) learned(r LearnResult) LearnResult {
	h.obs.Learned(r.Result)
	if r.Result != LearnIgnored && r.Result != LearnLearned {
		h.log.Debug("delivery log line not learned from", "result", r.Result, "recipient", r.Address, "why", r.Why)
	}
	return r
}

// sameAddress tells whether a, as a reply names it, is rcpt.
func sameAddress(a string, rcpt callout.Address) bool {
	p, err := callout.ParseAddress(a)
	return err == nil && cache.Key(p.Local, p.Domain) == cache.Key(rcpt.Local, rcpt.Domain)
}

// relayRoute finds the route of routes (SMTP ones) one of whose servers
// is b's relay: the same port, and the same host name or address (a
// server given by name is resolved). It returns the route and the server
// as the route names it.
func (h *Handler) relayRoute(ctx context.Context, rt *Routing, routes []*callout.Route, b *learn.Bounce) (*callout.Route, string) {
	for _, r := range routes {
		if r.Prober != nil {
			continue // a directory, not a mail server
		}
		for _, s := range rt.Verifier.Servers(ctx, r) {
			host, port, err := net.SplitHostPort(s)
			if err != nil || port != strconv.Itoa(b.RelayPort) {
				continue
			}
			name := strings.TrimSuffix(host, ".")
			if strings.EqualFold(name, strings.TrimSuffix(b.RelayName, ".")) {
				return r, s
			}
			if a, err := netip.ParseAddr(host); err == nil {
				if a.Unmap() == b.RelayAddr {
					return r, s
				}
				continue
			}
			for _, a := range h.hostAddrs(ctx, name) {
				if a == b.RelayAddr {
					return r, s
				}
			}
		}
	}
	return nil, ""
}

// hostAddrs resolves a route server's host name, kept learnHostTTL.
func (h *Handler) hostAddrs(ctx context.Context, host string) []netip.Addr {
	if v, ok := h.learnHosts.Load(host); ok && time.Now().Before(v.(hostAddrs).until) {
		return v.(hostAddrs).addrs
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(rctx, "ip", host)
	if err != nil {
		h.log.Debug("cannot resolve route server to match a relay", "server", host, "err", err)
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	h.learnHosts.Store(host, hostAddrs{addrs, time.Now().Add(learnHostTTL)})
	return addrs
}
