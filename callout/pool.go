package callout

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// PoolSettings bound a Pool. Zero values take the defaults named, which
// stay below Postfix's own limits with a margin.
type PoolSettings struct {
	// Size is the number of idle sessions kept per server (and HELO
	// name and sender). Default 4; negative keeps none (one session per
	// probe, as Client).
	Size int
	// MaxConns bounds the sessions open at once to one server; a probe
	// beyond it waits for one, within its context. Default 10.
	MaxConns int
	// IdleTimeout closes (with QUIT) a session idle this long. Default
	// 30 s, below common server idle limits (Postfix's smtpd_timeout is
	// 300 s, Exchange's 5 min... but some appliances cut at 60 s).
	IdleTimeout time.Duration
	// MaxAge recycles a session this old. Default 5 min.
	MaxAge time.Duration
	// MaxErrors recycles a session after this many RCPTs answered 4xx or
	// 5xx (unknown users included): Postfix delays every reply by 1 s
	// after smtpd_soft_error_limit (10) and disconnects at
	// smtpd_hard_error_limit (20). Default 8.
	MaxErrors int
	// MaxRecipients recycles a session after this many RCPTs in its one
	// transaction (Postfix's smtpd_recipient_limit is 1000). Default 900.
	MaxRecipients int
}

func (ps PoolSettings) size() int {
	if ps.Size == 0 {
		return 4
	}
	return max(ps.Size, 0)
}

func (ps PoolSettings) maxConns() int  { return orInt(ps.MaxConns, 10) }
func (ps PoolSettings) maxErrors() int { return orInt(ps.MaxErrors, 8) }
func (ps PoolSettings) maxRcpts() int  { return orInt(ps.MaxRecipients, 900) }
func (ps PoolSettings) idle() time.Duration {
	if ps.IdleTimeout <= 0 {
		return 30 * time.Second
	}
	return ps.IdleTimeout
}
func (ps PoolSettings) maxAge() time.Duration {
	if ps.MaxAge <= 0 {
		return 5 * time.Minute
	}
	return ps.MaxAge
}

