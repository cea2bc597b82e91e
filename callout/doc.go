// Package callout verifies a recipient address by asking the backend SMTP
// server that would receive the mail: it opens a session, says EHLO (or HELO),
// MAIL FROM:<> and RCPT TO:<address>, reads the answer, then RSET and QUIT.
// It never sends DATA, so no mail is ever delivered by a callout.
//
// The package is an SMTP client (RFC 5321) and knows nothing of Postfix or of
// policy actions: it turns a backend's replies into a Verdict (valid, unknown,
// tempfail, unreachable) and keeps the reply that decided it, as a structured
// *Error when something failed. Deciding what Postfix is told lives elsewhere.
//
// The pieces:
//   - Address parses and validates a recipient before any SMTP is spoken and
//     renders it for the wire (RFC 5321 section 4.1.2), so nothing from a policy
//     request can inject a command.
//   - Session is one SMTP connection, one method per command, each bounded by
//     the context and a per-reply timeout. It is the seam for a session pool.
//   - Client implements Prober with one Session per probe.
//   - Verifier walks the routes that match a domain, and their servers, in
//     order, and combines the answers into one Outcome.
package callout
