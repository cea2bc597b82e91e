package callout

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrBreakerOpen is the error of a probe not made because the server's
// circuit breaker is open: it failed at the connection level too often in
// a row.
var ErrBreakerOpen = errors.New("server skipped: circuit breaker open after repeated failures")

// Breaker is a Prober that skips a server after Failures connection-level
// failures in a row (no connection, no greeting, no reply in time), for a
// cool-down that starts at Cooldown and doubles with each failed trial up
// to MaxCooldown. After the cool-down one probe is let through as a trial:
// its success closes the breaker, its failure opens it again. While open,
// a probe to the server costs nothing: the next server or route is asked
// at once. A reply, whatever it says, is not a failure.
type Breaker struct {
	Next        Prober
	Failures    int           // default 3
	Cooldown    time.Duration // default 1 s
	MaxCooldown time.Duration // default 1 min
	// OnChange, if set, is called (outside any lock) when a server's
	// breaker opens (up false) or closes (up true).
	OnChange func(server string, up bool)

	mu      sync.Mutex
	servers map[string]*breakerState
	now     func() time.Time // for tests
}

type breakerState struct {
	fails    int
	open     bool
	until    time.Time
	cooldown time.Duration
	trial    bool // a trial probe is under way
}

func (b *Breaker) clock() time.Time {
	if b.now != nil {
		return b.now()
	}
	return time.Now()
}

// Probe implements Prober.
func (b *Breaker) Probe(ctx context.Context, r *Route, server string, rcpt Address) (Result, error) {
	trial, ok := b.admit(server)
	if !ok {
		return Result{}, &Error{Server: server, Stage: StageConnect, Err: ErrBreakerOpen}
	}
	// The server is blamed for a wait the verdict's budget cut short
	// only if the probe started with a fair share of budget left.
	blame := true
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < MinBlameBudget {
		blame = false
	}
	recorded := false
	defer func() {
		if !recorded { // a panic below: the trial must not stay taken
			b.record(server, trial, outcomeAborted)
		}
	}()
	res, err := b.Next.Probe(ctx, r, server, rcpt)
	recorded = true
	o := outcomeOK
	switch {
	case connectionFailure(err):
		o = outcomeFailed
	case errors.Is(err, ErrBusy) || errors.Is(err, ErrSourceAddress):
		o = outcomeAborted // our own limit, or our own address: not the server
	case errors.Is(err, context.DeadlineExceeded):
		if blame {
			o = outcomeFailed // no reply before the budget ran out
		} else {
			o = outcomeAborted
		}
	case errors.Is(err, context.Canceled) || errors.Is(err, errPoolClosed):
		o = outcomeAborted
	}
	b.record(server, trial, o)
	return res, err
}

// MinBlameBudget: a probe that started with less budget than this and ran
// out of it says nothing about the server. A probe that waited for one of
// this node's connections and is left with less gives up as ErrBusy.
const MinBlameBudget = 500 * time.Millisecond

type outcome int

const (
	outcomeOK      outcome = iota
	outcomeFailed          // the server could not be talked to
	outcomeAborted         // the caller gave up: says nothing either way
)

// admit tells whether a probe may go to server, and whether it is the
// trial of an open breaker.
func (b *Breaker) admit(server string) (trial, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.servers[server]
	if st == nil || !st.open {
		return false, true
	}
	if st.trial || b.clock().Before(st.until) {
		return false, false
	}
	st.trial = true
	return true, true
}

// connectionFailure tells whether err says the server could not be talked
// to, as opposed to a reply it gave, or a budget that ran out.
func connectionFailure(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, ErrBusy) || errors.Is(err, ErrSourceAddress) || errors.Is(err, ErrBreakerOpen) || errors.Is(err, errPoolClosed) || errors.Is(err, ErrNoSMTPUTF8) ||
		errors.Is(err, ErrNotAskable) {
		return false
	}
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	if e.Err != nil {
		return true // no connection, or no (complete) reply in time
	}
	// A refused greeting or EHLO (421 too busy, 554 no service).
	return e.Reply != nil && (e.Stage == StageGreeting || e.Stage == StageHello)
}

func (b *Breaker) record(server string, trial bool, o outcome) {
	failed := o == outcomeFailed
	b.mu.Lock()
	if b.servers == nil {
		b.servers = make(map[string]*breakerState)
	}
	st := b.servers[server]
	if st == nil {
		if !failed { // aborted or fine: nothing to remember
			b.mu.Unlock()
			return
		}
		st = &breakerState{}
		b.servers[server] = st
	}
	changed, up := false, false
	switch {
	case o == outcomeAborted:
		if trial {
			// No answer either way: the next request tries again.
			st.trial = false
			st.until = b.clock()
		}
	case trial:
		st.trial = false
		if failed {
			st.cooldown = min(st.cooldown*2, or(b.MaxCooldown, time.Minute))
			st.until = b.clock().Add(st.cooldown)
		} else {
			delete(b.servers, server)
			changed, up = true, true
		}
	case failed:
		st.fails++
		if !st.open && st.fails >= orInt(b.Failures, 3) {
			st.open = true
			st.cooldown = or(b.Cooldown, time.Second)
			st.until = b.clock().Add(st.cooldown)
			changed = true
		}
	case !st.open:
		delete(b.servers, server) // a success ends the run of failures
	}
	b.mu.Unlock()
	if changed && b.OnChange != nil {
		b.OnChange(server, up)
	}
}

func or(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Up reports whether server's breaker is closed.
func (b *Breaker) Up(server string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.servers[server]
	return st == nil || !st.open
}
