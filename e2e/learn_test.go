package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestLearnFromFrontLog: a backend that accepts a recipient at RCPT and
// refuses it only after END OF DATA (as Exchange 2013 and later do), the
// front's own log (maillog_file) followed by calloutd ([learn]
// postfix_log). The first message to the recipient is accepted by the
// front and bounced by the backend; the second is refused at RCPT, by the
// front, with the backend's reason.
func TestLearnFromFrontLog(t *testing.T) {
	s := newSuite(t)
	hung := startSilentServer(t)
	backendPort := freePort(t)
	var boxes []string
	for _, u := range append([]string{"exbob"}, backendUsers...) {
		boxes = append(boxes, fmt.Sprintf("%s@example.test=example.test/%s/", u, u))
	}
	backend := s.newInstance(t, "main.cf.backend", instanceData{
		Name: "learn-backend", Port: backendPort, Mailboxes: strings.Join(boxes, ", "),
		MailUID: s.nobodyUID, MailGID: s.nogroupGID,
	}, "smtpd_end_of_data_restrictions = check_recipient_access inline:{ { exbob@example.test = 550 5.1.1 User unknown } }\n", "")
	mkdir(t, backend.path("mail"), 0o755, s.nobodyUID, s.nogroupGID)
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	front := s.newInstance(t, "main.cf.front", instanceData{
		Name: "learn-front", Port: freePort(t), BackendPort: backendPort, HungPort: hung.port(), Snippet: "main.cf.inet",
	}, snippet(t, "main.cf.inet", "inet:127.0.0.1:10040", "inet:"+listen), "")
	startAll(t, backend, front)

	// calloutd runs as nobody: it may read the front's log, as a
	// calloutd in group adm may read /var/log/mail.log.
	maillog := front.path("log/maillog")
	for _, p := range []string{front.path("log"), maillog} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.startCalloutdConfig(t, "learn-calloutd", listen, func(logFile string) string {
		return calloutdConfig(listen, logFile, backendPort, hung.port()) + fmt.Sprintf("\n[learn]\npostfix_log = %q\n", maillog)
	})

	const (
		accepted = replyOK
		refused  = "550 5.1.1 <exbob@example.test>: Recipient address rejected: User unknown (cached verdict)"
	)
	// The first message: accepted at RCPT (the backend said yes), bounced
	// by the backend after END OF DATA. A null sender: no bounce to send.
	c := dialSMTP(t, front.name, front.port)
	c.expectCode("EHLO client.e2e.test", 250)
	c.expect("MAIL FROM:<>", "250 2.1.0 Ok")
	c.expect("RCPT TO:<exbob@example.test>", accepted)
	c.expectCode("DATA", 354)
	sent := time.Now()
	c.expectCode("Subject: learn\r\n\r\nhello\r\n.", 250)
	c.quit()

	var bounced time.Time
	for deadline := time.Now().Add(30 * time.Second); bounced.IsZero(); {
		if strings.Contains(front.maillog(), "to=<exbob@example.test>") && strings.Contains(front.maillog(), "(in reply to end of DATA command)") {
			bounced = time.Now()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the front logged no refusal after END OF DATA within 30s:\n%s", tail(maillog, 20))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The second: refused at RCPT once calloutd has read the line.
	var learned time.Duration
	for {
		c := dialSMTP(t, front.name, front.port)
		c.begin()
		rep, _ := c.cmd("RCPT TO:<exbob@example.test>")
		c.quit()
		if rep == refused {
			learned = time.Since(bounced)
			break
		}
		if rep != accepted || time.Since(bounced) > 10*time.Second {
			t.Fatalf("RCPT TO:<exbob@example.test> %v after the bounce was logged: %q, want %q", time.Since(bounced), rep, refused)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("message sent to bounce logged: %v; bounce logged to refused at RCPT: at most %v",
		bounced.Sub(sent).Round(time.Millisecond), learned.Round(time.Millisecond))
	// Its neighbours still pass.
	c = dialSMTP(t, front.name, front.port)
	c.begin()
	c.expect("RCPT TO:<alice@example.test>", accepted)
	c.quit()
}
