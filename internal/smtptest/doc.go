// Package smtptest runs a scriptable SMTP server on loopback for tests.
//
// NewServer listens on 127.0.0.1:0, serves every connection in the
// background and stops when the test ends. A Behavior scripts it: the reply
// to each command, a verb at which it falls silent or drops the connection,
// raw bytes in place of a reply (garbage, an unterminated multi-line reply),
// a delay before every reply. The server records every command line it
// receives, so a test can assert the exact dialogue a client held:
//
//	srv := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("alice@example.test")})
//	// ... run the client against srv.Addr() ...
//	want := []string{"EHLO gw.test", "MAIL FROM:<>", "RCPT TO:<bob@example.test>", "QUIT"}
//	if got := srv.Lines(); !slices.Equal(got, want) { ... }
//
// It speaks just enough of RFC 5321 for a client that verifies recipients:
// the greeting, EHLO, HELO, MAIL, RCPT, RSET, NOOP and QUIT; any other verb
// (DATA included) gets 502. It keeps no transaction state (RCPT before MAIL
// is accepted), offers no TLS or AUTH and never delivers anything. Like a real
// server it closes the connection after a 421 reply (RFC 5321 3.8) and after
// QUIT's 221.
//
// Everything is bounded: a command line may be 1000 octets including CRLF
// (RFC 5321 4.5.3.1.6; longer lines get 500 and are not recorded), at most
// 64 sessions run at once, and at most 100000 lines are recorded. Close
// stops the listener, closes every connection and waits for the server's
// goroutines, so a test that uses it leaks none.
//
// Start serves a listener the caller made instead, for the one program that
// is not a test: the demo backend of "make demo" (internal/demo/backend),
// which must listen on the example configuration's fixed port and logs each
// command through Behavior.OnCommand.
//
// It is a normal package, not a _test file, so that the tests of any package
// can import it; nothing outside tests and the demo should.
package smtptest
