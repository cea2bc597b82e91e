// Command backend is the demo mail server of "make demo" (contrib/demo/demo.sh):
// it plays the backend that the first route of a calloutd configuration
// points at, so that calloutd has someone to ask.
//
//	go run ./internal/demo/backend [-config contrib/calloutd.toml] [-users alice,bob]
//
// It reads the configuration with calloutd's own parser, takes the first
// [[route]], and listens on each of its servers (they must be loopback
// addresses: the demo never touches the network). There it answers like a
// Postfix that holds the mailboxes given by -users (local parts get the
// route's first domain): 250 for them at RCPT TO, "550 5.1.1 ... User unknown
// in local recipient table" for anyone else. It prints one line when it is
// ready, then every command it receives and its reply to each RCPT TO, so
// the demo can show that an answer from calloutd's cache reached no backend.
// SIGINT or SIGTERM stops it.
//
// It is built on internal/smtptest, the scriptable SMTP server of the test
// suite, and speaks no more SMTP than that does: no DATA, no TLS, no
// delivery. It is a teaching aid, not a mail server, and is not installed.
//
// The package's test runs the whole demo script in a non-interactive mode
// (on free ports, in a private temporary directory) and checks what it
// shows, so that "make demo" cannot rot.
package main
