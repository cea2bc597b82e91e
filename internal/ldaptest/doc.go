// Package ldaptest starts a real OpenLDAP slapd on loopback for tests. Nothing
// is mocked: the server is the slapd binary, data are loaded with slapadd and
// ldapadd, and the tests check it with the real ldapsearch.
//
//	func TestLookup(t *testing.T) {
//		srv := ldaptest.Start(t, ldaptest.Options{TLS: true, Entries: `
//	dn: uid=alice,dc=example,dc=test
//	objectClass: inetOrgPerson
//	uid: alice
//	cn: Alice
//	sn: Example
//	mail: alice@example.test
//	`})
//		// ... point the code under test at srv.URL() or srv.LDAPSURL(),
//		// binding as ldaptest.BindDN / ldaptest.BindPassword and trusting
//		// srv.CAFile() ...
//		srv.Stop()    // the server is down: connections are refused
//		srv.Start(t)  // back on the same ports, with the same data
//	}
//
// Every server has its own cn=config (a slapd.d made with slapadd -n0) and
// its own mdb database in t.TempDir(): suffix dc=example,dc=test, root DN
// cn=admin,dc=example,dc=test, the schemas core, cosine, nis and
// inetorgperson, and a small extra schema that mimics Active Directory's
// proxyAddresses (see Start). No system slapd, config or database is read,
// written or needed, and nothing goes to syslog. slapd listens on 127.0.0.1
// only, on ports that were free when they were picked (never fixed ports, so
// tests of several packages may run at once); with Options.TLS it serves
// ldaps:// on a second port and StartTLS on ldap://, with a certificate
// signed by a CA generated for the test.
//
// The server runs in the foreground (slapd -d stats, its log in the temp
// dir) and is stopped when the test ends (t.Cleanup); on Linux it also dies
// with the test binary, so a test that times out leaves no orphans. When it
// does not come up within 10 s, or an ldapadd fails, the test fails with the
// tail of slapd's log.
//
// Start calls Need, so a test that uses it is skipped, loudly, on a machine
// without slapd, slapadd, ldapadd and ldapsearch (Debian: slapd and
// ldap-utils) or without OpenLDAP's schema files, and fails instead under
// CI=true.
//
// Methods that take a testing.TB (Start, Add) fail that test, so they must
// be called from its goroutine. URL, LDAPSURL, CAFile and Stop never fail and
// may be called from anywhere.
//
// It is a normal package, not a _test file, so that the tests of any package
// can import it; nothing outside tests should. It needs a Unix system.
package ldaptest
