package ldaptest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const people = `dn: ou=people,dc=example,dc=test
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: alice
cn: Alice Example
sn: Example
mail: alice@example.test
userPassword: alice-secret

dn: uid=bob,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: bob
cn: Bob Example
sn: Example
mail: bob@example.test

dn: uid=carol,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: calloutdProxy
uid: carol
cn: Carol Example
sn: Example
mail: carol@example.test
proxyAddresses: SMTP:Carol@Example.test
proxyAddresses: smtp:c.alias@Example.TEST
proxyAddresses: X500:/o=Example/ou=people/cn=carol
`

const (
	alice = "uid=alice,ou=people,dc=example,dc=test"
	bob   = "uid=bob,ou=people,dc=example,dc=test"
	carol = "uid=carol,ou=people,dc=example,dc=test"
)

// client runs the LDAP tools as a program under test would: with no LDAP*
// variable, ldaprc or ~/.ldaprc of the user, certificates checked.
type client struct {
	t   *testing.T
	dir string
	env []string
}

func newClient(t *testing.T, caFile string) *client {
	dir := t.TempDir()
	env := []string{"HOME=" + dir, "LDAPTLS_REQCERT=demand"}
	if caFile != "" {
		env = append(env, "LDAPTLS_CACERT="+caFile)
	}
	for _, kv := range clientEnv() {
		if !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return &client{t: t, dir: dir, env: env}
}

// search runs `ldapsearch -x -LLL args...` and returns its output and its
// exit code.
func (c *client) search(args ...string) (string, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args = append([]string{"-x", "-LLL", "-o", "ldif_wrap=no", "-o", "nettimeout=5"}, args...)
	cmd := exec.CommandContext(ctx, findTools().ldapsearch, args...)
	cmd.Env = c.env
	cmd.Dir = c.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return out.String(), exit.ExitCode()
	}
	c.t.Fatalf("ldapsearch %s: %v\n%s", strings.Join(args, " "), err, out.String())
	return "", 0
}

