package callout

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Limits from RFC 5321 section 4.5.3.1.
const (
	MaxLocalPartLength = 64
	MaxDomainLength    = 255
	// MaxPathLength bounds the whole mailbox as it goes on the wire, the
	// 254-octet limit of RFC 5321 (256 octets of path less the brackets).
	MaxPathLength = 254
)

// ErrInvalidAddress is wrapped by every error ParseAddress returns.
var ErrInvalidAddress = errors.New("invalid address")

// Address is a validated mailbox. Local is in internal form (unquoted, as
// Postfix hands it to a policy server); Wire renders it for an SMTP command.
type Address struct {
	Local  string
	Domain string
}

// ParseAddress validates s, a recipient in Postfix's internal form
// ("john doe@example.com" for the external "\"john doe\"@example.com").
// It splits at the last '@'. The local part may hold any printable ASCII
// character (it is quoted on the wire when it is not a dot-atom), and
// printable UTF-8 in Unicode's NFC form (RFC 6531: such an address is
// asked only of a server that announces SMTPUTF8). The domain must be a
// host name, in ASCII or with U-labels (bücher.example, which becomes its
// A-label form xn--bcher-kva.example: one spelling for matching, caching
// and the wire), or an address literal. Control characters, invalid
// UTF-8, other normalisation forms and over-long addresses are refused.
func ParseAddress(s string) (Address, error) {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return Address{}, fmt.Errorf("%w: no domain", ErrInvalidAddress)
	}
	a := Address{Local: s[:at], Domain: s[at+1:]}
	if a.Local == "" {
		return Address{}, fmt.Errorf("%w: empty local part", ErrInvalidAddress)
	}
	if err := checkLocal(a.Local); err != nil {
		return Address{}, err
	}
	if !isASCII(a.Domain) {
		if !utf8.ValidString(a.Domain) {
			return Address{}, fmt.Errorf("%w: domain is not valid UTF-8", ErrInvalidAddress)
		}
		d, err := ToASCII(a.Domain)
		if err != nil {
			return Address{}, fmt.Errorf("%w: domain %q: %w", ErrInvalidAddress, a.Domain, err)
		}
		a.Domain = d
	}
	if err := checkDomain(a.Domain); err != nil {
		return Address{}, err
	}
	wl := len(a.wireLocal())
	if wl > MaxLocalPartLength {
		return Address{}, fmt.Errorf("%w: local part is %d octets, limit %d", ErrInvalidAddress, wl, MaxLocalPartLength)
	}
	if n := wl + 1 + len(a.Domain); n > MaxPathLength {
		return Address{}, fmt.Errorf("%w: address is %d octets, limit %d", ErrInvalidAddress, n, MaxPathLength)
	}
	return a, nil
}

