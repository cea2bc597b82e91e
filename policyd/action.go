package policyd

import (
	"fmt"
	"strings"
)

// Action is the answer to one request, as it follows "action=".
// See Postfix access(5) for the actions a policy server may return.
type Action string

// Actions without parameters.
const (
	// Dunno: no opinion; Postfix goes on with its next restriction.
	Dunno Action = "DUNNO"
)

// Enhanced status codes (RFC 3463) calloutd answers with.
const (
	StatusBadMailbox     = "5.1.1" // bad destination mailbox address
	StatusBadSyntax      = "5.1.3" // bad destination mailbox address syntax
	StatusNoAnswer       = "4.4.1" // no answer from host
	StatusTempMailbox    = "4.2.0" // mailbox status, temporary
	StatusTempBadMailbox = "4.1.1"
)

// MaxText bounds reply text: Postfix's SMTP reply lines stay well below the
// 512-octet limit even after it prefixes "<address>: Recipient address
// rejected: ".
const MaxText = 200

// Reject returns "NNN x.y.z text": Postfix replies with exactly that code,
// enhanced code and text (after its own "<addr>: Recipient address rejected:"
// prefix). code must be 4xx or 5xx; enhanced is replaced by def when it is
// empty or of another class than code. Text is sanitised for the protocol
// and never empty: a bare "550" with no text means OK to Postfix.
func Reject(code int, enhanced, def, text string) Action {
	if code < 400 || code > 599 {
		panic(fmt.Sprintf("policyd.Reject: code %d is not 4xx or 5xx", code))
	}
	if !validEnhanced(enhanced) || enhanced[0] != byte('0'+code/100) {
		enhanced = def
	}
	return Action(fmt.Sprintf("%d %s %s", code, enhanced, Text(text, "Recipient rejected")))
}

// DeferIfPermit returns "DEFER_IF_PERMIT x.y.z text": Postfix answers 450
// with that enhanced code unless a later restriction rejects the request,
// in which case the rejection wins. enhanced falls back to def unless it is
// a 4.x.x code.
func DeferIfPermit(enhanced, def, text string) Action {
	if !validEnhanced(enhanced) || enhanced[0] != '4' {
		enhanced = def
	}
	return Action("DEFER_IF_PERMIT " + enhanced + " " + Text(text, "Try again later"))
}

// Text makes s safe to put in an action: only printable ASCII, runs of
// spaces folded, at most 200 octets; def if nothing is left.
func Text(s, def string) string {
	var b strings.Builder
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f {
			space = b.Len() > 0
			continue
		}
		n := 1
		if space {
			n++ // the folded space goes out with c, never alone at the end
		}
		if b.Len()+n > MaxText {
			break
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteByte(c)
	}
	if b.Len() == 0 {
		return def
	}
	return b.String()
}

func validEnhanced(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || (s[0] != '2' && s[0] != '4' && s[0] != '5') {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}