// find searches the tree under Suffix as BindDN on url for filter with
// extra options (-ZZ), failing the test unless ldapsearch succeeds, and
// returns the DNs found, sorted.
func (c *client) find(url, filter string, extra ...string) []string {
	c.t.Helper()
	args := append([]string{"-H", url, "-D", BindDN, "-w", BindPassword, "-b", Suffix}, extra...)
	args = append(args, filter, "1.1")
	out, code := c.search(args...)
	if code != 0 {
		c.t.Fatalf("ldapsearch %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return dns(out)
}

func dns(ldif string) []string {
	var dns []string
	for l := range strings.SplitSeq(ldif, "\n") {
		if dn, ok := strings.CutPrefix(l, "dn: "); ok {
			dns = append(dns, dn)
		}
	}
	slices.Sort(dns)
	return dns
}

func wantDNs(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: found %q, want %q", what, got, want)
	}
}

func refused(t *testing.T, url string) {
	t.Helper()
	hostport := url[strings.Index(url, "://")+3:]
	c, err := net.DialTimeout("tcp", hostport, time.Second)
	if err == nil {
		c.Close()
		t.Errorf("%s still accepts connections", url)
	}
}

func TestServerTLS(t *testing.T) {
	t.Parallel()
	began := time.Now()
	s := Start(t, Options{TLS: true, Entries: people})
	t.Logf("started with TLS and %d entries in %v", strings.Count(people, "dn: "), time.Since(began))

	if !strings.HasPrefix(s.URL(), "ldap://127.0.0.1:") || !strings.HasPrefix(s.LDAPSURL(), "ldaps://127.0.0.1:") ||
		s.URL()[len("ldap://"):] == s.LDAPSURL()[len("ldaps://"):] {
		t.Fatalf("URL() = %q, LDAPSURL() = %q", s.URL(), s.LDAPSURL())
	}
	pemCA, err := os.ReadFile(s.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(pemCA); b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("CAFile %s holds no PEM certificate", s.CAFile())
	} else if ca, err := x509.ParseCertificate(b.Bytes); err != nil || !ca.IsCA {
		t.Fatalf("CAFile %s: not a CA certificate (%v)", s.CAFile(), err)
	}

	c := newClient(t, s.CAFile())
	wantDNs(t, "(mail=alice@example.test)", c.find(s.URL(), "(mail=alice@example.test)"), alice)
	wantDNs(t, "(mail=BOB@Example.Test)", c.find(s.URL(), "(mail=BOB@Example.Test)"), bob)
	wantDNs(t, "(mail=nobody@example.test)", c.find(s.URL(), "(mail=nobody@example.test)"))
	wantDNs(t, "(objectClass=inetOrgPerson)", c.find(s.URL(), "(objectClass=inetOrgPerson)"), alice, bob, carol)
	// As Active Directory: the type prefix and the address, in any case.
	wantDNs(t, "primary proxyAddresses, other case", c.find(s.URL(), "(proxyAddresses=smtp:carol@example.test)"), carol)
	wantDNs(t, "alias in proxyAddresses, other case", c.find(s.URL(), "(proxyAddresses=SMTP:C.Alias@example.test)"), carol)
	ad := "(|(mail=%s)(proxyAddresses=smtp:%s))"
	for addr, want := range map[string][]string{
		"c.alias@example.test": {carol},
		"alice@example.test":   {alice},
		"Carol@EXAMPLE.test":   {carol},
		"x500@example.test":    nil,
	} {
		f := strings.ReplaceAll(ad, "%s", addr)
		wantDNs(t, f, c.find(s.URL(), f), want...)
	}
	wantDNs(t, "substring of proxyAddresses", c.find(s.URL(), "(proxyAddresses=smtp:*@EXAMPLE.test)"), carol)

	// BindDN reads attributes, but not passwords.
	out, code := c.search("-H", s.URL(), "-D", BindDN, "-w", BindPassword, "-b", alice, "-s", "base", "*")
	if code != 0 || !strings.Contains(out, "mail: alice@example.test") || strings.Contains(out, "userPassword") {
		t.Errorf("alice read as BindDN: exit %d\n%s", code, out)
	}
	out, code = c.search("-H", s.URL(), "-D", AdminDN, "-w", AdminPassword, "-b", alice, "-s", "base", "userPassword")
	if code != 0 || !strings.Contains(out, "userPassword:") {
		t.Errorf("alice's userPassword read as the root DN: exit %d\n%s", code, out)
	}
	// Anonymous binds, reads the root DSE and nothing of the tree.
	if out, code := c.search("-H", s.URL(), "-b", Suffix, "(objectClass=*)", "1.1"); code == 0 && len(dns(out)) != 0 || code != 0 && code != 32 {
		t.Errorf("anonymous search: exit %d, want nothing found\n%s", code, out)
	}
	if out, code := c.search("-H", s.URL(), "-b", "", "-s", "base", "+"); code != 0 || !strings.Contains(out, "supportedExtension: 1.3.6.1.4.1.1466.20037") {
		t.Errorf("anonymous read of the root DSE: exit %d, want StartTLS among the extensions\n%s", code, out)
	}
	// A user binds with their password.
	if out, code := c.search("-H", s.URL(), "-D", alice, "-w", "alice-secret", "-b", "", "-s", "base", "1.1"); code != 0 {
		t.Errorf("bind as alice: exit %d\n%s", code, out)
	}
	// Wrong passwords: invalidCredentials (49).
	for _, dn := range []string{BindDN, alice, AdminDN} {
		if out, code := c.search("-H", s.URL(), "-D", dn, "-w", "wrong", "-b", Suffix, "(mail=alice@example.test)", "1.1"); code != 49 {
			t.Errorf("bind as %s with a wrong password: exit %d, want 49\n%s", dn, code, out)
		}
	}

	// TLS: ldaps:// and StartTLS, the certificate checked against CAFile
	// for 127.0.0.1 and for localhost.
	wantDNs(t, "over ldaps", c.find(s.LDAPSURL(), "(mail=bob@example.test)"), bob)
	wantDNs(t, "over StartTLS", c.find(s.URL(), "(mail=bob@example.test)", "-ZZ"), bob)
	localhost := strings.Replace(s.URL(), "127.0.0.1", "localhost", 1)
	wantDNs(t, "over StartTLS to localhost", c.find(localhost, "(mail=bob@example.test)", "-ZZ"), bob)
	// ... and not against another CA.
	other, _, err := newCA()
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(otherFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	c2 := newClient(t, otherFile)
	if out, code := c2.search("-H", s.LDAPSURL(), "-D", BindDN, "-w", BindPassword, "-b", Suffix, "(mail=bob@example.test)"); code == 0 {
		t.Errorf("ldaps with another CA: exit 0\n%s", out)
	}
	if out, code := c2.search("-ZZ", "-H", s.URL(), "-D", BindDN, "-w", BindPassword, "-b", Suffix, "(mail=bob@example.test)"); code == 0 {
		t.Errorf("StartTLS with another CA: exit 0\n%s", out)
	}

	s.Add(t, `dn: uid=dave,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: calloutdProxy
uid: dave
cn: Dave Example
sn: Example
mail: dave@example.test
proxyAddresses: smtp:d@example.test
`)
	dave := "uid=dave,ou=people,dc=example,dc=test"
	wantDNs(t, "added entry", c.find(s.URL(), "(proxyAddresses=smtp:D@example.test)"), dave)

	// Stop: both ports refuse; Start: the same ports, the same data.
	began = time.Now()
	s.Stop()
	stopped := time.Since(began)
	s.Stop() // idempotent
	refused(t, s.URL())
	refused(t, s.LDAPSURL())
	if out, code := c.search("-H", s.URL(), "-b", "", "-s", "base", "1.1"); code != 255 {
		t.Errorf("ldapsearch against a stopped server: exit %d, want 255 (cannot contact)\n%s", code, out)
	}
	url, ldapsURL := s.URL(), s.LDAPSURL()
	began = time.Now()
	s.Start(t)
	t.Logf("stopped in %v, started again in %v", stopped, time.Since(began))
	if s.URL() != url || s.LDAPSURL() != ldapsURL {
		t.Fatalf("after Start: %s and %s, want %s and %s", s.URL(), s.LDAPSURL(), url, ldapsURL)
	}
	wantDNs(t, "after Start", c.find(s.URL(), "(objectClass=inetOrgPerson)"), alice, bob, carol, dave)
	wantDNs(t, "after Start, over ldaps", c.find(s.LDAPSURL(), "(proxyAddresses=smtp:c.alias@example.test)"), carol)
	wantDNs(t, "after Start, over StartTLS", c.find(s.URL(), "(mail=alice@example.test)", "-ZZ"), alice)
}

func TestServerPlain(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	if s.LDAPSURL() != "" || s.CAFile() != "" {
		t.Errorf("without TLS: LDAPSURL() = %q, CAFile() = %q, want empty", s.LDAPSURL(), s.CAFile())
	}
	c := newClient(t, "")
	// The tree every server has.
	wantDNs(t, "the initial tree", c.find(s.URL(), "(objectClass=*)"), Suffix, BindDN)
	if out, code := c.search("-ZZ", "-H", s.URL(), "-D", BindDN, "-w", BindPassword, "-b", Suffix, "1.1"); code == 0 {
		t.Errorf("StartTLS without TLS: exit 0\n%s", out)
	}

	// A restart of a running server, with its pid changed.
	pid := s.p.Pid()
	s.Start(t)
	if s.p.Pid() == pid {
		t.Errorf("Start of a running server: pid %d unchanged", pid)
	}
	wantDNs(t, "after Start", c.find(s.URL(), "(objectClass=organizationalRole)"), BindDN)
}

// TestBootPortTaken checks that a slapd that cannot bind its port is told
// apart, so that Start picks other ports.
func TestBootPortTaken(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	s.Stop()
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)))
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	err = s.boot()
	l.Close()
	if !errors.Is(err, errPortTaken) {
		t.Fatalf("boot on a port taken: %v, want errPortTaken", err)
	}
	if !strings.Contains(err.Error(), "Address already in use") || !strings.Contains(err.Error(), "last lines of") {
		t.Errorf("the error does not quote the log: %v", err)
	}
	t.Logf("boot on a port taken failed in %v", time.Since(began))
	s.Start(t)
	c := newClient(t, "")
	wantDNs(t, "after Start", c.find(s.URL(), "(cn=calloutd)"), BindDN)
}
