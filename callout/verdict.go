package callout

import "fmt"

// Verdict is what a callout concluded about a recipient.
type Verdict uint8

// Verdicts, from the most to the least certain.
const (
	// Valid: a backend accepted RCPT TO with 2xx.
	Valid Verdict = iota + 1
	// Unknown: every backend that was asked rejected RCPT TO with 5xx.
	Unknown
	// TempFail: a backend answered RCPT TO with 4xx (greylisting, a
	// backend's own lookup failing) and none gave a definite answer.
	TempFail
	// Unreachable: no server of any matching route could be asked
	// (connection refused, timeout, 4xx/5xx greeting, MAIL FROM refused,
	// garbage), or the verdict's time budget ran out.
	Unreachable
)

var verdictNames = [...]string{Valid: "valid", Unknown: "unknown", TempFail: "tempfail", Unreachable: "unreachable"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) && verdictNames[v] != "" {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// ParseVerdict is the inverse of Verdict.String.
func ParseVerdict(s string) (Verdict, error) {
	for v, name := range verdictNames {
		if name != "" && name == s {
			return Verdict(v), nil
		}
	}
	return 0, fmt.Errorf("unknown verdict %q", s)
}
