// Package e2e tests calloutd end to end behind real Postfix: a backend
// Postfix that holds the mailboxes of example.test and rejects unknown users
// at RCPT TO, a front (edge) Postfix per wiring that relays example.test to
// it and asks calloutd through the files in contrib/postfix, and SMTP
// clients that talk to the front and check its replies and the delivered
// mail. It covers the three wirings docs/postfix.md describes (TCP, a unix
// socket, spawn(8)), a silent backend, a stopped backend and a stopped
// calloutd.
//
// The package has tests and benchmarks only (bench_test.go measures
// calloutd against a real Postfix backend and compares a front using
// calloutd with one using reject_unverified_recipient; see
// docs/benchmarks.md). They need root and the postfix and swaks
// programs (make test installs them on Debian); without them the tests skip
// loudly, or fail when the environment variable CI is "true". Everything
// runs on 127.0.0.1 with ports picked at run time and lives in one
// temporary directory; no system-wide Postfix configuration is read or
// written, and every process the tests start is stopped by them.
package e2e
