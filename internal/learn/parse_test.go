package learn

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// A line as Postfix's maillog_file wrote it (measured, see
// POSTFIX-NOTES): the program name follows syslog_name.
const measured = `Dec 02 17:04:18 front postfix-front/smtp[1922]: A75C2986402: to=<exbob@example.test>, relay=127.0.0.1[127.0.0.1]:2526, delay=0.08, delays=0.03/0.04/0/0, dsn=5.1.1, status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <exbob@example.test>: Recipient address rejected: User unknown (in reply to end of DATA command))`

func TestParse(t *testing.T) {
	now := time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC)
	b, err := Parse(measured, now)
	if err != nil {
		t.Fatal(err)
	}
	want := Bounce{
		Time:      time.Date(2026, 12, 2, 17, 4, 18, 0, time.UTC),
		QueueID:   "A75C2986402",
		Recipient: "exbob@example.test",
		RelayName: "127.0.0.1",
		RelayAddr: netip.MustParseAddr("127.0.0.1"),
		RelayPort: 2526,
		DSN:       "5.1.1",
		Reply:     "550 5.1.1 <exbob@example.test>: Recipient address rejected: User unknown",
	}
	if b != want {
		t.Errorf("got  %+v\nwant %+v", b, want)
	}
	if r := b.Relay(); r != "127.0.0.1:2526" {
		t.Errorf("Relay() = %q", r)
	}
}

func TestParseForms(t *testing.T) {
	now := time.Date(2027, 1, 3, 10, 0, 0, 0, time.UTC)
	tail := `: to=<bob@example.com>, relay=mx1.example.com[10.0.0.5]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=5.1.1, status=bounced (host mx1.example.com[10.0.0.5] said: 550 5.1.1 User unknown (in reply to end of DATA command))`
	for _, tc := range []struct {
		name, line string
		time       time.Time
		queueID    string
	}{
		{"syslog, space-padded day, last year", `Dec  2 17:04:18 gw postfix/smtp[1922]: 4F2A1B` + tail,
			time.Date(2026, 12, 2, 17, 4, 18, 0, time.UTC), "4F2A1B"},
		{"rsyslog RFC 3339", `2027-01-03T09:59:58.123456+01:00 gw postfix/smtp[77]: 4cZ9kL1xYzz4Qx` + tail,
			time.Date(2027, 1, 3, 9, 59, 58, 123456000, time.FixedZone("", 3600)), "4cZ9kL1xYzz4Qx"},
		{"journalctl -o cat: no prefix", `3D4E5F6A7B` + tail, time.Time{}, "3D4E5F6A7B"},
		{"lmtp over TCP", `Jan 03 09:00:00 gw postfix/lmtp[9]: 3D4E5F6A7B` + tail,
			time.Date(2027, 1, 3, 9, 0, 0, 0, time.UTC), "3D4E5F6A7B"},
	} {
		b, err := Parse(tc.line, now)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !b.Time.Equal(tc.time) || b.QueueID != tc.queueID || b.Recipient != "bob@example.com" ||
			b.RelayName != "mx1.example.com" || b.Relay() != "10.0.0.5:25" || b.Reply != "550 5.1.1 User unknown" {
			t.Errorf("%s: got %+v", tc.name, b)
		}
	}

	// orig_to, a quoted local part holding "> , ", an IPv6 relay.
	line := `Dec 02 17:04:18 gw postfix/smtp[1]: 4F2A1B: to=<"odd>, name"@example.com>, orig_to=<alias@example.com>, relay=mx6.example.com[2001:db8::5]:2525, conn_use=2, delay=0.1, delays=0/0/0/0.1, dsn=5.1.1, status=bounced (host mx6.example.com[2001:db8::5] said: 550 5.1.1 No such user (in reply to end of DATA command))`
	b, err := Parse(line, now)
	if err != nil {
		t.Fatal(err)
	}
	if b.Recipient != `"odd>, name"@example.com` || b.Relay() != "[2001:db8::5]:2525" || b.RelayName != "mx6.example.com" {
		t.Errorf("got %+v", b)
	}
}

