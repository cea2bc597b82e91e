package daemon

import (
	"errors"
	"strings"
	"time"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/internal/recipients"
	"github.com/calloutd/calloutd/policyd"
)

// Policy is what the configuration says about answers and cache lifetimes.
type Policy struct {
	RequestTimeout   time.Duration // budget for one verdict
	DeferUnreachable bool          // unreachable_action = "defer"
	DeferTempfail    bool          // tempfail_action = "defer"
	PositiveTTL      time.Duration
	NegativeTTL      time.Duration
	TempfailTTL      time.Duration
	// PositiveRefresh: a valid verdict older than this is answered from
	// the cache and verified again in the background; 0 = never.
	PositiveRefresh time.Duration
	// DryRun: answer DUNNO, log and count what would have been answered.
	DryRun bool
	// List holds the route's recipients_file (nil: none); NoCallout: the
	// route asks no server (callout = false).
	List      *recipients.List
	NoCallout bool
	// Delimiter: recipient_delimiter; the address without its extension
	// is verified.
	Delimiter string
	// ProbeCatchall and CatchallTTL: [callout] probe_catchall.
	ProbeCatchall bool
	CatchallTTL   time.Duration
}

// TTL is how long a verdict is cached.
func (p *Policy) TTL(v callout.Verdict) time.Duration {
	switch v {
	case callout.Valid:
		return p.PositiveTTL
	case callout.Unknown:
		return p.NegativeTTL
	default:
		return p.TempfailTTL
	}
}

// cachedSuffix marks answers served from the cache, so a sender (and the
// admin reading the log) can tell a remembered verdict from a fresh one.
const cachedSuffix = " (cached verdict)"

// Decide maps a verdict, and the backend reply in e, to what Postfix is told:
//
//	valid        DUNNO
//	unknown      5xx x.y.z <backend text>  (the backend's code and enhanced
//	             code when it gave 5xx ones, else 550 5.1.1)
//	tempfail     DEFER_IF_PERMIT 4.x.x <backend text>, or DUNNO
//	unreachable  DEFER_IF_PERMIT 4.4.1 ..., or DUNNO (the default: fail open)
func Decide(v callout.Verdict, e *cache.Entry, cached bool, p *Policy) policyd.Action {
	suffix := ""
	if cached {
		suffix = cachedSuffix
	}
	// The whole text, suffix included, must fit policyd's bound, or the
	// suffix is what gets cut.
	text := func(def string) string {
		t := policyd.Text(e.Text, def)
		if n := policyd.MaxText - len(suffix); len(t) > n {
			t = strings.TrimRight(t[:n], " ")
		}
		return t + suffix
	}
	switch v {
	case callout.Unknown:
		// The backend's code and enhanced code when they are about a
		// mailbox; Microsoft 365's "550 5.4.1 Recipient address rejected"
		// or a route's unknown_replies matching "554 5.7.1 ..." become
		// 550 5.1.1, which is what they mean.
		code, enhanced := e.Code, e.Enhanced
		if code != 550 && code != 551 && code != 553 {
			code = 550
		}
		if !callout.MailboxCode(enhanced) {
			enhanced = policyd.StatusBadMailbox
		}
		return policyd.Reject(code, enhanced, policyd.StatusBadMailbox, text("User unknown"))
	case callout.TempFail:
		if p.DeferTempfail {
			// A 552 5.2.2 at RCPT is a 452 4.2.2 (RFC 5321 4.5.3.1.10).
			enhanced := e.Enhanced
			if strings.HasPrefix(enhanced, "5.") {
				enhanced = "4" + enhanced[1:]
			}
			return policyd.DeferIfPermit(enhanced, policyd.StatusTempMailbox, text("Recipient temporarily unavailable"))
		}
	case callout.Unreachable:
		// No server could be asked about a UTF-8 address (none announces
		// SMTPUTF8): not a sign of trouble, and not worth a retry.
		if p.DeferUnreachable && e.Reason != ReasonNoSMTPUTF8 {
			return policyd.DeferIfPermit(policyd.StatusNoAnswer, policyd.StatusNoAnswer, "Recipient verification unavailable, try again later"+suffix)
		}
	}
	return policyd.Dunno
}

// replyText is the backend's reply text fit to follow Postfix's own
// "<addr>: Recipient address rejected: " prefix: a backend that is Postfix
// wrote that prefix too, and the sender must not read it twice.
func replyText(r callout.Reply) string {
	t := policyd.Text(r.Text(), "")
	if strings.HasPrefix(t, "<") {
		if end := strings.Index(t, ">: "); end > 0 {
			t = t[end+3:]
		}
	}
	t = strings.TrimPrefix(t, "Recipient address rejected: ")
	return t
}

// ReasonNoSMTPUTF8 is the reason of an unreachable verdict about a UTF-8
// address no server could be asked about.
const ReasonNoSMTPUTF8 = "no_smtputf8"

// EntryOf records an outcome for the cache and for Decide.
func EntryOf(o *callout.Outcome, now time.Time) cache.Entry {
	e := cache.Entry{Verdict: o.Verdict.String(), Route: o.Route, Server: o.Server, Reason: o.Class.Reason, Verified: now}
	if o.Verdict == callout.Unreachable && errors.Is(o.Err, callout.ErrNoSMTPUTF8) {
		e.Reason = ReasonNoSMTPUTF8
	}
	if o.Reply.Code != 0 {
		e.Code, e.Enhanced, e.Text = o.Reply.Code, o.Reply.Enhanced, replyText(o.Reply)
	}
	return e
}

// Answers of the directory-harvest limit: a client over it learns nothing
// about the address it asked.
var (
	harvestReject = policyd.Reject(550, "5.7.1", "5.7.1", "Too many unknown recipients")
	harvestDefer  = policyd.DeferIfPermit("4.7.1", "4.7.1", "Too many unknown recipients, try again later")
)

// HarvestAction is the answer to a client over the harvest limit
// (harvest.action).
func HarvestAction(deferIt bool) policyd.Action {
	if deferIt {
		return harvestDefer
	}
	return harvestReject
}

// Send is what Postfix is told when a would be the answer: a, or DUNNO in
// a dry run (dry is then true and a is what would have been sent).
func Send(a policyd.Action, p *Policy) (sent policyd.Action, dry bool) {
	if p.DryRun && a != policyd.Dunno {
		return policyd.Dunno, true
	}
	return a, false
}
