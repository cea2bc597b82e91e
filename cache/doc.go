// Package cache stores callout verdicts for a while, so that a recipient is
// not verified again for every message. Store is the interface; Memory is a
// bounded, sharded LRU store for one process. A Redis store shared by several
// MTA nodes implements the same interface.
//
// Keys are normalised addresses (see Key): the domain and the local part are
// both lower-cased, so Bob@Example.COM and bob@example.com share a verdict.
// RFC 5321 lets a server treat local parts case-sensitively, but mail
// backends in practice do not, and one verdict per mailbox is what an admin
// flushing "bob@example.com" expects.
//
// The package knows nothing of SMTP or Postfix: an Entry is a record of what
// a backend said, with the verdict as a word ("valid", "unknown", ...).
package cache
