package callout

import (
	"fmt"
	"regexp"
	"strings"
)

// Meaning is what a backend's reply to RCPT TO says about the recipient.
type Meaning uint8

// Meanings of a reply to RCPT TO.
const (
	// MeansExists: the server accepted the recipient (2xx).
	MeansExists Meaning = iota + 1
	// MeansUnknown: the mailbox does not exist, is disabled or has moved:
	// mail to it would bounce.
	MeansUnknown
	// MeansTemporary: ask again later (greylisting, rate limits, a full
	// mailbox, the server's own lookup failing).
	MeansTemporary
	// MeansRefused: the server refused us, the verifying gateway (our
	// address, HELO, sender, relaying, a policy), not the recipient. It says
	// nothing about the mailbox; the server counts as unavailable.
	MeansRefused
	// MeansUnrecognised: a 5xx whose meaning calloutd does not know. It is
	// never taken for "unknown" (a wrong 550 loses mail); the server counts
	// as unavailable and the reply should be added to the corpus.
	MeansUnrecognised
	// MeansIgnored: the route's ignore_replies matched; the server counts
	// as unavailable, as if it had not answered.
	MeansIgnored
)

var meaningNames = [...]string{MeansExists: "exists", MeansUnknown: "unknown", MeansTemporary: "temporary",
	MeansRefused: "refused", MeansUnrecognised: "unrecognised", MeansIgnored: "ignored"}

func (m Meaning) String() string {
	if int(m) < len(meaningNames) && meaningNames[m] != "" {
		return meaningNames[m]
	}
	return fmt.Sprintf("meaning(%d)", uint8(m))
}

// Reasons refine a Meaning. They are fixed labels, fit for logs and metrics.
const (
	ReasonAccepted = "accepted" // exists

	ReasonNoSuchUser = "no_such_user" // unknown
	ReasonDisabled   = "disabled"     // unknown: 5.2.1
	ReasonMoved      = "moved"        // unknown: 5.1.6, 551
	ReasonAdmin      = "admin"        // unknown: the route's unknown_replies

	ReasonGreylisted        = "greylisted"          // temporary
	ReasonRateLimited       = "rate_limited"        // temporary (4xx) or refused (5xx)
	ReasonQuota             = "quota"               // temporary: 4.2.2, 5.2.2, 552
	ReasonTooManyRecipients = "too_many_recipients" // temporary: 4.5.3
	ReasonTemporary         = "temporary"           // temporary: any other 4xx

	ReasonRelayDenied    = "relay_denied"   // refused: relaying, domain not served
	ReasonClientRefused  = "client_refused" // refused: our IP address
	ReasonHeloRefused    = "helo_refused"   // refused: our HELO name
	ReasonSenderRefused  = "sender_refused" // refused: our MAIL FROM
	ReasonPolicy         = "policy"         // refused: 5.7.x, "Administrative prohibition"
	ReasonClosing        = "closing"        // refused: 421, the server ends the session
	ReasonProtocol       = "protocol"       // refused: 3xx, 5.5.x, a bad command sequence
	ReasonUnrecognised   = "unrecognised"   // unrecognised
	ReasonIgnored        = "ignored"        // ignored: the route's ignore_replies
	reasonUnknownDefault = ReasonNoSuchUser // unknown by text alone
)

// MailboxCode reports whether an enhanced status code is one of those that
// say a mailbox does not exist or takes no mail: 5.1.1, 5.1.6 (moved),
// 5.1.10 (Exchange) and 5.2.1 (disabled).
func MailboxCode(enhanced string) bool {
	switch enhanced {
	case "5.1.1", "5.1.6", "5.1.10", "5.2.1":
		return true
	}
	return false
}

// Classification is a reply's Meaning and the Reason for it.
type Classification struct {
	Meaning Meaning
	Reason  string
}

func (c Classification) String() string { return c.Meaning.String() + "/" + c.Reason }

