package callout

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// ErrNoRoute is returned by Verify when no route covers the domain.
var ErrNoRoute = errors.New("no route for domain")

// Route names the backend servers that hold the mailboxes of some domains.
type Route struct {
	// Name labels the route in logs and metrics.
	Name string
	// Domains are matched case-insensitively: "example.com" matches that
	// domain only, ".example.com" any of its subdomains (not itself).
	Domains []string
	// Servers are "host:port" (see ParseServer), asked in order.
	Servers []string
	// Settings are how the servers are asked; nil for the prober's own.
	Settings *Settings
	// Prober, when set, asks this route's servers instead of the one
	// the Verifier was given (a directory instead of SMTP); PerRoute
	// dispatches to it.
	Prober Prober
}

// PerRoute is a Prober that asks a route's own Prober when it has one,
// and Default otherwise: one Breaker in front of it covers every kind of
// server.
type PerRoute struct{ Default Prober }

// Probe implements Prober.
func (p PerRoute) Probe(ctx context.Context, r *Route, server string, rcpt Address) (Result, error) {
	if r != nil && r.Prober != nil {
		return r.Prober.Probe(ctx, r, server, rcpt)
	}
	return p.Default.Probe(ctx, r, server, rcpt)
}

// Attempt records one probe of one server.
type Attempt struct {
	Route    string
	Server   string
	Duration time.Duration
	// Result is the server's answer when Err is nil. When the server
	// replied to RCPT TO but the reply made it unavailable, Err is set
	// and Result still holds the reply and its classification.
	Result Result
	Err    error // why the server was unavailable
}

// Outcome is the combined answer of every route asked.
type Outcome struct {
	Verdict Verdict
	// Route and Server gave the deciding answer; Reply is their RCPT reply
	// (zero for Unreachable).
	Route, Server string
	Reply         Reply
	Class         Classification // what Reply meant
	// Err is the last error for Unreachable: the context's error when the
	// budget ran out, else the last server's *Error.
	Err      error
	Attempts []Attempt
}

// Verifier chooses routes for a recipient's domain and asks their servers.
// It is safe for concurrent use; build a new one to change routes.
type Verifier struct {
	prober Prober
	routes []Route
	exact  map[string][]int // domain -> route indexes
	// matched holds Match's answer for each domain a route names
	// exactly: the common case is one map lookup and no allocation.
	matched map[string][]*Route
	suffix  map[string][]int // ".parent" -> route indexes
	mx      *MXResolver
}

// SetMX makes the Verifier resolve "mx:" server entries with r (nil: such
// entries cannot be asked).
func (v *Verifier) SetMX(r *MXResolver) { v.mx = r }

// NewVerifier returns a Verifier over routes, which it does not modify.
func NewVerifier(p Prober, routes []Route) *Verifier {
	v := &Verifier{prober: p, routes: routes, exact: map[string][]int{}, suffix: map[string][]int{}}
	for i, r := range routes {
		for _, d := range r.Domains {
			d = strings.ToLower(d)
			if strings.HasPrefix(d, ".") {
				v.suffix[d] = appendOnce(v.suffix[d], i)
			} else {
				v.exact[d] = appendOnce(v.exact[d], i)
			}
		}
	}
	v.matched = make(map[string][]*Route, len(v.exact))
	for d := range v.exact {
		v.matched[d] = slices.Clip(v.match(d))
	}
	return v
}

func appendOnce(s []int, i int) []int {
	if slices.Contains(s, i) {
		return s
	}
	return append(s, i)
}

// Match returns the routes for domain in configuration order. The slice
// may be shared: callers must not change its elements.
func (v *Verifier) Match(domain string) []*Route {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if r, ok := v.matched[domain]; ok {
		return r
	}
	return v.match(domain)
}

