// Package policyd speaks Postfix's SMTP access policy delegation protocol
// (Postfix SMTPD_POLICY_README) and owns the listeners Postfix connects to.
//
// Postfix writes a request as "name=value" lines ended by an empty line; the
// server answers "action=<action>" and an empty line, and nothing else. One
// connection carries many requests, answered in order. A malformed request
// (a line without '=', an over-long line, a request that is not
// "smtpd_access_policy") is logged and the connection is closed without an
// answer: Postfix then retries or applies its default_action.
//
// The package knows nothing of SMTP dialogues or caches: a Handler turns a
// Request into an Action. Action holds the access(5) actions and Postfix's
// quirks about them.
package policyd
