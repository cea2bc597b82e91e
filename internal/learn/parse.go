package learn

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// MaxLine bounds a log line: longer ones are malformed. Postfix's own lines
// are far shorter (a reply is at most a few hundred bytes).
const MaxLine = 8192

// ErrNotBounce is returned for lines that are not a delivery refused after
// END OF DATA: nearly every line of a mail log.
var ErrNotBounce = errors.New("not a delivery refused after END OF DATA")

// ErrMalformed is wrapped by the errors of lines that claim to be such a
// delivery but do not read as Postfix writes one.
var ErrMalformed = errors.New("malformed delivery log line")

// Bounce is one delivery that a server refused after END OF DATA, as the
// gateway's Postfix smtp(8) or lmtp(8) client logged it:
//
//	Dec  2 17:04:18 gw postfix/smtp[1922]: A75C2986402: to=<bob@example.com>,
//	  relay=mx1.example.com[10.0.0.5]:25, delay=0.08, delays=0.03/0.04/0/0,
//	  dsn=5.1.1, status=bounced (host mx1.example.com[10.0.0.5] said: 550
//	  5.1.1 <bob@example.com>: Recipient address rejected: User unknown (in
//	  reply to end of DATA command))
//
// (one line). The prefix before the queue id varies with the logger
// (syslog, maillog_file, journald's "-o cat" drops it) and is not relied
// on, except for a timestamp when one can be read.
type Bounce struct {
	Time      time.Time // the line's timestamp; zero when it has none Parse reads
	QueueID   string    // Postfix queue id
	Recipient string    // the address as logged, without the angle brackets
	// OrigTo is the address the message was sent to, when the gateway
	// rewrote it (an alias) into Recipient; "" when it did not.
	OrigTo    string
	RelayName string     // the relay's host name, or its address when it had none
	RelayAddr netip.Addr // the relay's address
	RelayPort int        // the relay's port
	DSN       string     // the delivery status code, e.g. "5.1.1"
	Reply     string     // the server's reply, e.g. "550 5.1.1 <bob@...>: ... User unknown"
}

// Relay is the relay as "host:port" with its address, the way route
// servers are written.
func (b *Bounce) Relay() string {
	return netip.AddrPortFrom(b.RelayAddr, uint16(b.RelayPort)).String()
}

const afterData = " (in reply to end of DATA command))"

