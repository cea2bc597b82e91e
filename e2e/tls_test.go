package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calloutd/calloutd/internal/smtptest"
)

// TestCalloutTLS has calloutd ask a real Postfix backend over STARTTLS
// (smtpd_tls_security_level = may), with the certificate verified against
// the test's CA: right verdicts, and the backend logs TLS sessions.
func TestCalloutTLS(t *testing.T) {
	s := newSuite(t)
	certFile, keyFile, caFile := smtptest.TLSFiles(t)
	var boxes []string
	for _, u := range backendUsers {
		boxes = append(boxes, fmt.Sprintf("%s@example.test=example.test/%s/", u, u))
	}
	backend := s.newInstance(t, "main.cf.backend", instanceData{
		Name: "tls-backend", Port: freePort(t), Mailboxes: strings.Join(boxes, ", "),
		MailUID: s.nobodyUID, MailGID: s.nogroupGID,
	}, fmt.Sprintf("smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\nsmtpd_tls_loglevel = 1\n", certFile, keyFile),
		"tlsmgr     unix  -       -       n       1000?   1       tlsmgr\n")
	startAll(t, backend)
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.startCalloutdConfig(t, "tls-calloutd", listen, func(logFile string) string {
		// calloutd runs as nobody: its CA file sits with its configuration.
		ca := filepath.Join(filepath.Dir(logFile), "ca.pem")
		pem, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, ca, string(pem), 0o644)
		return strings.Replace(benchCalloutdConfig(listen, logFile, backend.port), `[[route]]`,
			fmt.Sprintf("tls = \"required\"\ntls_verify = true\ntls_server_name = \"mail.example.test\"\ntls_ca_file = %q\n\n[[route]]", ca), 1)
	})
	p := dialPolicy(t, listen)
	for rcpt, want := range map[string]func(string) bool{
		"alice@example.test":  isDunno,
		"nobody@example.test": isFreshReject,
	} {
		if ans, _ := p.ask(t, rcpt); !want(ans) {
			t.Errorf("%s: %q", rcpt, ans)
		}
	}
	log := backend.maillog()
	if !strings.Contains(log, "TLS connection established from") {
		t.Errorf("backend logged no TLS session:\n%s", tail(backend.path("log/maillog"), 30))
	}
}