// match is Match for a domain in lower case without a trailing dot.
func (v *Verifier) match(domain string) []*Route {
	idx := append([]int(nil), v.exact[domain]...)
	for i := strings.IndexByte(domain, '.'); i >= 0; {
		idx = append(idx, v.suffix[domain[i:]]...)
		j := strings.IndexByte(domain[i+1:], '.')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	if len(idx) == 0 {
		return nil
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	out := make([]*Route, len(idx))
	for k, i := range idx {
		out[k] = &v.routes[i]
	}
	return out
}

// Verify asks the routes for rcpt's domain, in order, and their servers, in
// order, until one accepts the recipient:
//   - any server's 2xx makes the verdict Valid at once;
//   - a 5xx settles its route as unknown, and the next route is asked;
//   - a 4xx is remembered and the route's next server asked;
//   - an unavailable server (see Prober) is skipped.
//
// The verdict is Unknown only when every matching route answered and all
// said unknown: a route that could not be asked might hold the mailbox, so
// then the verdict is TempFail (if some server said 4xx) or Unreachable.
// When ctx ends, asking stops and the verdict is formed from what was heard.
func (v *Verifier) Verify(ctx context.Context, rcpt Address) (Outcome, error) {
	routes := v.Match(rcpt.Domain)
	if len(routes) == 0 {
		return Outcome{}, ErrNoRoute
	}
	return v.VerifyRoutes(ctx, rcpt, routes), nil
}

// VerifyRoutes is Verify over routes the caller already matched (with
// Match, so a request matches once); routes must not be empty.
func (v *Verifier) VerifyRoutes(ctx context.Context, rcpt Address, routes []*Route) Outcome {
	var out Outcome
	unknownAt, tempAt := -1, -1 // first deciding attempts
	unknownRoutes := 0
	for _, r := range routes {
		routeUnknown := false
	servers:
		for _, server := range v.servers(ctx, r, &out) {
			if ctxDone(ctx) != nil {
				break
			}
			start := time.Now()
			res, err := v.prober.Probe(ctx, r, server, rcpt)
			out.Attempts = append(out.Attempts, Attempt{Route: r.Name, Server: server, Duration: time.Since(start), Result: res, Err: err})
			if err != nil {
				out.Err = err
				continue
			}
			switch res.Verdict {
			case Valid:
				out.decide(Valid, len(out.Attempts)-1)
				return out
			case Unknown:
				routeUnknown = true
				if unknownAt < 0 {
					unknownAt = len(out.Attempts) - 1
				}
				break servers
			case TempFail:
				if tempAt < 0 {
					tempAt = len(out.Attempts) - 1
				}
			}
		}
		if routeUnknown {
			unknownRoutes++
		}
		if ctxDone(ctx) != nil {
			break
		}
	}
	switch {
	case unknownRoutes == len(routes):
		out.decide(Unknown, unknownAt)
	case tempAt >= 0:
		out.decide(TempFail, tempAt)
	default:
		out.Verdict = Unreachable
		if ctxErr := ctxDone(ctx); ctxErr != nil {
			out.Err = ctxErr
		}
	}
	return out
}

// servers lists r's servers to ask, "mx:" entries resolved; an entry that
// cannot be resolved is recorded as an attempt that failed.
func (v *Verifier) servers(ctx context.Context, r *Route, out *Outcome) []string {
	if !slices.ContainsFunc(r.Servers, IsMX) {
		return r.Servers
	}
	var list []string
	for _, s := range r.Servers {
		if !IsMX(s) {
			list = append(list, s)
			continue
		}
		var found []string
		err := errors.New("no DNS resolver configured")
		if v.mx != nil {
			found, err = v.mx.Servers(ctx, s)
		}
		if err != nil {
			e := &Error{Server: s, Stage: StageDNS, Err: err}
			out.Attempts = append(out.Attempts, Attempt{Route: r.Name, Server: s, Err: e})
			out.Err = e
			continue
		}
		list = append(list, found...)
	}
	return list
}

// ctxDone returns ctx's error, or context.DeadlineExceeded once its deadline
// has passed: a probe can end at the deadline a moment before the context's
// timer marks it done, and the budget is spent either way. Without this the
// next servers would be "asked" with an expired context and counted as
// unavailable.
func ctxDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// decide sets the verdict from the attempt at index i.
func (o *Outcome) decide(v Verdict, i int) {
	a := o.Attempts[i]
	o.Verdict, o.Route, o.Server, o.Reply, o.Class, o.Err = v, a.Route, a.Server, a.Result.Reply, a.Result.Class, nil
}

// Servers lists the servers r's callouts go to now, "mx:" entries
// resolved (those that cannot be are left out).
func (v *Verifier) Servers(ctx context.Context, r *Route) []string {
	var out Outcome
	return v.servers(ctx, r, &out)
}

// Routes returns the routes, in configuration order.
func (v *Verifier) Routes() []*Route {
	out := make([]*Route, len(v.routes))
	for i := range v.routes {
		out[i] = &v.routes[i]
	}
	return out
}
