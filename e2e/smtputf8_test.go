package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestSMTPUTF8 puts calloutd between a Postfix front and a Postfix backend
// that both speak SMTPUTF8 (smtputf8_enable = yes, the default at
// compatibility_level 3.6): a sender's internationalised recipient is
// verified with the backend and the front answers as the backend would
// have; a U-label domain is matched as its A-label.
func TestSMTPUTF8(t *testing.T) {
	s := newSuite(t)
	hung := startSilentServer(t)
	backendPort := freePort(t)
	boxes := "alice@example.test=example.test/alice/, jöhn@example.test=example.test/john/"
	backend := s.newInstance(t, "main.cf.backend", instanceData{
		Name: "utf8-backend", Port: backendPort, Mailboxes: boxes,
		MailUID: s.nobodyUID, MailGID: s.nogroupGID,
	}, "smtputf8_enable = yes\n", "")
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	front := s.newInstance(t, "main.cf.front", instanceData{
		Name: "utf8-front", Port: freePort(t), BackendPort: backendPort, HungPort: hung.port(), Snippet: "main.cf.inet",
	}, snippet(t, "main.cf.inet", "inet:127.0.0.1:10040", "inet:"+listen)+"smtputf8_enable = yes\n", "")
	startAll(t, backend, front)
	s.startCalloutd(t, "utf8-calloutd", listen, backendPort, hung.port())

	c := dialSMTP(t, front.name, front.port)
	c.expectCode("EHLO client.e2e.test", 250)
	c.expect("MAIL FROM:<sender@client.e2e.test> SMTPUTF8", "250 2.1.0 Ok")
	c.expect("RCPT TO:<jöhn@example.test>", replyOK)
	got, _ := c.cmd("RCPT TO:<nöbody@example.test>")
	if !strings.HasPrefix(got, "550 5.1.1 <nöbody@example.test>: Recipient address rejected: User unknown") {
		t.Errorf("unknown UTF-8 recipient: front answered %q, want the backend's 550 5.1.1", got)
	}
	c.expect("RCPT TO:<alice@example.test>", replyOK)
	c.quit()

	log := backend.maillog()
	for _, bad := range []string{"warning: Illegal address syntax", "SMTPUTF8 is required", "improper command pipelining"} {
		if strings.Contains(log, bad) {
			t.Errorf("backend log says %q:\n%s", bad, tail(backend.path("log/maillog"), 30))
		}
	}
}