// Parse reads line. It returns ErrNotBounce for any line that is not a
// bounced delivery refused after END OF DATA, and an error wrapping
// ErrMalformed for one that says it is but does not read as Postfix
// writes it. now is when the line was read: a timestamp without a year
// (syslog's "Dec  2 17:04:18") is taken as the last such moment not
// after it.
func Parse(line string, now time.Time) (Bounce, error) {
	line = strings.TrimRight(line, "\r\n")
	if !strings.Contains(line, ", status=bounced (") || !strings.HasSuffix(line, afterData) {
		return Bounce{}, ErrNotBounce
	}
	if len(line) > MaxLine {
		return Bounce{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxLine)
	}
	for i := 0; i < len(line); i++ {
		if c := line[i]; c < ' ' && c != '\t' || c == 0x7f {
			return Bounce{}, fmt.Errorf("%w: control character %#02x", ErrMalformed, c)
		}
	}
	// Each of these appears once in a line Postfix writes. A second one
	// can only come from an address or a reply text, as an older Postfix
	// (before 3.5, or info_log_address_format = internal) logs a local
	// part such as "ceo@x>, relay=...(in reply to end of DATA command)) x"
	// unquoted: such a line is not read at all.
	for _, field := range []string{": to=<", ", relay=", ", dsn=", ", status="} {
		if strings.Count(line, field) != 1 {
			return Bounce{}, fmt.Errorf("%w: %q appears %d times", ErrMalformed, strings.TrimPrefix(field, ", "), strings.Count(line, field))
		}
	}
	var b Bounce
	to := strings.Index(line, ": to=<")
	if to < 0 {
		return Bounce{}, fmt.Errorf("%w: no \": to=<\"", ErrMalformed)
	}
	prefix, rest := line[:to], line[to+len(": to=<"):]
	// The queue id is the word before ": to=<"; what comes before it, if
	// anything, must end in a delivery agent's name: "postfix/smtp[1922]".
	sp := strings.LastIndexByte(prefix, ' ')
	b.QueueID = prefix[sp+1:]
	if !queueID(b.QueueID) {
		return Bounce{}, fmt.Errorf("%w: queue id %q", ErrMalformed, b.QueueID)
	}
	if sp >= 0 {
		prog := prefix[:sp]
		if !program(prog, "smtp", "lmtp") {
			return Bounce{}, ErrNotBounce // another program's line: not a delivery
		}
		b.Time = stamp(prog, now)
	}
	end := addressEnd(rest)
	if end < 0 {
		return Bounce{}, fmt.Errorf("%w: recipient not closed by \">, \"", ErrMalformed)
	}
	b.Recipient, rest = rest[:end], rest[end+len(">, "):]
	if b.Recipient == "" {
		return Bounce{}, fmt.Errorf("%w: empty recipient", ErrMalformed)
	}
	if strings.HasPrefix(rest, "orig_to=<") {
		end := addressEnd(rest[len("orig_to=<"):])
		if end < 0 {
			return Bounce{}, fmt.Errorf("%w: orig_to not closed", ErrMalformed)
		}
		b.OrigTo = rest[len("orig_to=<") : len("orig_to=<")+end]
		rest = rest[len("orig_to=<")+end+len(">, "):]
	}
	relay, rest, ok := strings.Cut(rest, ", ")
	relay, found := strings.CutPrefix(relay, "relay=")
	if !ok || !found {
		return Bounce{}, fmt.Errorf("%w: no relay= after the recipient", ErrMalformed)
	}
	if !parseRelay(relay, &b) {
		// A unix-domain LMTP relay ("private/dovecot-lmtp") or none:
		// no server calloutd could have asked.
		return Bounce{}, fmt.Errorf("%w: relay %q is not host[address]:port", ErrMalformed, relay)
	}
	dsn := strings.Index(rest, ", dsn=")
	if dsn < 0 {
		return Bounce{}, fmt.Errorf("%w: no dsn=", ErrMalformed)
	}
	rest = rest[dsn+len(", dsn="):]
	b.DSN, rest, _ = strings.Cut(rest, ", ")
	if !dsnCode(b.DSN) {
		return Bounce{}, fmt.Errorf("%w: dsn %q", ErrMalformed, b.DSN)
	}
	said, ok := strings.CutPrefix(rest, "status=bounced (host ")
	if !ok {
		return Bounce{}, fmt.Errorf("%w: no \"status=bounced (host\" after dsn", ErrMalformed)
	}
	host, reply, ok := strings.Cut(said, " said: ")
	if !ok {
		return Bounce{}, fmt.Errorf("%w: no \"said:\"", ErrMalformed)
	}
	// "host NAME[ADDR]" must be the relay: a reply quoted from elsewhere
	// (a remote bounce relayed by the backend) does not count.
	if host != relay[:strings.LastIndexByte(relay, ']')+1] {
		return Bounce{}, fmt.Errorf("%w: reply from %q, relay %q", ErrMalformed, host, relay)
	}
	b.Reply = strings.TrimSuffix(reply, afterData)
	if len(b.Reply) < 3 || b.Reply[0] != '5' {
		return Bounce{}, fmt.Errorf("%w: reply %q is not a 5xx", ErrMalformed, b.Reply)
	}
	return b, nil
}

// program tells whether prog, what a line holds before its queue id, is a
// logger's prefix ending in one of Postfix's programs named: its last word
// "name/smtp[1234]:" (any syslog_name). Text a sender wrote (a Message-ID
// cleanup logs, an address smtpd quotes) can end in such a word too, but
// then the real "program[pid]: " sits before it: no ": " may appear
// before the end (a timestamp's colons are never followed by a space).
func program(prog string, names ...string) bool {
	if !strings.HasSuffix(prog, "]:") || strings.Contains(prog, ": ") {
		return false
	}
	word := prog[strings.LastIndexByte(prog, ' ')+1 : len(prog)-len("]:")]
	slash, open := strings.LastIndexByte(word, '/'), strings.LastIndexByte(word, '[')
	if slash <= 0 || open < slash || open == len(word)-1 {
		return false
	}
	for _, c := range word[open+1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	for _, n := range names {
		if word[slash+1:open] == n {
			return true
		}
	}
	return false
}

// queueID: Postfix's short (hex) and long (base 52 and a 'z' or 'x')
// queue ids are letters and digits.
func queueID(s string) bool {
	if len(s) < 5 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// addressEnd finds the '>' that ends an address followed by ", ": Postfix
// quotes a local part holding '>' ("\"a>b\"@example.com"), so a '>' inside
// double quotes does not end it. -1 when there is none.
func addressEnd(s string) int {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if quoted {
				i++
			}
		case '"':
			quoted = !quoted
		case '>':
			if !quoted && strings.HasPrefix(s[i:], ">, ") {
				return i
			}
		}
	}
	return -1
}

