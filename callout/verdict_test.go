package callout

import "testing"

func TestVerdictString(t *testing.T) {
	for v, want := range map[Verdict]string{
		Valid: "valid", Unknown: "unknown", TempFail: "tempfail", Unreachable: "unreachable",
		0: "verdict(0)", 99: "verdict(99)",
	} {
		if got := v.String(); got != want {
			t.Errorf("Verdict(%d).String() = %q, want %q", uint8(v), got, want)
		}
		got, err := ParseVerdict(want)
		if v >= Valid && v <= Unreachable {
			if err != nil || got != v {
				t.Errorf("ParseVerdict(%q) = %v, %v; want %v", want, got, err, v)
			}
		} else if err == nil {
			t.Errorf("ParseVerdict(%q) = %v, want an error", want, got)
		}
	}
	for _, s := range []string{"", "Valid", "VALID", "catchall"} {
		if v, err := ParseVerdict(s); err == nil {
			t.Errorf("ParseVerdict(%q) = %v, want an error", s, v)
		}
	}
}
