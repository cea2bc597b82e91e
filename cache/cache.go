package cache

import (
	"context"
	"strings"
	"time"
)

// Entry is a cached verdict and the backend reply behind it.
type Entry struct {
	Verdict  string    // "valid", "unknown", "tempfail" or "unreachable"
	Code     int       // backend's RCPT reply code, 0 if none
	Enhanced string    // backend's enhanced status code, "" if none
	Text     string    // backend's reply text
	Route    string    // route that answered
	Server   string    // server that answered
	Reason   string    // what the reply meant, e.g. "no_such_user", "quota" (callout.Classification)
	Verified time.Time // when the callout was made
	// Routes fingerprints the routes (names and servers) that were asked,
	// so a negative verdict is not served after the routes change.
	Routes uint64
	// Expires is set by Get: when the entry stops being served.
	Expires time.Time
}

// Store is a verdict cache. Implementations are safe for concurrent use.
// An error means the store could not be asked (Redis down); the caller
// carries on without the cache.
type Store interface {
	// Get returns the entry for key, ok false when there is none or it
	// has expired.
	Get(ctx context.Context, key string) (e Entry, ok bool, err error)
	// Set stores e under key for ttl; a ttl <= 0 stores nothing.
	Set(ctx context.Context, key string, e Entry, ttl time.Duration) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Close releases the store's resources.
	Close() error
}

// Nonblocking is implemented by stores whose calls never wait on I/O (the
// memory store). Callers may then call them inline; other stores' writes
// are best made in the background, so no answer waits for them.
type Nonblocking interface {
	Nonblocking()
}

// Key normalises an address ("local@domain") into a cache key: lower case,
// trailing dot of the domain removed.
func Key(local, domain string) string {
	return strings.ToLower(local) + "@" + strings.ToLower(strings.TrimSuffix(domain, "."))
}
