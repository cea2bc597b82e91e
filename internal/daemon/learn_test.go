package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/metrics"
	"github.com/calloutd/calloutd/internal/smtptest"
)

// bounceLine is what the gateway's Postfix logs when relay refuses rcpt
// after END OF DATA (measured: see POSTFIX-NOTES).
func bounceLine(queueID, rcpt, relayHost, relayPort, reply string) string {
	return fmt.Sprintf(`Dec 02 17:04:18 gw postfix/smtp[1922]: %s: to=<%s>, relay=%s[%s]:%s, delay=0.08, delays=0.03/0.04/0/0, dsn=5.1.1, status=bounced (host %s[%s] said: %s (in reply to end of DATA command))`,
		queueID, rcpt, relayHost, relayHost, relayPort, relayHost, relayHost, reply)
}

func TestLearnResultsMatchMetrics(t *testing.T) {
	if !slices.Equal(LearnResults, metrics.LearnResults) {
		t.Errorf("daemon.LearnResults %q, metrics.LearnResults %q", LearnResults, metrics.LearnResults)
	}
}

// A backend that accepts every recipient at RCPT and refuses unknown ones
// after END OF DATA (Exchange 2013+ without recipient filtering): the
// refusal the gateway logs becomes a negative verdict, and the next RCPT
// is refused at the gateway without asking the backend, even though the
// domain is catch-all.
func TestLearnFromPostfixLog(t *testing.T) {
	c2 := smtptest.NewServer(t, smtptest.Behavior{}) // accepts everyone
	other := smtptest.NewServer(t, smtptest.Behavior{})
	logFile := filepath.Join(t.TempDir(), "mail.log")
	if err := os.WriteFile(logFile, []byte("Dec 02 17:00:00 gw postfix/smtp[1]: history\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	td := startDaemon(t, fmt.Sprintf(`listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
admin_socket = "{{ADMIN}}"
[callout]
helo_name = "gw.test"
probe_catchall = true
[learn]
postfix_log = %q
learned_ttl = "3d"
[[route]]
name = "exchange"
domains = ["c2.test"]
servers = [%q]
[[route]]
name = "other"
domains = ["other.test"]
servers = [%q]
`, logFile, c2.Addr(), other.Addr()))
	p := dialPolicy(t, td.policy)
	for _, r := range []string{"alice@c2.test", "bob@c2.test", "carol@c2.test"} {
		if got := p.askAs("203.0.113.9", "", r); got != "DUNNO" {
			t.Fatalf("%s before learning: %q", r, got)
		}
	}
	host, port, _ := strings.Cut(c2.Addr(), ":")
	reply := "550 5.1.1 <bob@c2.test>: Recipient address rejected: User unknown"
	want := "550 5.1.1 User unknown (cached verdict)"

	f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	written := time.Now()
	if _, err := f.WriteString(bounceLine("A75C2986402", "bob@c2.test", host, port, reply) + "\n"); err != nil {
		t.Fatal(err)
	}
	rcpts := c2.Count("RCPT")
	var got string
	for time.Since(written) < 5*time.Second {
		if got = p.askAs("203.0.113.9", "", "bob@c2.test"); got == want {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got != want {
		t.Fatalf("bob@c2.test after the bounce was logged: %q, want %q", got, want)
	}
	t.Logf("learning delay, log line written to RCPT refused: %v", time.Since(written).Round(time.Millisecond))
	if n := c2.Count("RCPT"); n != rcpts {
		t.Errorf("the backend was asked %d more RCPTs; a learned verdict needs none", n-rcpts)
	}
	// Its mailbox neighbours are unaffected.
	if got := p.askAs("203.0.113.9", "", "alice@c2.test"); got != "DUNNO" {
		t.Errorf("alice@c2.test: %q", got)
	}

	resp, err := Admin(context.Background(), td.admin, AdminRequest{Op: "lookup", Address: "bob@c2.test"})
	if err != nil || !resp.Found {
		t.Fatalf("lookup: %+v %v", resp, err)
	}
	if e := resp.Entry; e.Learned != "A75C2986402" || e.Verdict != "unknown" || e.Route != "exchange" || e.Server != c2.Addr() ||
		e.Code != 550 || e.Enhanced != "5.1.1" || e.Reason != "no_such_user" {
		t.Errorf("learned entry %+v", *e)
	}
	if ttl := time.Until(resp.Entry.Expires); ttl < 70*time.Hour || ttl > 73*time.Hour+time.Minute {
		// The line's time (no year: taken as this year's Dec 02) sets
		// the start; the test may run on another day.
		t.Logf("expires in %v", ttl)
	}
	wantMetrics(t, td, `calloutd_learn_lines_total{result="learned"} 1`)
}

// Only refusals after END OF DATA, by a server of the recipient's route,
// that mean "unknown" teach anything; each line says why it did not.
func TestLearnTrustsNothingElse(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{})
	td := startDaemon(t, fmt.Sprintf(`listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
admin_socket = "{{ADMIN}}"
[callout]
helo_name = "gw.test"
[[route]]
name = "main"
domains = ["example.test"]
servers = [%q]
unknown_replies = ['^550 5\.7\.1 .*not a valid mailbox']
`, backend.Addr()))
	host, port, _ := strings.Cut(backend.Addr(), ":")
	unknown := func(rcpt string) string { return "550 5.1.1 <" + rcpt + ">: Recipient address rejected: User unknown" }
	line := func(id, rcpt, reply string) string { return bounceLine(id, rcpt, host, port, reply) }
	old := time.Now().Add(-4 * 24 * time.Hour).Format(time.RFC3339)
	for _, c := range []struct {
		name, line string
		recipients int
		result     string
	}{
		{"refused after DATA", line("4F2A1B", "gone@example.test", unknown("gone@example.test")), 0, LearnLearned},
		{"the route's unknown_replies, one recipient", line("4F2A1C", "admin@example.test", "550 5.7.1 admin@example.test is not a valid mailbox"), 1, LearnLearned},
		{"a multi-line reply, one recipient (qmgr's line read before)", "Dec 02 17:04:17 gw postfix/qmgr[9]: 4F2A1D: from=<a@b.test>, size=300, nrcpt=1 (queue active)", 0, LearnIgnored},
		{"", line("4F2A1D", "ml@example.test", "550-5.1.1 The email account that you tried to reach does not exist. 550 5.1.1 Please check it - gsmtp"), 0, LearnLearned},
		{"delivered", `Dec 02 17:04:18 gw postfix/smtp[1]: 4F2A1B: to=<a@example.test>, relay=x[127.0.0.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 Ok)`, 0, LearnIgnored},
		{"refused at RCPT", strings.Replace(line("4F2A1B", "a@example.test", unknown("a@example.test")), "end of DATA", "RCPT TO", 1), 0, LearnIgnored},
		{"a remote site on the internet", bounceLine("4F2A1B", "a@example.test", "198.51.100.7", "25", unknown("a@example.test")), 0, LearnNotBackend},
		{"the backend's address, another port", bounceLine("4F2A1B", "a@example.test", host, "2", unknown("a@example.test")), 0, LearnNotBackend},
		{"a domain no route covers", line("4F2A1B", "a@elsewhere.test", unknown("a@elsewhere.test")), 0, LearnNotBackend},
		{"a policy refusal", line("4F2A1B", "a@example.test", "550 5.7.1 Message rejected as spam"), 1, LearnNotUnknown},
		{"mailbox full", line("4F2A1B", "a@example.test", "552 5.2.2 Mailbox full"), 1, LearnNotUnknown},
		{"unreadable reply", line("4F2A1B", "a@example.test", "550 go away"), 1, LearnNotUnknown},
		// One transaction, two recipients: Postfix logs both with the
		// reply about one of them.
		{"the reply names another recipient", line("4F2A1E", "alice@example.test", unknown("bob@example.test")), 0, LearnAmbiguous},
		{"the reply names nobody, two recipients", line("4F2A1F", "a@example.test", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"), 2, LearnAmbiguous},
		{"the reply names nobody, recipients not known", line("4F2A20", "a@example.test", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"), 0, LearnAmbiguous},
		{"a recipient the gateway rewrote (an alias)", strings.Replace(line("4F2A21", "a@example.test", unknown("a@example.test")), "to=<a@example.test>, ", "to=<a@example.test>, orig_to=<sales@example.test>, ", 1), 1, LearnAmbiguous},
		{"older than learned_ttl", old + " gw postfix/smtp[1]: 4F2A1B: to=<a@example.test>, relay=" + host + "[" + host + "]:" + port + ", delay=1, delays=0/0/0/1, dsn=5.1.1, status=bounced (host " + host + "[" + host + "] said: " + unknown("a@example.test") + " (in reply to end of DATA command))", 0, LearnStale},
		{"hostile recipient", line("4F2A1B", "a\tb@example.test", unknown("a@example.test")), 0, LearnMalformed},
		{"a reply quoted from another host", strings.Replace(line("4F2A1B", "a@example.test", unknown("a@example.test")), "(host "+host, "(host 10.9.9.9", 1), 0, LearnMalformed},
	} {
		resp, err := Admin(context.Background(), td.admin, AdminRequest{Op: "learn", Line: c.line, Recipients: c.recipients})
		if err != nil || resp.Error != "" || resp.Learn == nil {
			t.Errorf("%s: %+v %v", c.name, resp, err)
			continue
		}
		if resp.Learn.Result != c.result {
			t.Errorf("%s: %+v, want %s", c.name, *resp.Learn, c.result)
		}
	}
	p := dialPolicy(t, td.policy)
	if got := p.askAs("203.0.113.9", "", "gone@example.test"); got != "550 5.1.1 User unknown (cached verdict)" {
		t.Errorf("gone@example.test: %q", got)
	}
	if got := p.askAs("203.0.113.9", "", "a@example.test"); got != "DUNNO" {
		t.Errorf("a@example.test, never learned: %q", got)
	}
	for _, r := range []string{"ml@example.test", "admin@example.test"} {
		if got := p.askAs("203.0.113.9", "", r); !strings.HasPrefix(got, "550 5.1.1 ") || !strings.HasSuffix(got, " (cached verdict)") {
			t.Errorf("%s: %q", r, got)
		}
	}
	if got := p.askAs("203.0.113.9", "", "alice@example.test"); got != "DUNNO" {
		t.Errorf("alice@example.test, who shared a transaction with an unknown recipient: %q", got)
	}
	wantMetrics(t, td, `calloutd_learn_lines_total{result="learned"} 3`, `calloutd_learn_lines_total{result="ignored"} 3`,
		`calloutd_learn_lines_total{result="not_backend"} 3`, `calloutd_learn_lines_total{result="not_unknown"} 3`,
		`calloutd_learn_lines_total{result="ambiguous"} 4`, `calloutd_learn_lines_total{result="stale"} 1`,
		`calloutd_learn_lines_total{result="malformed"} 2`)
}

// A sub-address refused after END OF DATA is refused at RCPT although its
// mailbox exists (bob@ is asked first and is valid); its mailbox and other
// extensions still pass.
func TestLearnSubAddress(t *testing.T) {
	backend := smtptest.NewServer(t, smtptest.Behavior{}) // accepts everyone at RCPT
	td := startDaemon(t, fmt.Sprintf(`listen = ["127.0.0.1:0"]
metrics_listen = ""
admin_socket = "{{ADMIN}}"
[callout]
helo_name = "gw.test"
recipient_delimiter = "+"
[[route]]
domains = ["example.test"]
servers = [%q]
`, backend.Addr()))
	host, port, _ := strings.Cut(backend.Addr(), ":")
	line := bounceLine("5A6B7C", "dave+news@example.test", host, port, "550 5.1.1 <dave+news@example.test>: Recipient address rejected: User unknown")
	if resp, err := Admin(context.Background(), td.admin, AdminRequest{Op: "learn", Line: line}); err != nil || resp.Learn == nil || resp.Learn.Result != LearnLearned {
		t.Fatalf("learn: %+v %v", resp, err)
	}
	p := dialPolicy(t, td.policy)
	for rcpt, want := range map[string]string{
		"dave+news@example.test":  "550 5.1.1 User unknown (cached verdict)",
		"dave+other@example.test": "DUNNO",
		"dave@example.test":       "DUNNO",
	} {
		if got := p.askAs("203.0.113.9", "", rcpt); got != want {
			t.Errorf("%s: %q, want %q", rcpt, got, want)
		}
	}
}