// Rules are a route's own readings of replies, which win over Classify:
// a reply matching Ignore is ignored, else one matching Unknown means the
// mailbox does not exist. Each expression is matched against the reply as
// one line, as Reply.String renders it: "550 5.1.1 text", the lines of a
// multi-line reply joined by spaces.
type Rules struct {
	Unknown []*regexp.Regexp
	Ignore  []*regexp.Regexp
}

// Classify applies the rules, then Classify. A nil *Rules has none.
func (r *Rules) Classify(rep Reply) Classification {
	if r != nil && (len(r.Ignore) > 0 || len(r.Unknown) > 0) {
		line := rep.String()
		for _, re := range r.Ignore {
			if re.MatchString(line) {
				return Classification{MeansIgnored, ReasonIgnored}
			}
		}
		for _, re := range r.Unknown {
			if re.MatchString(line) {
				return Classification{MeansUnknown, ReasonAdmin}
			}
		}
	}
	return Classify(rep)
}

// Classify says what a reply to RCPT TO means, by its code, its enhanced
// status code (RFC 3463, or qmail's trailing "(#5.1.1)") and its text. It
// is exact about "unknown": only replies about the mailbox itself get it,
// never a refusal of the gateway, and never a 5xx it cannot read. The reply
// corpus in testdata/replies/ holds the real replies this is tested on.
//
// In order:
//   - 2xx: exists. 3xx: refused (protocol). 421: refused (closing).
//   - Text that refuses us, at any code: client, HELO or sender rejected,
//     relaying denied, "Administrative prohibition", DNS block lists:
//     refused. Postfix (smtpd_delay_reject=yes, the default) reports such
//     refusals at RCPT, and they would otherwise reject every recipient of
//     the domain.
//   - Other 4xx: temporary (greylisted, rate_limited, quota,
//     too_many_recipients or temporary); a 4xx that says it greylists is
//     temporary even when worded as a client rejection (postgrey).
//   - A 5xx that names a rate limit: refused (rate_limited), whatever its
//     enhanced code (Gmail: "550 5.2.1 ... receiving mail at a rate").
//     500 to 504: refused (protocol).
//   - 552 or 5.2.2: temporary quota; RFC 5321 4.5.3.1.10 says a 552 at RCPT
//     is to be treated as 452.
//   - 5.1.1, 5.1.10 (Exchange): unknown. 5.1.6: unknown (moved). 5.2.1:
//     unknown (disabled). 551: unknown (moved). 5.4.1 "Recipient address rejected" (Microsoft 365
//     Directory Based Edge Blocking): unknown.
//   - 5.7.x: refused (policy). 5.1.0, 5.1.7, 5.1.8: refused (sender).
//     5.1.2: refused (the domain is not served: relay). 5.3.2: refused
//     (client: postscreen).
//     5.5.x: refused (protocol).
//   - Any other 5xx, with no or another enhanced code: unknown only when
//     the text says so ("User unknown", "No such user", "does not exist",
//     "Unrouteable address", ...); else unrecognised.
func Classify(rep Reply) Classification {
	switch {
	case rep.Class() == 2:
		return Classification{MeansExists, ReasonAccepted}
	case rep.Class() == 3 || rep.Code < 200 || rep.Code > 599:
		return Classification{MeansRefused, ReasonProtocol}
	case rep.Code == 421:
		return Classification{MeansRefused, ReasonClosing}
	}
	text := strings.ToLower(rep.Text())
	if rep.Class() == 4 && hasAny(text, greylistWords) {
		// postgrey behind Postfix says "Client host rejected: Greylisted".
		return Classification{MeansTemporary, ReasonGreylisted}
	}
	if reason := refusalByText(text); reason != "" {
		return Classification{MeansRefused, reason}
	}
	enh := rep.Enhanced
	if enh == "" {
		enh = trailingEnhanced(text, rep.Class())
	}
	if rep.Class() == 4 {
		return Classification{MeansTemporary, temporaryReason(enh, text)}
	}
	// 5xx from here on. A rate limit refuses us, whatever its code says:
	// Gmail answers "550 5.2.1 ... receiving mail at a rate that prevents
	// additional messages" for a mailbox that exists.
	if hasAny(text, rateWords) {
		return Classification{MeansRefused, ReasonRateLimited}
	}
	if rep.Code >= 500 && rep.Code <= 504 {
		// Syntax errors and bad sequences: about our command.
		return Classification{MeansRefused, ReasonProtocol}
	}
	if rep.Code == 552 || enh == "5.2.2" {
		reason := ReasonQuota
		if enh == "5.5.3" || strings.Contains(text, "too many recipients") {
			reason = ReasonTooManyRecipients
		} else if enh != "5.2.2" && enh != "" && !hasAny(text, quotaWords) {
			reason = ReasonTemporary
		}
		return Classification{MeansTemporary, reason}
	}
	if rep.Code == 551 && (enh == "5.1.1" || enh == "5.1.6" || enh == "" && hasAny(text, movedWords)) {
		return Classification{MeansUnknown, ReasonMoved} // "551 User not local; please try <...>"
	}
	switch enh {
	case "5.3.2":
		// System not accepting network messages: postscreen's block of
		// the client.
		return Classification{MeansRefused, ReasonClientRefused}
	case "5.1.1", "5.1.10":
		return Classification{MeansUnknown, ReasonNoSuchUser}
	case "5.1.6":
		return Classification{MeansUnknown, ReasonMoved}
	case "5.2.1":
		switch {
		case hasAny(text, quotaWords):
			return Classification{MeansTemporary, ReasonQuota}
		case strings.Contains(text, "temporar") || strings.Contains(text, "try later") || strings.Contains(text, "try again"):
			return Classification{MeansTemporary, ReasonTemporary}
		}
		return Classification{MeansUnknown, ReasonDisabled}
	case "5.4.1":
		if strings.Contains(text, "recipient address rejected") {
			return Classification{MeansUnknown, ReasonNoSuchUser}
		}
	case "5.1.0", "5.1.7", "5.1.8":
		return Classification{MeansRefused, ReasonSenderRefused}
	case "5.1.2":
		return Classification{MeansRefused, ReasonRelayDenied}
	}
	switch {
	case strings.HasPrefix(enh, "5.7."):
		if hasAny(text, rateWords) {
			return Classification{MeansRefused, ReasonRateLimited}
		}
		return Classification{MeansRefused, ReasonPolicy}
	case strings.HasPrefix(enh, "5.5."):
		return Classification{MeansRefused, ReasonProtocol}
	}
	if hasAny(text, disabledWords) {
		return Classification{MeansUnknown, ReasonDisabled}
	}
	if hasAny(text, unknownWords) {
		return Classification{MeansUnknown, reasonUnknownDefault}
	}
	return Classification{MeansUnrecognised, ReasonUnrecognised}
}