func TestParseRejects(t *testing.T) {
	now := time.Now()
	m := measured
	for _, tc := range []struct {
		name, line string
		malformed  bool
	}{
		{"delivered", `Dec 02 17:04:18 gw postfix/smtp[1]: 4F2A1B: to=<bob@example.com>, relay=mx[10.0.0.5]:25, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 123)`, false},
		{"refused at RCPT", strings.Replace(m, "end of DATA command", "RCPT TO command", 1), false},
		{"deferred", strings.Replace(m, "status=bounced", "status=deferred", 1), false},
		{"smtpd line", `Dec 02 17:04:18 gw postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[1.2.3.4]: 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown; from=<a@b> to=<bob@example.com> proto=ESMTP helo=<x>`, false},
		{"other program writes the same text", strings.Replace(m, "postfix-front/smtp[1922]", "evil[1922]", 1), false},
		{"local delivery agent", strings.Replace(m, "postfix-front/smtp[1922]", "postfix/local[1922]", 1), false},
		{"no queue id", strings.Replace(m, "A75C2986402: ", "", 1), true},
		{"queue id with punctuation", strings.Replace(m, "A75C2986402", "A75C-2986402", 1), true},
		{"unix-socket LMTP", strings.Replace(m, "relay=127.0.0.1[127.0.0.1]:2526", "relay=private/dovecot-lmtp", 1), true},
		{"relay without port", strings.Replace(m, "[127.0.0.1]:2526", "[127.0.0.1]", 1), true},
		{"relay address not an address", strings.Replace(m, "relay=127.0.0.1[127.0.0.1]", "relay=x[127.0.0.x]", 1), true},
		{"reply from another host", strings.Replace(m, "(host 127.0.0.1[127.0.0.1]", "(host evil[192.0.2.1]", 1), true},
		{"4xx reply", strings.Replace(m, "said: 550", "said: 450", 1), true},
		{"bad dsn", strings.Replace(m, "dsn=5.1.1", "dsn=5.1", 1), true},
		{"unclosed recipient", strings.Replace(m, "exbob@example.test>, relay", "exbob@example.test relay", 1), true},
		{"empty recipient", strings.Replace(m, "<exbob@example.test>, relay", "<>, relay", 1), true},
		{"control character", strings.Replace(m, "User unknown", "User\x00unknown", 1), true},
		{"escape sequence", strings.Replace(m, "User unknown", "User\x1b[2Junknown", 1), true},
		{"overlong", strings.Replace(m, "User unknown", strings.Repeat("x", MaxLine), 1), true},
	} {
		_, err := Parse(tc.line, now)
		switch {
		case err == nil:
			t.Errorf("%s: parsed", tc.name)
		case tc.malformed && !errors.Is(err, ErrMalformed):
			t.Errorf("%s: %v, want malformed", tc.name, err)
		case !tc.malformed && !errors.Is(err, ErrNotBounce):
			t.Errorf("%s: %v, want not a bounce", tc.name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(measured)
	f.Add(`3D4E5F6A7B: to=<"a\"b>, c"@x>, orig_to=<y>, relay=h[::1]:25, dsn=5.1.1, status=bounced (host h[::1] said: 550 x (in reply to end of DATA command))`)
	now := time.Now()
	f.Fuzz(func(t *testing.T, line string) {
		b, err := Parse(line, now)
		if err != nil {
			if !errors.Is(err, ErrNotBounce) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is neither", err)
			}
			return
		}
		if b.Recipient == "" || !queueID(b.QueueID) || !b.RelayAddr.IsValid() || b.RelayPort == 0 || b.Reply[0] != '5' ||
			strings.ContainsAny(b.Recipient+b.Reply, "\r\n\x00") {
			t.Fatalf("accepted %q as %+v", line, b)
		}
	})
}

// An older Postfix logs an unquoted local part as it came: one that holds
// a whole forged tail must not make a refusal for another address.
func TestParseInjectedTail(t *testing.T) {
	forged := `Dec 02 17:04:18 gw postfix/smtp[1]: 4F2A1B: to=<ceo@example.test>, relay=backend[10.0.0.5]:25, delay=1, delays=0/0/0/1, dsn=5.1.1, status=bounced (host backend[10.0.0.5] said: 550 5.1.1 User unknown (in reply to end of DATA command)) x@example.test>, relay=backend[10.0.0.5]:25, delay=1, delays=0/0/0/1, dsn=5.1.1, status=bounced (host backend[10.0.0.5] said: 550 5.1.1 User unknown (in reply to end of DATA command))`
	if b, err := Parse(forged, time.Now()); !errors.Is(err, ErrMalformed) {
		t.Errorf("forged tail: %+v, %v; want malformed", b, err)
	}
}

// Text a sender wrote that Postfix logs at the end of a line of another
// program (cleanup's Message-ID) cannot pass for a delivery or for qmgr's
// line, with or without the logger's prefix.
func TestParseSenderText(t *testing.T) {
	tail := `/smtp[]: 4F2A31: to=<ceo@example.test>, relay=mx[10.0.0.5]:25, delay=0, delays=0/0/0/0, dsn=5.1.1, status=bounced (host mx[10.0.0.5] said: 550 5.1.1 <ceo@example.test>: Recipient address rejected: User unknown (in reply to end of DATA command))`
	for _, line := range []string{
		"Dec  2 17:04:18 gw postfix/cleanup[77]: 9ABCDE1: message-id=" + tail,
		"9ABCDE1: message-id=" + tail,
		"Dec  2 17:04:18 gw postfix/cleanup[77]: 9ABCDE1: message-id=x postfix/smtp[12]: 4F2A31: to=<ceo@example.test>, relay=mx[10.0.0.5]:25, delay=0, delays=0/0/0/0, dsn=5.1.1, status=bounced (host mx[10.0.0.5] said: 550 5.1.1 User unknown (in reply to end of DATA command))",
	} {
		if b, err := Parse(line, time.Now()); err == nil {
			t.Errorf("%q read as %+v", line, b)
		}
	}
	for _, line := range []string{
		"Dec  2 17:04:18 gw postfix/cleanup[77]: 9ABCDE1: message-id=/qmgr[]: 4F2A32: from=<a@b>, size=1, nrcpt=1 (queue active)",
		"9ABCDE1: message-id=/qmgr[1]: 4F2A32: from=<a@b>, size=1, nrcpt=1 (queue active)",
	} {
		if id, n, ok := Queued(line); ok {
			t.Errorf("%q read as qmgr's line: %s %d", line, id, n)
		}
	}
}

func TestReplyLines(t *testing.T) {
	for in, want := range map[string][]string{
		"550 5.1.1 User unknown": {"550 5.1.1 User unknown"},
		"550-5.1.1 The email account that you tried to reach does not exist. 550-5.1.1 Please try again. 550 5.1.1 https://support.example/ x - gsmtp": {
			"550-5.1.1 The email account that you tried to reach does not exist.", "550-5.1.1 Please try again.", "550 5.1.1 https://support.example/ x - gsmtp"},
		"550-first 550 last": {"550-first", "550 last"},
		"550-only one line":  {"550-only one line"},
		"550-a 551 b":        {"550-a 551 b"},
	} {
		if got := ReplyLines(in); !slices.Equal(got, want) {
			t.Errorf("ReplyLines(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNamedAddresses(t *testing.T) {
	got := NamedAddresses("550 5.1.1 <bob@example.com>: Recipient address rejected: <not an address> <x@y>")
	if !slices.Equal(got, []string{"bob@example.com", "x@y"}) {
		t.Errorf("got %q", got)
	}
}

func TestQueued(t *testing.T) {
	for line, want := range map[string]int{
		"Dec  2 17:04:18 gw postfix/qmgr[88]: A75C2986402: from=<a@b.example>, size=1234, nrcpt=1 (queue active)": 1,
		"A75C2986402: from=<>, size=99, nrcpt=12 (queue active)":                                                  12,
		"Dec  2 17:04:18 gw postfix/smtp[88]: A75C2986402: from=<a@b.example>, size=1234, nrcpt=1 (queue active)": 0,
		"Dec  2 17:04:18 gw postfix/qmgr[88]: A75C2986402: removed":                                               0,
	} {
		id, n, ok := Queued(line)
		if want == 0 {
			if ok {
				t.Errorf("%q: read as %s %d", line, id, n)
			}
			continue
		}
		if !ok || id != "A75C2986402" || n != want {
			t.Errorf("%q: %q %d %v, want %d", line, id, n, ok, want)
		}
	}
}

// The oldest message's count is forgotten first, once RecentMessages are
// kept.
func TestRecipients(t *testing.T) {
	var r Recipients
	line := func(i int) string { return fmt.Sprintf("Q%07X: from=<a@b>, size=1, nrcpt=%d (queue active)", i, i%5+1) }
	if r.Note("Dec  2 17:04:18 gw postfix/smtp[1]: Q0000001: to=<a@b>, status=sent") {
		t.Error("a delivery line noted as qmgr's")
	}
	for i := range RecentMessages + 1 {
		if !r.Note(line(i)) {
			t.Fatalf("qmgr's line %q not noted", line(i))
		}
	}
	if n := r.Count("Q0000000"); n != 0 {
		t.Errorf("the oldest message still counted: %d", n)
	}
	if n := r.Count(fmt.Sprintf("Q%07X", RecentMessages)); n != RecentMessages%5+1 {
		t.Errorf("the newest message: %d recipients", n)
	}
}