func orInt(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// Pool is a Prober that keeps SMTP sessions open between probes. A session
// holds one transaction: MAIL FROM once, then one RCPT TO per probe, never
// RSET, never DATA. A Postfix backend takes one in_flow_delay token per
// transaction whose RCPT it accepts and gets it back only with a message;
// a verifier that opens a transaction per probe runs the pool of tokens dry
// and then waits a second per verdict. One transaction per session takes
// one token per session.
//
// A session is recycled (QUIT, in the background) before the backend would
// punish it: after MaxErrors rejected RCPTs, MaxRecipients RCPTs, at
// MaxAge, and after any surprise (a reply that is not 2xx/4xx/5xx to RCPT,
// a 421, a lost connection, "too many recipients"). A pooled session the
// server closed while idle never yields a verdict: the probe is made again,
// once, on a fresh session.
type Pool struct {
	Client *Client
	PoolSettings

	mu      sync.Mutex
	servers map[poolKey]*serverPool
	closed  bool
	stop    chan struct{}
	bg      sync.WaitGroup
	once    sync.Once
}

// poolKey: sessions can serve probes of the same server, introduced by the
// same HELO name, in a transaction of the same sender.
type poolKey struct {
	server, helo, from, source, tls string
}

type serverPool struct {
	idle    []*pooledSession // most recently used last
	open    int
	changed chan struct{} // closed and replaced when a session is returned or closed
	dropped bool          // by Retain: sessions in use are closed when returned
}

type pooledSession struct {
	s       *Session
	sp      *serverPool
	born    time.Time
	used    time.Time
	inTx    bool
	rcpts   int
	errors  int
	retired bool
}

// NewPool returns a pool asking through c.
func NewPool(c *Client, ps PoolSettings) *Pool {
	p := &Pool{Client: c, PoolSettings: ps, servers: make(map[poolKey]*serverPool), stop: make(chan struct{})}
	p.bg.Add(1)
	go p.janitor()
	return p
}

// Close quits every idle session and stops the pool; sessions in use are
// closed when their probe ends.
func (p *Pool) Close() {
	p.once.Do(func() {
		p.mu.Lock()
		var idle []*pooledSession
		for _, sp := range p.servers {
			idle = append(idle, sp.idle...)
			sp.open -= len(sp.idle)
			sp.idle = nil
			sp.signal()
		}
		p.mu.Unlock()
		for _, ps := range idle {
			p.quit(ps) // QUIT, in goroutines Close waits for
		}
		p.mu.Lock()
		p.closed = true // later quits close at once
		p.mu.Unlock()
		close(p.stop)
		p.bg.Wait()
	})
}

// Retain closes the idle sessions of every server not in keep (after a
// reload that changed routes): sessions are kept by server, HELO name,
// sender, source addresses (Settings.Source) and TLS settings
// (Settings.TLS and TLSKey, as "mode|key").
func (p *Pool) Retain(keep func(server, helo, from, source, tls string) bool) {
	p.mu.Lock()
	var idle []*pooledSession
	for k, sp := range p.servers {
		if keep(k.server, k.helo, k.from, k.source, k.tls) {
			continue
		}
		idle = append(idle, sp.idle...)
		sp.open -= len(sp.idle)
		sp.idle = nil
		sp.dropped = true
		delete(p.servers, k)
		sp.signal()
	}
	p.mu.Unlock()
	for _, ps := range idle {
		p.quit(ps)
	}
}

// Stats reports the sessions open and idle, over all servers.
func (p *Pool) Stats() (open, idle int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, sp := range p.servers {
		open += sp.open
		idle += len(sp.idle)
	}
	return open, idle
}

func (sp *serverPool) signal() {
	close(sp.changed)
	sp.changed = make(chan struct{})
}

// janitor quits sessions idle too long or too old, every second.
func (p *Pool) janitor() {
	defer p.bg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		var old []*pooledSession
		p.mu.Lock()
		for _, sp := range p.servers {
			keep := sp.idle[:0]
			for _, ps := range sp.idle {
				if now.Sub(ps.used) >= p.idle() || now.Sub(ps.born) >= p.maxAge() {
					old = append(old, ps)
					sp.open--
				} else {
					keep = append(keep, ps)
				}
			}
			clear(sp.idle[len(keep):])
			sp.idle = keep
			if len(old) > 0 {
				sp.signal()
			}
		}
		p.mu.Unlock()
		for _, ps := range old {
			p.quit(ps)
		}
	}
}

// quit ends a session in the background: no answer waits for QUIT.
func (p *Pool) quit(ps *pooledSession) {
	p.mu.Lock()
	closed := p.closed
	if !closed {
		p.bg.Add(1)
	}
	p.mu.Unlock()
	if closed {
		// Close is waiting, or done: no goroutine it would not wait for.
		ps.s.Close()
		return
	}
	go func() {
		defer p.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), quitTimeout)
		defer cancel()
		ps.s.Quit(ctx)
	}()
}

// errPoolClosed is returned by a probe on a closed pool.
var errPoolClosed = errors.New("callout: pool closed")

// Probe implements Prober.
func (p *Pool) Probe(ctx context.Context, r *Route, server string, rcpt Address) (Result, error) {
	st := p.Client.settings(r)
	key := poolKey{server: server, helo: st.heloName(), from: st.MailFrom, source: st.Source(), tls: st.TLS + "|" + st.TLSKey}
	for try := 0; ; try++ {
		// The retry of a stale session takes a fresh one: the other
		// idle sessions may be as stale (a restarted backend).
		ps, fresh, err := p.acquire(ctx, key, st, try > 0)
		if err != nil {
			return Result{}, err
		}
		res, err, again := p.askOnce(ctx, ps, st, server, rcpt, fresh)
		if again && try == 0 && ctxDone(ctx) == nil {
			continue
		}
		return res, err
	}
}