// Phrases, lower case, as the servers of the corpus write them. A phrase
// must be specific: "mailbox unavailable" is RFC 5321's text for any 550
// ("mailbox not found, no access, or command rejected for policy
// reasons") and so is not a sign of an unknown user.
var (
	clientWords = []string{"client host rejected", "client host blocked", "blocked using ",
		"banned sending ip", "listed at ", "your ip", "reverse dns", "client not authorized",
		"connection refused by policy", "service unavailable; client", "ptr record", "spf",
		"whitelist", "allow list", "allowlist", "authentication required", "not authenticated"}
	heloWords = []string{"helo command rejected", "ehlo command rejected", "invalid helo", "helo name",
		"helo hostname", "hostname in helo"}
	senderWords = []string{"sender address", "sender verify failed", "sender verification failed",
		"sender domain", "null sender", "bounce messages not accepted"}
	relayWords = []string{"relay access denied", "relay not permitted", "relaying denied", "unable to relay",
		"relay denied", "not permitted to relay", "relaying not allowed", "relaying is not allowed",
		"relaying disallowed", "no relaying", "we do not relay", "allowed rcpthosts", "tenantattribution",
		"relay prohibited", "not local host",
		// The domain, not the mailbox: the backend does not serve it.
		"domain does not exist", "domain not found", "no such domain", "unknown domain", "domain unknown",
		"host unknown", "not a local domain", "domain is not local", "mx for rcpt domain",
		"must specify a domain"}
	policyWords = []string{"administrative prohibition", "rejected by policy", "prohibited by policy",
		"security polic", "restricted characters in address"}
	rateWords = []string{"rate limit", "rate exceeded", "ratelimit", "rate-limit", "sending rate",
		"too many connections", "too many messages", "too many errors", "throttl", "try again in a moment",
		"too many recipients from", "too many concurrent", "too quickly", "at a rate", "server busy",
		"maximum number of recipients"}
	greylistWords = []string{"greylist", "graylist", "grey-list", "gray-list", "grey list", "gray list"}
	quotaWords    = []string{"quota", "mailbox full", "mailbox is full", "over quota",
		"out of storage", "storage limit", "mailbox size limit", "insufficient storage"}
	movedWords    = []string{"not local", "please try", "forward", "moved"}
	disabledWords = []string{"account is disabled", "account disabled", "mailbox disabled",
		"mailbox is disabled", "user disabled", "account has been disabled", "mailbox is inactive",
		"account is inactive", "inactive user", "account inactive", "account suspended", "mailbox suspended"}
	unknownWords = []string{"user unknown", "unknown user", "unknown local part", "unknown local-part",
		"no such user", "no such recipient", "no such mailbox", "no such address", "no such account",
		"no mailbox here", "mailbox not found", "mailbox does not exist", "mailbox doesn't exist",
		"mailbox does not exist", "user does not exist", "recipient does not exist", "address does not exist",
		"account does not exist", "user doesn't exist", "address doesn't exist", "account doesn't exist",
		"email account that you tried to reach does not exist", "unrouteable address", "unroutable address",
		"invalid recipient", "invalid mailbox", "recipient not found", "recipient unknown",
		"unknown recipient", "user not found", "address not found", "address unknown",
		"unknown address", "not listed in public name", "not listed in domino directory", "recipientnotfound",
		"not a valid mailbox", "no such local user", "user not known", "addressee unknown",
		"mailbox unknown", "unknown mailbox", "user doesn't have"}
)

