// Package directory asks an LDAP directory (OpenLDAP, Active Directory)
// whether a recipient exists, for routes whose backend cannot say no at
// RCPT time: Exchange 2013 and later mailbox servers accept every
// recipient and reject only after DATA. Its Prober is a callout.Prober, so
// such a route takes its place among SMTP routes, behind the same circuit
// breaker, budget, cache and metrics.
//
// A search that finds an entry means valid; a search that succeeds and
// finds none, unknown; anything else (connect, TLS, bind, timeout, size
// limit, a referral) means the server could not be asked, never unknown.
package directory
