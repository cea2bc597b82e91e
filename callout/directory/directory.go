package directory

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/calloutd/calloutd/callout"
)

// Settings are how one route searches its directory.
type Settings struct {
	// StartTLS upgrades ldap:// connections before binding (ldaps:// is
	// TLS from the start).
	StartTLS bool
	// TLS verifies the servers' certificates (RootCAs: the route's CA
	// file, or the system's when nil); ServerName is set per URL.
	TLS *tls.Config
	// BindDN and BindPassword authenticate the search; "" binds
	// anonymously.
	BindDN, BindPassword string
	BaseDN               string
	// Filter has %s where the escaped address goes.
	Filter string
	// Timeout bounds each connection, bind and search, within the
	// verdict's budget. Default 3 s.
	Timeout time.Duration
	// CAFile names the CA of TLS (for pooling: connections of different
	// trust are different connections).
	CAFile string
}

// Prober asks a directory. Servers are LDAP URLs.
type Prober struct {
	Settings *Settings
	Pool     *Pool
	// Trace, if set, sees the bind, the search and its result, as lines
	// (calloutd check prints them).
	Trace func(callout.TraceEvent)
}

// Reasons of the classifications a search gives.
const (
	ReasonFound    = "ldap_found"
	ReasonNotFound = "ldap_not_found"
)

// ErrReferral: the search was referred elsewhere and found nothing here;
// referrals are not followed, so nothing is known.
var ErrReferral = errors.New("the search returned only referrals, which are not followed")

// Probe implements callout.Prober. One deadline covers the connection,
// StartTLS, the bind and the search: the smaller of ldap_timeout and the
// verdict's budget. A pooled connection that turns out dead is replaced
// once by a new one.
func (p *Prober) Probe(ctx context.Context, _ *callout.Route, server string, rcpt callout.Address) (callout.Result, error) {
	st := p.Settings
	start := time.Now()
	timeout := st.Timeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	deadline := start.Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if rcpt.UTF8() {
		// Directories hold mail addresses as ASCII (IA5String): not
		// found would mean nothing.
		return callout.Result{}, &callout.Error{Server: server, Stage: callout.StageSearch,
			Err: fmt.Errorf("%w (directories are not searched for UTF-8 local parts)", callout.ErrNoSMTPUTF8)}
	}
	trace := func(sent bool, line string) {
		if p.Trace != nil {
			p.Trace(callout.TraceEvent{Server: server, Sent: sent, Line: line, Elapsed: time.Since(start)})
		}
	}
	k := key(server, st)
	if err := p.Pool.acquire(ctx, server, deadline); err != nil {
		return callout.Result{}, err
	}
	defer p.Pool.release(server)
	for try := 0; ; try++ {
		c, reused, err := p.Pool.get(k, func() (*ldap.Conn, error) { return dial(server, st, deadline, trace) })
		if err != nil {
			return callout.Result{}, budgetErr(err, deadline)
		}
		res, err := p.search(c, server, rcpt, deadline, trace)
		var ce *callout.Error
		if err != nil && reused && try == 0 && errors.As(err, &ce) && ce.Stage == callout.StageConnect && time.Now().Before(deadline) {
			continue // the pooled connection was dead: once more on a new one
		}
		return res, budgetErr(err, deadline)
	}
}

// search runs the search on c, and gives c back to the pool unless it
// failed.
func (p *Prober) search(c *ldap.Conn, server string, rcpt callout.Address, deadline time.Time, trace func(bool, string)) (callout.Result, error) {
	st := p.Settings
	left := time.Until(deadline)
	if left <= 0 {
		c.Close()
		return callout.Result{}, &callout.Error{Server: server, Stage: callout.StageSearch, Err: context.DeadlineExceeded}
	}
	c.SetTimeout(left)
	// A server that stops answering must not hold the request past its
	// deadline, whatever the library does with its timeout.
	stop := time.AfterFunc(left, func() { c.Close() })
	defer stop.Stop()
	filter := strings.ReplaceAll(st.Filter, "%s", ldap.EscapeFilter(rcpt.String()))
	trace(true, fmt.Sprintf("search base=%q scope=sub filter=%s", st.BaseDN, filter))
	req := ldap.NewSearchRequest(st.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, int(max(left/time.Second, 1)), false, filter, []string{"1.1"}, nil)
	res, err := c.Search(req)
	if err != nil {
		c.Close()
		trace(false, "error: "+err.Error())
		if ldap.IsErrorWithCode(err, ldap.ErrorNetwork) {
			return callout.Result{}, &callout.Error{Server: server, Stage: callout.StageConnect, Err: unwrapLDAP(err)}
		}
		// The server answered with an error (no such base, a size or
		// time limit): not a failing server.
		return callout.Result{}, &callout.Error{Server: server, Stage: callout.StageSearch, Err: fmt.Errorf("%w: %w", callout.ErrNotAskable, err)}
	}
	p.Pool.put(key(server, st), c)
	switch {
	case len(res.Entries) > 0:
		trace(false, fmt.Sprintf("%d entries, first %s", len(res.Entries), res.Entries[0].DN))
		return callout.Result{Verdict: callout.Valid, Class: callout.Classification{Meaning: callout.MeansExists, Reason: ReasonFound}}, nil
	case len(res.Referrals) > 0:
		trace(false, fmt.Sprintf("no entry, %d referrals (not followed): %s", len(res.Referrals), strings.Join(res.Referrals, " ")))
		return callout.Result{}, &callout.Error{Server: server, Stage: callout.StageSearch, Err: fmt.Errorf("%w: %w", callout.ErrNotAskable, ErrReferral)}
	}
	trace(false, "no entry")
	return callout.Result{Verdict: callout.Unknown, Class: callout.Classification{Meaning: callout.MeansUnknown, Reason: ReasonNotFound}}, nil
}