// refusalByText returns the refused reason text names, or "".
func refusalByText(text string) string {
	switch {
	case hasAny(text, relayWords):
		return ReasonRelayDenied
	case hasAny(text, clientWords):
		return ReasonClientRefused
	case hasAny(text, heloWords):
		return ReasonHeloRefused
	case hasAny(text, senderWords):
		return ReasonSenderRefused
	case hasAny(text, policyWords):
		return ReasonPolicy
	}
	return ""
}

// temporaryReason tells greylisting, rate limits and quota apart.
func temporaryReason(enh, text string) string {
	switch {
	case enh == "4.2.2" || hasAny(text, quotaWords):
		return ReasonQuota
	case hasAny(text, greylistWords):
		return ReasonGreylisted
	case hasAny(text, rateWords):
		return ReasonRateLimited
	case enh == "4.5.3" || strings.Contains(text, "too many recipients"):
		return ReasonTooManyRecipients
	}
	return ReasonTemporary
}

// trailingEnhanced finds the enhanced code qmail puts at the end of its
// text, "(#5.1.1)", when its class matches the reply's.
func trailingEnhanced(text string, class int) string {
	i := strings.LastIndex(text, "(#")
	if i < 0 {
		return ""
	}
	end := strings.IndexByte(text[i:], ')')
	if end < 0 {
		return ""
	}
	code, _, _ := strings.Cut(text[i+2:i+end], " ")
	if !IsEnhancedCode(code) || int(code[0]-'0') != class {
		return ""
	}
	return code
}

func hasAny(text string, phrases []string) bool {
	for _, p := range phrases {
		if strings.Contains(text, p) {
			return true
		}
	}
	return false
}
