package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/calloutd/calloutd/cache"
	"github.com/calloutd/calloutd/callout"
	"github.com/calloutd/calloutd/policyd"
)

func TestDecide(t *testing.T) {
	open := &Policy{DeferTempfail: false, DeferUnreachable: false}
	strict := &Policy{DeferTempfail: true, DeferUnreachable: true}
	tests := []struct {
		name   string
		v      callout.Verdict
		e      cache.Entry
		cached bool
		p      *Policy
		want   policyd.Action
	}{
		{"valid", callout.Valid, cache.Entry{Code: 250}, false, strict, "DUNNO"},
		{"unknown mirrors code and enhanced code", callout.Unknown,
			cache.Entry{Code: 553, Enhanced: "5.1.6", Text: "Moved"}, false, open, "553 5.1.6 Moved"},
		{"unknown disabled", callout.Unknown, cache.Entry{Code: 550, Enhanced: "5.2.1", Text: "Mailbox disabled"}, false, open,
			"550 5.2.1 Mailbox disabled"},
		{"M365 DBEB 5.4.1 becomes 5.1.1", callout.Unknown,
			cache.Entry{Code: 550, Enhanced: "5.4.1", Text: "Access denied. AS(201806281)"}, false, open, "550 5.1.1 Access denied. AS(201806281)"},
		{"an admin's unknown_replies on a 554 5.7.1 line", callout.Unknown,
			cache.Entry{Code: 554, Enhanced: "5.7.1", Text: "not a user here"}, false, open, "550 5.1.1 not a user here"},
		{"qmail's 511", callout.Unknown, cache.Entry{Code: 511, Text: "sorry, no mailbox here by that name (#5.1.1)"}, false, open,
			"550 5.1.1 sorry, no mailbox here by that name (#5.1.1)"},
		{"unknown without enhanced code", callout.Unknown, cache.Entry{Code: 550, Text: "No such user"}, false, open, "550 5.1.1 No such user"},
		{"unknown exchange code", callout.Unknown,
			cache.Entry{Code: 550, Enhanced: "5.1.10", Text: "RESOLVER.ADR.RecipientNotFound; Recipient not found"}, false, open,
			"550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found"},
		{"unknown without text", callout.Unknown, cache.Entry{Code: 550}, false, open, "550 5.1.1 User unknown"},
		{"unknown cached", callout.Unknown, cache.Entry{Code: 550, Enhanced: "5.1.1", Text: "User unknown"}, true, open,
			"550 5.1.1 User unknown (cached verdict)"},
		{"unknown with odd code becomes 550", callout.Unknown, cache.Entry{Code: 0}, false, open, "550 5.1.1 User unknown"},
		{"tempfail defer", callout.TempFail, cache.Entry{Code: 450, Enhanced: "4.7.1", Text: "Greylisted"}, false, strict,
			"DEFER_IF_PERMIT 4.7.1 Greylisted"},
		{"tempfail defer default code", callout.TempFail, cache.Entry{Code: 451, Text: "Local error"}, false, strict,
			"DEFER_IF_PERMIT 4.2.0 Local error"},
		{"mailbox full 552 5.2.2 defers as 4.2.2", callout.TempFail, cache.Entry{Code: 552, Enhanced: "5.2.2", Text: "Mailbox full"}, false, strict,
			"DEFER_IF_PERMIT 4.2.2 Mailbox full"},
		{"tempfail dunno", callout.TempFail, cache.Entry{Code: 450}, false, open, "DUNNO"},
		{"unreachable dunno", callout.Unreachable, cache.Entry{}, false, open, "DUNNO"},
		{"unreachable defer", callout.Unreachable, cache.Entry{}, false, strict,
			"DEFER_IF_PERMIT 4.4.1 Recipient verification unavailable, try again later"},
		{"unreachable defer cached", callout.Unreachable, cache.Entry{}, true, strict,
			"DEFER_IF_PERMIT 4.4.1 Recipient verification unavailable, try again later (cached verdict)"},
	}
	long := strings.Repeat("x", 250)
	tests = append(tests, struct {
		name   string
		v      callout.Verdict
		e      cache.Entry
		cached bool
		p      *Policy
		want   policyd.Action
	}{"long text keeps the cached suffix", callout.Unknown, cache.Entry{Code: 550, Enhanced: "5.1.1", Text: long}, true, open,
		policyd.Action("550 5.1.1 " + long[:policyd.MaxText-len(cachedSuffix)] + cachedSuffix)})
	for _, tt := range tests {
		if got := Decide(tt.v, &tt.e, tt.cached, tt.p); got != tt.want {
			t.Errorf("%s: Decide = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestReplyText(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"postfix prefix stripped", "<nobody@example.test>: Recipient address rejected: User unknown in local recipient table",
			"User unknown in local recipient table"},
		{"address prefix only", "<nobody@example.test>: no such mailbox", "no such mailbox"},
		{"plain", "No such user here", "No such user here"},
		{"control characters removed", "User\tunknown\x00 \x1b[31mred", "User unknown [31mred"},
		{"angle without colon kept", "<weird text", "<weird text"},
	}
	for _, tt := range tests {
		if got := replyText(callout.Reply{Code: 550, Lines: []string{tt.text}}); got != tt.want {
			t.Errorf("%s: replyText = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestTTLByVerdict(t *testing.T) {
	p := &Policy{PositiveTTL: time.Hour, NegativeTTL: time.Minute, TempfailTTL: time.Second}
	for v, want := range map[callout.Verdict]time.Duration{
		callout.Valid: time.Hour, callout.Unknown: time.Minute, callout.TempFail: time.Second, callout.Unreachable: time.Second,
	} {
		if got := p.TTL(v); got != want {
			t.Errorf("TTL(%v) = %v, want %v", v, got, want)
		}
	}
}
