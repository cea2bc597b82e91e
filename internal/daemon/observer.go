package daemon

import (
	"time"

	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/policyd"
)

// Observer sees what the handler does, so metrics stay out of the handler
// (internal/metrics implements it). Methods must be cheap and safe for
// concurrent use.
type Observer interface {
	// PolicyRequest counts a request by protocol state and the action given.
	PolicyRequest(state string, a policyd.Action)
	// CacheLookup counts a cache hit or miss.
	CacheLookup(hit bool)
	// CacheError counts a store that could not be asked ("get", "set").
	CacheError(op string)
	// Verdict counts a verdict by where it came from: "cache" or "callout".
	Verdict(v callout.Verdict, source string)
	// CalloutBegin and CalloutEnd bracket one verification.
	CalloutBegin()
	// CalloutEnd counts the attempts, the replies by their meaning, and
	// the failures.
	CalloutEnd(out *callout.Outcome, d time.Duration)
	// Panic counts a panic recovered while answering.
	Panic()
	// Skipped counts a request not verified: "trusted_network",
	// "authenticated".
	Skipped(reason string)
	// DryRunWouldReject counts an answer a dry run did not send, by route.
	DryRunWouldReject(route string)
	// HarvestRejected counts a recipient refused by the harvest limit;
	// HarvestLimited a client reaching it.
	HarvestRejected()
	HarvestLimited()
	// Catchall counts a domain found catch-all by a probe (with the
	// domain), or found not to be (""). CatchallDomains is told how many
	// domains this node knows to be catch-all.
	Catchall(domain string, catchall bool)
	// Learned counts a line of the delivery log by what came of it (see
	// LearnResults).
	Learned(result string)
}

type nopObserver struct{}

func (nopObserver) PolicyRequest(string, policyd.Action)       {}
func (nopObserver) CacheLookup(bool)                           {}
func (nopObserver) CacheError(string)                          {}
func (nopObserver) Verdict(callout.Verdict, string)            {}
func (nopObserver) CalloutBegin()                              {}
func (nopObserver) CalloutEnd(*callout.Outcome, time.Duration) {}
func (nopObserver) Panic()                                     {}
func (nopObserver) Skipped(string)                             {}
func (nopObserver) DryRunWouldReject(string)                   {}
func (nopObserver) HarvestRejected()                           {}
func (nopObserver) HarvestLimited()                            {}
func (nopObserver) Catchall(string, bool)                      {}
func (nopObserver) Learned(string)                             {}
