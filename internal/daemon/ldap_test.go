package daemon

import (
	"fmt"
	"testing"

	"github.com/calloutd/calloutd/internal/ldaptest"
	"github.com/calloutd/calloutd/internal/smtptest"
)

// An LDAP route answers through the policy protocol like an SMTP route:
// found is valid, not found is 550 5.1.1 User unknown, cached like any
// verdict; routes of both kinds mix in order (the first that knows the
// address wins); a directory that cannot be asked fails open.
func TestLDAPRoute(t *testing.T) {
	ldaptest.Need(t)
	srv := ldaptest.Start(t, ldaptest.Options{TLS: true, Entries: `dn: uid=alice,dc=example,dc=test
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Example
mail: alice@example.test
`})
	// The mailbox migration case: the directory first, then an old
	// backend that still holds bob.
	old := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("bob@example.test")})
	cfg := fmt.Sprintf(`listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
admin_socket = "{{ADMIN}}"
[callout]
helo_name = "gw.test"
[[route]]
name = "directory"
domains = ["example.test"]
kind = "ldap"
ldap_urls = [%q]
ldap_ca_file = %q
ldap_bind_dn = %q
ldap_bind_password = %q
ldap_base_dn = %q
ldap_filter = "(|(mail=%%s)(uid=%%s))"
[[route]]
name = "old"
domains = ["example.test"]
servers = [%q]
[[route]]
name = "down"
domains = ["down.test"]
kind = "ldap"
ldap_urls = ["ldap://127.0.0.1:1"]
ldap_base_dn = "dc=example,dc=test"
`, srv.LDAPSURL(), srv.CAFile(), ldaptest.BindDN, ldaptest.BindPassword, ldaptest.Suffix, old.Addr())
	td := startDaemon(t, cfg)
	p := dialPolicy(t, td.policy)
	for _, c := range []struct{ rcpt, want string }{
		{"alice@example.test", "DUNNO"},
		{"bob@example.test", "DUNNO"},                     // not in the directory, the old backend has him
		{"nobody@example.test", "550 5.1.1 User unknown"}, // both routes say so; the directory decided first
		{"nobody@example.test", "550 5.1.1 User unknown" + cachedSuffix},
		{"someone@down.test", "DUNNO"}, // the directory cannot be asked: fail open
	} {
		if got := p.askAs("203.0.113.9", "", c.rcpt); got != c.want {
			t.Errorf("%s: %q, want %q", c.rcpt, got, c.want)
		}
	}
	if n := old.Count("RCPT"); n != 2 {
		t.Errorf("old backend saw %d RCPTs, want 2 (bob, nobody)", n)
	}
	wantMetrics(t, td,
		`calloutd_backend_replies_total{meaning="exists",reason="ldap_found",server="`+srv.LDAPSURL()+`"} 1`,
		`calloutd_backend_replies_total{meaning="unknown",reason="ldap_not_found",server="`+srv.LDAPSURL()+`"} 2`,
		`calloutd_backend_failures_total{reason="connect",server="ldap://127.0.0.1:1"} 1`,
		`calloutd_backend_up{server="`+srv.LDAPSURL()+`"} 1`,
		`calloutd_callout_duration_seconds_count{outcome="valid",route="directory"} 1`)

	// A stopped directory never makes an address unknown, even when the
	// other route does not know it: every route must say unknown.
	srv.Stop()
	if got := p.askAs("203.0.113.9", "", "carol@example.test"); got != "DUNNO" {
		t.Errorf("directory stopped, old backend does not know carol: %q, want DUNNO (the directory could not be asked)", got)
	}
}
