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
	// Local marks an entry that describes this node only (an unreachable
	// backend: this node's network). A shared store keeps it in the
	// node's memory and never shares it.
	Local bool `json:",omitempty"`
	// Learned is set on a negative verdict learned from the gateway's own
	// delivery log rather than asked: the Postfix queue id of the
	// delivery the backend refused after END OF DATA. Verified is then
	// the time of that log line.
	Learned string `json:",omitempty"`
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

// ReaderAt is implemented by stores that can be asked as of a moment the
// caller has just read from the clock (the memory store), so that a
// lookup need not read it again.
type ReaderAt interface {
	// GetAt is Get with now as the time entries expire against.
	GetAt(key string, now time.Time) (e Entry, ok bool)
}

// SelfBounded is implemented by stores that bound every call with their
// own timeouts (the Redis store: dial and read timeouts), so a caller need
// not wrap each lookup in a context deadline of its own.
type SelfBounded interface {
	SelfBounded()
}

// Flusher is implemented by stores that can forget many verdicts at once.
type Flusher interface {
	// Flush removes every verdict of domain (lower case, no trailing
	// dot), or every verdict when domain is "", and returns how many it
	// removed.
	Flush(ctx context.Context, domain string) (int, error)
}

// Coalescer is implemented by shared stores, so that several nodes asked
// about the same new address at the same moment make one callout.
type Coalescer interface {
	// Claim is called after a miss. When another node or request is
	// verifying key, Claim waits for its verdict and returns it with ok
	// true. Otherwise it returns ok false and the caller verifies; it must
	// call release once its verdict is stored (or it gives up). lease
	// bounds how long others wait on a caller that dies. Claim never
	// returns a nil release, and on any failure of its own lets the
	// caller verify.
	Claim(ctx context.Context, key string, lease time.Duration) (e Entry, ok bool, release func())
}

// Key normalises an address ("local@domain") into a cache key: ASCII
// letters in lower case, trailing dot of the domain removed. Only ASCII is
// folded: Unicode's lower case maps some characters outside ASCII into it
// (U+0130 İ becomes "i"), which would let İnfo@ share a verdict with
// info@.
func Key(local, domain string) string {
	return asciiLower(local) + "@" + asciiLower(strings.TrimSuffix(domain, "."))
}

// KeyOf is Key(local, domain) for an address written addr: addr itself,
// with no copy, when it is already "local@domain" in lower case without a
// trailing dot (the usual recipient), else Key's new string.
func KeyOf(addr, local, domain string) string {
	if len(addr) == len(local)+1+len(domain) && addr[len(local)] == '@' &&
		addr[:len(local)] == local && addr[len(local)+1:] == domain &&
		!strings.HasSuffix(domain, ".") && !hasUpper(addr) {
		return addr
	}
	return Key(local, domain)
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