// askOnce is ask, then the session back to the pool: also when ask
// panics (the request's recovery must not keep a connection slot taken
// for good), then as broken.
func (p *Pool) askOnce(ctx context.Context, ps *pooledSession, st *Settings, server string, rcpt Address, fresh bool) (res Result, err error, again bool) {
	done := false
	defer func() {
		if !done {
			ps.s.broken = true
		}
		p.release(ps)
	}()
	res, err, again = p.ask(ctx, ps, st, server, rcpt, fresh)
	done = true
	return res, err, again
}

// ask sends MAIL (for a new transaction) and RCPT on ps. again tells that
// the answer came from a session that was no longer fit (closed by the
// server while idle, 421, too many recipients): it is not a verdict, and
// the probe should be made again on a fresh session.
func (p *Pool) ask(ctx context.Context, ps *pooledSession, st *Settings, server string, rcpt Address, fresh bool) (res Result, err error, again bool) {
	s := ps.s
	if err := s.canAsk(rcpt); err != nil {
		return Result{}, err, false // the session stays fit
	}
	s.cmdTimeout = st.commandTimeout()
	ps.used = time.Now()
	if !ps.inTx {
		var rep Reply
		if fresh && s.Extensions != nil && hasKey(s.Extensions, "PIPELINING") {
			// MAIL and RCPT in one write: a round trip saved.
			var mailErr error
			rep, mailErr, err = s.mailRcpt(ctx, st.MailFrom, rcpt)
			if err == nil && mailErr != nil {
				ps.retired = true
				return Result{}, mailErr, false
			}
		} else {
			if err := s.Mail(ctx, st.MailFrom); err != nil {
				ps.retired = true
				return Result{}, err, !fresh && stale(err)
			}
			ps.inTx = true
			rep, err = s.Rcpt(ctx, rcpt)
		}
		ps.inTx = true
		if err != nil {
			ps.retired = true
			return Result{}, err, !fresh
		}
		return p.judge(ps, st, server, rcpt, rep, fresh)
	}
	rep, err := s.Rcpt(ctx, rcpt)
	if err != nil {
		ps.retired = true
		return Result{}, err, !fresh
	}
	return p.judge(ps, st, server, rcpt, rep, fresh)
}

// judge reads a reply to RCPT and decides what becomes of the session.
func (p *Pool) judge(ps *pooledSession, st *Settings, server string, rcpt Address, rep Reply, fresh bool) (Result, error, bool) {
	ps.rcpts++
	c := st.Rules.Classify(rep)
	switch {
	case rep.Code == 421 || c.Reason == "too_many_recipients":
		// The server is closing this session (an idle timeout, say),
		// or the transaction is full (Exchange's per-message limit):
		// never a verdict. Asked again on a new session; if this one
		// was new, the server is unavailable for this verdict.
		ps.retired = true
		return Result{}, &Error{Server: server, Stage: StageRcpt, Command: "RCPT TO:<" + rcpt.Wire() + ">", Reply: &rep, Class: c}, !fresh
	case rep.Class() == 4 || rep.Class() == 5:
		ps.errors++
	case rep.Class() != 2:
		ps.retired = true
	}
	if ps.errors >= p.maxErrors() || ps.rcpts >= p.maxRcpts() || time.Since(ps.born) >= p.maxAge() {
		ps.retired = true
	}
	res, err := ResultOf(server, rcpt, rep, c)
	return res, err, false
}