// budgetErr: a failure at or after the deadline is the budget running
// out, not the server failing (the breaker must not count it).
func budgetErr(err error, deadline time.Time) error {
	var ce *callout.Error
	if err == nil || !errors.As(err, &ce) || time.Now().Before(deadline) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &callout.Error{Server: ce.Server, Stage: ce.Stage, Err: fmt.Errorf("%w: %w", context.DeadlineExceeded, ce.Err)}
}

// dial connects to server (an LDAP URL), upgrades it with StartTLS when
// asked, and binds, all before deadline.
func dial(server string, st *Settings, deadline time.Time, trace func(bool, string)) (*ldap.Conn, error) {
	u, err := url.Parse(server)
	if err != nil {
		return nil, &callout.Error{Server: server, Stage: callout.StageConnect, Err: err}
	}
	tc := tlsFor(st, u.Hostname())
	trace(true, "connect "+server)
	c, err := ldap.DialURL(server, ldap.DialWithDialer(&net.Dialer{Deadline: deadline}), ldap.DialWithTLSConfig(tc))
	if err != nil {
		return nil, &callout.Error{Server: server, Stage: callout.StageConnect, Err: unwrapLDAP(err)}
	}
	// StartTLS's handshake and the bind have no deadline of their own
	// in the library: closing the connection at the deadline ends them.
	stop := time.AfterFunc(time.Until(deadline), func() { c.Close() })
	defer stop.Stop()
	c.SetTimeout(max(time.Until(deadline), time.Millisecond))
	if st.StartTLS && u.Scheme == "ldap" {
		trace(true, "starttls")
		if err := c.StartTLS(tc); err != nil {
			c.Close()
			return nil, &callout.Error{Server: server, Stage: callout.StageConnect, Err: fmt.Errorf("starttls: %w", unwrapLDAP(err))}
		}
	}
	if st.BindDN != "" {
		trace(true, "bind "+st.BindDN)
		if err := c.Bind(st.BindDN, st.BindPassword); err != nil {
			c.Close()
			trace(false, "error: "+err.Error())
			if ldap.IsErrorWithCode(err, ldap.ErrorNetwork) {
				return nil, &callout.Error{Server: server, Stage: callout.StageConnect, Err: unwrapLDAP(err)}
			}
			return nil, &callout.Error{Server: server, Stage: callout.StageBind, Err: fmt.Errorf("%w: %w", callout.ErrNotAskable, err)}
		}
	}
	return c, nil
}

// unwrapLDAP keeps a network error visible as one (callout.Error.Timeout
// looks for net.Error).
func unwrapLDAP(err error) error {
	var le *ldap.Error
	if errors.As(err, &le) && le.Err != nil {
		return le.Err
	}
	return err
}

func tlsFor(st *Settings, host string) *tls.Config {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if st.TLS != nil {
		tc = st.TLS.Clone()
	}
	tc.ServerName = host
	return tc
}

// poolKey: connections serve searches of the same server, bound as the
// same DN with the same password over the same kind of TLS. (The
// password is kept as a hash: a reload that changes it closes the
// connections bound with the old one.)
type poolKey struct {
	server, bindDN, caFile string
	secret                 uint64
	startTLS               bool
}

func key(server string, st *Settings) poolKey {
	h := fnv.New64a()
	h.Write([]byte(st.BindPassword))
	return poolKey{server: server, bindDN: st.BindDN, caFile: st.CAFile, secret: h.Sum64(), startTLS: st.StartTLS}
}

