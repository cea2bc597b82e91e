// Package recipients reads a static recipient list: a text file, kept by the
// mail admin, of the addresses a route accepts. One entry a line:
//
//	bob@example.com          # this address exists
//	@example.org             # every address in example.org (not its subdomains)
//	# a comment line
//
// A '#' starts a comment at the start of a line or after white space; inside
// an entry it is part of it ("a#b@example.com" is an address). Blank lines,
// surrounding white space, CRLF line ends and a leading UTF-8 byte order mark
// are ignored. An entry holds no white space, so a local part with a space
// cannot be listed.
//
// Matching ignores ASCII case in the whole address, local part included, as
// the cache's keys do, and a trailing dot on the domain; it is otherwise
// textual, so bob@[IPv6:2001:db8::1] is not bob@[IPv6:2001:db8:0::1].
//
// An address entry is checked with callout.ParseAddress, an @domain one with
// callout.CheckHostname; the first bad line fails the whole load with an
// error naming it ("routes/mailstore.txt:12: ..."), so that a reload keeps
// the old list rather than install part of a new one. So does a file over
// MaxSize.
//
// A list is held as one lower-cased copy of the file, comments included,
// and a hash table of offsets into it: a million entries load in under
// 0.2 s on a small VM and keep some 45 bytes each, text included. Lookups do
// not allocate.
package recipients