// parseRelay reads "name[addr]:port".
func parseRelay(s string, b *Bounce) bool {
	open := strings.IndexByte(s, '[')
	closing := strings.LastIndexByte(s, ']')
	if open <= 0 || closing < open || !strings.HasPrefix(s[closing:], "]:") {
		return false
	}
	addr, err := netip.ParseAddr(s[open+1 : closing])
	if err != nil || addr.Zone() != "" {
		return false
	}
	port, err := strconv.Atoi(s[closing+2:])
	if err != nil || port < 1 || port > 65535 {
		return false
	}
	name := s[:open]
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || c == '-' || c == '.' || c == '_' || c == ':') {
			return false
		}
	}
	b.RelayName, b.RelayAddr, b.RelayPort = name, addr.Unmap(), port
	return true
}

// dsnCode: "5.1.1", class 2, 4 or 5 and two numbers of up to three digits.
func dsnCode(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || !strings.Contains("245", parts[0]) {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) == 0 || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return true
}

// stamp reads the timestamp a logger put at the start of prog: RFC 3339
// (rsyslog's high-precision format) or syslog's "Jan _2 15:04:05", local
// time, no year (Postfix's maillog_file writes the day zero-padded). Zero
// when it is neither.
func stamp(prog string, now time.Time) time.Time {
	first, _, _ := strings.Cut(prog, " ")
	if t, err := time.Parse(time.RFC3339Nano, first); err == nil {
		return t
	}
	if len(prog) < len("Jan _2 15:04:05") {
		return time.Time{}
	}
	t, err := time.ParseInLocation("Jan _2 15:04:05", prog[:len("Jan _2 15:04:05")], now.Location())
	if err != nil {
		return time.Time{}
	}
	t = t.AddDate(now.Year(), 0, 0)
	// A December line read in January is last year's.
	if t.After(now.Add(24 * time.Hour)) {
		t = t.AddDate(-1, 0, 0)
	}
	return t
}

// ReplyLines splits a reply as Postfix logs it, its lines joined by
// spaces ("550-5.1.1 The account ... 550-5.1.1 Please ... 550 5.1.1
// https://..."), back into the lines a server sent, each with its code: a
// line starts where the first line's code appears again followed by '-'
// or ' ', after a space.
func ReplyLines(reply string) []string {
	if len(reply) < 4 || reply[3] != '-' {
		return []string{reply}
	}
	code := reply[:3]
	var lines []string
	for {
		if len(reply) < 4 || reply[3] != '-' {
			return append(lines, reply)
		}
		next := -1
		for i := 4; i+5 <= len(reply); i++ {
			if reply[i] == ' ' && reply[i+1:i+4] == code && (reply[i+4] == '-' || reply[i+4] == ' ') {
				next = i
				break
			}
		}
		if next < 0 {
			return append(lines, reply)
		}
		lines = append(lines, reply[:next])
		reply = reply[next+1:]
	}
}

// NamedAddresses lists the addresses a reply text names in angle brackets
// ("<bob@example.com>: Recipient address rejected"), as written.
func NamedAddresses(reply string) []string {
	var out []string
	for {
		open := strings.IndexByte(reply, '<')
		if open < 0 {
			return out
		}
		reply = reply[open+1:]
		end := strings.IndexByte(reply, '>')
		if end < 0 {
			return out
		}
		if a := reply[:end]; strings.Contains(a, "@") {
			out = append(out, a)
		}
		reply = reply[end+1:]
	}
}

// Queued reads the line qmgr(8) writes when a message enters the active
// queue, "QUEUEID: from=<...>, size=1234, nrcpt=1 (queue active)", and
// returns its queue id and number of recipients.
func Queued(line string) (id string, nrcpt int, ok bool) {
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasSuffix(line, " (queue active)") || len(line) > MaxLine {
		return "", 0, false
	}
	i := strings.LastIndex(line, ", nrcpt=")
	from := strings.Index(line, ": from=<")
	if i < 0 || from < 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(line[i+len(", nrcpt=") : len(line)-len(" (queue active)")])
	if err != nil || n < 1 {
		return "", 0, false
	}
	prefix := line[:from]
	sp := strings.LastIndexByte(prefix, ' ')
	if sp >= 0 && !program(prefix[:sp], "qmgr") {
		return "", 0, false
	}
	if !queueID(prefix[sp+1:]) {
		return "", 0, false
	}
	return prefix[sp+1:], n, true
}