// stale tells whether an error of a pooled session's first command means
// the server had closed it: a lost connection or a 421.
func stale(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Err != nil || e.Reply != nil && e.Reply.Code == 421
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// acquire returns an idle session, or a new one when fewer than MaxConns
// are open, or waits for either within ctx.
func (p *Pool) acquire(ctx context.Context, key poolKey, st *Settings, fresh bool) (*pooledSession, bool, error) {
	waited := false
	for {
		if err := busyAfterWait(ctx, waited, key.server); err != nil {
			return nil, false, err
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, false, &Error{Server: key.server, Stage: StageConnect, Err: errPoolClosed}
		}
		sp := p.servers[key]
		if sp == nil {
			sp = &serverPool{changed: make(chan struct{})}
			p.servers[key] = sp
		}
		var stale []*pooledSession
		var found *pooledSession
		for n := len(sp.idle); n > 0 && found == nil; n = len(sp.idle) {
			ps := sp.idle[n-1]
			sp.idle[n-1] = nil
			sp.idle = sp.idle[:n-1]
			// A session the server closed or spoke on while idle
			// (421, "timeout") is not used, nor, when a fresh one is
			// asked for, any idle one.
			if !fresh && time.Since(ps.used) < p.idle() && time.Since(ps.born) < p.maxAge() && ps.s.idle() {
				found = ps
			} else {
				sp.open--
				stale = append(stale, ps)
			}
		}
		if len(stale) > 0 {
			sp.signal()
		}
		if found != nil {
			p.mu.Unlock()
			p.closeAll(stale)
			return found, false, nil
		}
		if sp.open < p.maxConns() {
			sp.open++
			p.mu.Unlock()
			p.closeAll(stale)
			s, err := p.openHello(ctx, st, key.server, sp)
			if err != nil {
				return nil, false, err
			}
			now := time.Now()
			return &pooledSession{s: s, sp: sp, born: now, used: now}, true, nil
		}
		wait := sp.changed
		p.mu.Unlock()
		p.closeAll(stale)
		select {
		case <-wait:
			waited = true
		case <-ctx.Done():
			return nil, false, &Error{Server: key.server, Stage: StageConnect, Err: fmt.Errorf("%w: %w", ErrBusy, ctx.Err())}
		}
	}
}

// openHello opens a session for a slot of sp, taken by the caller; the
// slot is given back when it fails, also by a panic.
func (p *Pool) openHello(ctx context.Context, st *Settings, server string, sp *serverPool) (s *Session, err error) {
	ok := false
	defer func() {
		if !ok {
			p.mu.Lock()
			sp.open--
			sp.signal()
			p.mu.Unlock()
		}
	}()
	s, err = p.Client.openHello(ctx, st, server)
	ok = err == nil
	return s, err
}

// busyAfterWait: a probe that waited for one of this node's connections
// and got one with less than MinBlameBudget left gives up as busy: it
// would run out talking to the server, and the breaker would blame a
// server that is only slow and in demand.
func busyAfterWait(ctx context.Context, waited bool, server string) error {
	if !waited {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < MinBlameBudget {
		return &Error{Server: server, Stage: StageConnect, Err: fmt.Errorf("%w: too little budget left after waiting: %w", ErrBusy, context.DeadlineExceeded)}
	}
	return nil
}

// closeAll ends sessions found unfit: closed at once when the server
// already spoke or hung up, else with QUIT in the background.
func (p *Pool) closeAll(list []*pooledSession) {
	for _, ps := range list {
		p.quit(ps)
	}
}

// release returns ps to its pool, or quits it when it is retired, broken,
// or the pool keeps enough idle sessions.
func (p *Pool) release(ps *pooledSession) {
	p.mu.Lock()
	sp := ps.sp
	keep := !ps.retired && !ps.s.broken && !p.closed && !sp.dropped && len(sp.idle) < p.size()
	if keep {
		sp.idle = append(sp.idle, ps)
	} else {
		sp.open--
	}
	sp.signal()
	p.mu.Unlock()
	if !keep {
		if ps.s.broken {
			ps.s.Close()
		} else {
			p.quit(ps)
		}
	}
}