// Key names the pooled connections a Prober uses for one server, for
// Pool.Retain.
type Key struct{ k poolKey }

// Keys are the pooled connections p uses for its servers.
func (p *Prober) Keys(servers []string) []Key {
	keys := make([]Key, len(servers))
	for i, s := range servers {
		keys[i] = Key{key(s, p.Settings)}
	}
	return keys
}

// MaxSearches bounds the searches in flight to one server, so that a
// burst of new addresses waits for a connection (within its deadline)
// instead of opening and binding one each: a directory is a shared
// service, not a mail server calloutd owns.
const MaxSearches = 16

// maxIdle bounds the idle connections kept per server and bind DN.
const maxIdle = 4

// Pool keeps bound connections for reuse; a connection that failed is
// closed, and the next search dials and binds again.
type Pool struct {
	mu    sync.Mutex
	idle  map[poolKey][]*ldap.Conn
	slots map[string]chan struct{} // per server: MaxSearches tokens
	// retained: the keys the last Retain kept (nil before any); a
	// connection of another key, busy during the reload, is closed when
	// it comes back rather than kept idle for good.
	retained map[poolKey]bool
	closed   bool
}

// NewPool returns an empty pool.
func NewPool() *Pool {
	return &Pool{idle: make(map[poolKey][]*ldap.Conn), slots: make(map[string]chan struct{})}
}

// acquire waits for one of server's MaxSearches slots, until deadline.
func (p *Pool) acquire(ctx context.Context, server string, deadline time.Time) error {
	p.mu.Lock()
	ch := p.slots[server]
	if ch == nil {
		ch = make(chan struct{}, MaxSearches)
		p.slots[server] = ch
	}
	p.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return nil
	default:
	}
	busy := &callout.Error{Server: server, Stage: callout.StageConnect,
		Err: fmt.Errorf("%w (%d searches in flight): %w", callout.ErrBusy, MaxSearches, context.DeadlineExceeded)}
	wait := time.NewTimer(time.Until(deadline))
	defer wait.Stop()
	select {
	case ch <- struct{}{}:
		if time.Until(deadline) < callout.MinBlameBudget {
			// A slot freed near the deadline: too little budget left to
			// search, and a timeout would be blamed on the server.
			<-ch
			return busy
		}
		return nil
	case <-ctx.Done():
		return &callout.Error{Server: server, Stage: callout.StageConnect, Err: fmt.Errorf("%w: %w", callout.ErrBusy, ctx.Err())}
	case <-wait.C:
		return busy // the budget ran out waiting: not the server's failure
	}
}

func (p *Pool) release(server string) {
	p.mu.Lock()
	ch := p.slots[server]
	p.mu.Unlock()
	<-ch
}

// get returns an idle connection (reused) or a new one.
func (p *Pool) get(k poolKey, dial func() (*ldap.Conn, error)) (c *ldap.Conn, reused bool, err error) {
	p.mu.Lock()
	for {
		conns := p.idle[k]
		if len(conns) == 0 {
			break
		}
		c := conns[len(conns)-1]
		p.idle[k] = conns[:len(conns)-1]
		if c.IsClosing() {
			c.Close()
			continue
		}
		p.mu.Unlock()
		return c, true, nil
	}
	p.mu.Unlock()
	c, err = dial()
	return c, false, err
}

func (p *Pool) put(k poolKey, c *ldap.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle[k]) >= maxIdle || c.IsClosing() || p.retained != nil && !p.retained[k] {
		c.Close()
		return
	}
	p.idle[k] = append(p.idle[k], c)
}

// Retain closes the idle connections that keep does not name (after a
// reload: a server no route searches, or searched with another bind DN,
// password or TLS).
func (p *Pool) Retain(keep []Key) {
	kept := make(map[poolKey]bool, len(keep))
	for _, k := range keep {
		kept[k.k] = true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.retained = kept
	for k, conns := range p.idle {
		if kept[k] {
			continue
		}
		for _, c := range conns {
			c.Close()
		}
		delete(p.idle, k)
	}
}

// Close closes every idle connection; connections in use are closed when
// they come back.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for k, conns := range p.idle {
		for _, c := range conns {
			c.Close()
		}
		delete(p.idle, k)
	}
}

// CheckFilter tells whether filter, with an address in place of %s, is a
// valid LDAP filter.
func CheckFilter(filter string) error {
	if !strings.Contains(filter, "%s") {
		return errors.New("has no %s for the address")
	}
	if _, err := ldap.CompileFilter(strings.ReplaceAll(filter, "%s", "bob@example.com")); err != nil {
		return err
	}
	return nil
}
