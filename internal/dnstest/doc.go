// Package dnstest runs a small DNS server on loopback for tests, so that
// code which resolves MX and address records can be tested without the real
// DNS.
//
// Start listens on 127.0.0.1 for UDP and TCP on the same port, as a stub
// resolver expects of its nameserver, and stops when the test ends. A test
// fills in the zone and points the client at Addr:
//
//	srv := dnstest.Start(t)
//	srv.SetMX("example.test", 300, dnstest.MX{Pref: 10, Host: "mx.example.test"})
//	srv.SetAddrs("mx.example.test", 300, netip.MustParseAddr("192.0.2.25"))
//	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
//		var d net.Dialer
//		return d.DialContext(ctx, network, srv.Addr())
//	}}
//
// It answers authoritatively from what the test set: MX, A and AAAA records,
// NXDOMAIN for names it does not know and NODATA for known names without
// records of the asked type. A name can instead be made to fail with any
// RCODE (SERVFAIL, REFUSED, ...) or never be answered at all, and UDP answers
// can be forced to be truncated so that clients must retry over TCP. Every
// query is recorded, so a test can assert what a client asked and over which
// transport.
//
// It is a normal package, not a _test file, so that the tests of any package
// can import it; nothing outside tests should.
package dnstest
