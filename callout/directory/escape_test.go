package directory

import (
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/calloutd/calloutd/callout"
)

// FuzzFilterEscape is the property behind the injection test: for any
// address ParseAddress accepts, the filter built from it is one equality
// assertion whose value is exactly the address, so no address can widen,
// narrow or end the search.
func FuzzFilterEscape(f *testing.F) {
	for _, s := range []string{
		"alice@example.test", "*@example.test", "*)(objectClass=*@x.y", "a\\2a@x.y", "x)(|(mail=*)@x.y",
		"\x00@x.y", "jöhn@bücher.example", "(mail=a)@x.y", "a b@x.y", "\"q\"@x.y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := callout.ParseAddress(s)
		if err != nil {
			return
		}
		filter := strings.ReplaceAll("(mail=%s)", "%s", ldap.EscapeFilter(a.String()))
		pkt, err := ldap.CompileFilter(filter)
		if err != nil {
			t.Fatalf("%q: filter %q does not compile: %v", s, filter, err)
		}
		if pkt.Tag != ldap.FilterEqualityMatch || len(pkt.Children) != 2 {
			t.Fatalf("%q: filter %q is not one equality assertion", s, filter)
		}
		if got := pkt.Children[1].Data.String(); got != a.String() {
			t.Fatalf("%q: filter %q asserts %q, want the address %q", s, filter, got, a.String())
		}
	})
}