// checkLocal accepts printable ASCII, and printable UTF-8 in NFC.
func checkLocal(l string) error {
	for i := 0; i < len(l); i++ {
		if c := l[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: local part has byte %#02x", ErrInvalidAddress, c)
		}
	}
	if isASCII(l) {
		return nil
	}
	if !utf8.ValidString(l) {
		return fmt.Errorf("%w: local part is not valid UTF-8", ErrInvalidAddress)
	}
	for _, r := range l {
		if !unicode.IsPrint(r) && r != ' ' {
			return fmt.Errorf("%w: local part has character %U", ErrInvalidAddress, r)
		}
	}
	if !norm.NFC.IsNormalString(l) {
		// The same mailbox could be spelled in several byte sequences:
		// refused rather than asked (and cached) under each.
		return fmt.Errorf("%w: local part is not in Unicode NFC form", ErrInvalidAddress)
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// ToASCII returns a domain (or a route's ".domain") with its U-labels as
// A-labels, lower case, as DNS lookups use it (IDNA2008, UTS #46 lookup
// profile).
func ToASCII(domain string) (string, error) {
	dot := strings.HasPrefix(domain, ".")
	d, err := idna.Lookup.ToASCII(strings.TrimPrefix(domain, "."))
	if err != nil {
		return "", err
	}
	if dot {
		d = "." + d
	}
	return d, nil
}

// UTF8 tells whether the address needs SMTPUTF8: its local part is not
// ASCII (a domain is always in A-labels).
func (a Address) UTF8() bool { return !isASCII(a.Local) }

// String returns the address in internal form.
func (a Address) String() string { return a.Local + "@" + a.Domain }

// Wire returns the mailbox as it goes between the angle brackets of
// RCPT TO:<...> or MAIL FROM:<...>: the local part as a dot-atom when it is
// one, else as a quoted-string with '"' and '\' escaped (RFC 5321 4.1.2).
func (a Address) Wire() string { return a.wireLocal() + "@" + a.Domain }

func (a Address) wireLocal() string {
	if isDotAtom(a.Local) {
		return a.Local
	}
	var b strings.Builder
	b.Grow(len(a.Local) + 4)
	b.WriteByte('"')
	for i := 0; i < len(a.Local); i++ {
		c := a.Local[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

// isAtext reports whether c is an atext character (RFC 5322 3.2.3).
// isAtext: RFC 5322 atext, and RFC 6531's UTF8-non-ascii (the octets of
// a multi-byte character, already checked by ParseAddress).
func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c >= utf8.RuneSelf:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if s[i-1] == '.' {
				return false
			}
			continue
		}
		if !isAtext(c) {
			return false
		}
	}
	return true
}

func checkDomain(d string) error {
	if d == "" {
		return fmt.Errorf("%w: empty domain", ErrInvalidAddress)
	}
	if d[0] == '[' {
		return checkAddressLiteral(d)
	}
	if err := CheckHostname(d); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidAddress, err)
	}
	return nil
}

// checkAddressLiteral accepts [192.0.2.1] and [IPv6:2001:db8::1].
func checkAddressLiteral(d string) error {
	if len(d) < 3 || d[len(d)-1] != ']' {
		return fmt.Errorf("%w: malformed address literal", ErrInvalidAddress)
	}
	inner := d[1 : len(d)-1]
	if len(inner) > 5 && strings.EqualFold(inner[:5], "IPv6:") {
		ip, err := netip.ParseAddr(inner[5:])
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return fmt.Errorf("%w: malformed IPv6 address literal", ErrInvalidAddress)
		}
		return nil
	}
	ip, err := netip.ParseAddr(inner)
	if err != nil || !ip.Is4() {
		return fmt.Errorf("%w: malformed address literal", ErrInvalidAddress)
	}
	return nil
}

// CheckHostname reports whether d is a syntactically valid host name:
// dot-separated labels of letters, digits and hyphens, no label longer than
// 63 octets or starting or ending with a hyphen, at most 253 octets in all.
func CheckHostname(d string) error {
	if len(d) > 253 {
		return fmt.Errorf("domain is %d octets, limit 253", len(d))
	}
	if d == "" {
		return errors.New("empty domain")
	}
	start := 0
	for i := 0; i <= len(d); i++ {
		if i < len(d) && d[i] != '.' {
			c := d[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("domain has invalid character %q", c)
			}
			continue
		}
		label := d[start:i]
		switch {
		case label == "":
			return errors.New("domain has an empty label")
		case len(label) > 63:
			return errors.New("domain label longer than 63 octets")
		case label[0] == '-' || label[len(label)-1] == '-':
			return errors.New("domain label starts or ends with a hyphen")
		}
		start = i + 1
	}
	return nil
}

// Base returns the address without its extension, as Postfix's
// recipient_delimiter splits it (split_addr): the local part ends before
// the first of the delimiter characters ("bob+news" → "bob" with "+"). A
// local part that starts with a delimiter keeps it, and, when "-" is a
// delimiter, so do owner-list and list-request (in any case).
func (a Address) Base(delimiters string) Address {
	if delimiters == "" {
		return a
	}
	if strings.ContainsRune(delimiters, '-') {
		l := strings.ToLower(a.Local)
		if strings.HasPrefix(l, "owner-") || strings.HasSuffix(l, "-request") {
			return a
		}
	}
	i := strings.IndexAny(a.Local, delimiters)
	if i <= 0 {
		return a
	}
	return Address{Local: a.Local[:i], Domain: a.Domain}
}
