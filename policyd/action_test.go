package policyd

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func TestReject(t *testing.T) {
	tests := []struct {
		name     string
		code     int
		enhanced string
		def      string
		text     string
		want     Action
	}{
		{"backend's code and enhanced code", 550, "5.1.1", StatusBadMailbox, "User unknown", "550 5.1.1 User unknown"},
		{"other 5xx kept", 554, "5.7.1", StatusBadMailbox, "Relay access denied", "554 5.7.1 Relay access denied"},
		{"three-digit subject and detail", 550, "5.123.100", StatusBadMailbox, "x", "550 5.123.100 x"},
		{"4xx", 450, "4.2.0", StatusTempMailbox, "Mailbox busy", "450 4.2.0 Mailbox busy"},
		{"no enhanced code: default", 550, "", StatusBadMailbox, "User unknown", "550 5.1.1 User unknown"},
		{"4.x.x with 5xx: default", 550, "4.2.0", StatusBadMailbox, "User unknown", "550 5.1.1 User unknown"},
		{"5.x.x with 4xx: default", 450, "5.1.1", StatusTempBadMailbox, "Try later", "450 4.1.1 Try later"},
		{"2.x.x with 5xx: default", 550, "2.0.0", StatusBadMailbox, "x", "550 5.1.1 x"},
		{"two parts: default", 550, "5.1", StatusBadMailbox, "x", "550 5.1.1 x"},
		{"four parts: default", 550, "5.1.1.1", StatusBadMailbox, "x", "550 5.1.1 x"},
		{"two-digit class: default", 550, "55.1.1", StatusBadMailbox, "x", "550 5.1.1 x"},
		{"four-digit subject: default", 550, "5.1000.1", StatusBadMailbox, "x", "550 5.1.1 x"},
		{"empty detail: default", 550, "5.1.", StatusBadMailbox, "x", "550 5.1.1 x"},
		{"letters: default", 550, "5.a.1", StatusBadMailbox, "x", "550 5.1.1 x"},
		{"line break smuggled in enhanced: default", 550, "5.1.1\naction=DUNNO", StatusBadMailbox, "x", "550 5.1.1 x"},
		{"text sanitised", 550, "5.1.1", StatusBadMailbox, "User\r\nunknown\t here", "550 5.1.1 User unknown here"},
		// Postfix takes a bare "550" (no text) as OK: an empty text must
		// never make it onto the wire.
		{"empty text: default text", 550, "5.1.1", StatusBadMailbox, "", "550 5.1.1 Recipient rejected"},
		{"blank text: default text", 550, "5.1.1", StatusBadMailbox, " \r\n\t ", "550 5.1.1 Recipient rejected"},
		{"control-only text: default text", 550, "", StatusBadMailbox, "\x00\x01\x7f", "550 5.1.1 Recipient rejected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Reject(tt.code, tt.enhanced, tt.def, tt.text); got != tt.want {
				t.Errorf("Reject(%d, %q, %q, %q): got %q, want %q", tt.code, tt.enhanced, tt.def, tt.text, got, tt.want)
			}
		})
	}
}

func TestRejectPanicsOnCodeOutside4xx5xx(t *testing.T) {
	for _, code := range []int{0, 250, 399, 600, 5500} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Reject(%d, ...): got no panic, want one", code)
				}
			}()
			Reject(code, "5.1.1", StatusBadMailbox, "x")
		})
	}
}

func TestDeferIfPermit(t *testing.T) {
	tests := []struct {
		name     string
		enhanced string
		def      string
		text     string
		want     Action
	}{
		{"backend's 4.x.x kept", "4.2.0", StatusTempMailbox, "Mailbox busy", "DEFER_IF_PERMIT 4.2.0 Mailbox busy"},
		{"no enhanced code: default", "", StatusNoAnswer, "Recipient verification unavailable", "DEFER_IF_PERMIT 4.4.1 Recipient verification unavailable"},
		{"5.x.x: default", "5.1.1", StatusTempMailbox, "x", "DEFER_IF_PERMIT 4.2.0 x"},
		{"2.x.x: default", "2.0.0", StatusTempMailbox, "x", "DEFER_IF_PERMIT 4.2.0 x"},
		{"malformed: default", "4.2", StatusTempMailbox, "x", "DEFER_IF_PERMIT 4.2.0 x"},
		{"empty text: default text", "4.2.0", StatusTempMailbox, "", "DEFER_IF_PERMIT 4.2.0 Try again later"},
		{"text sanitised", "4.7.1", StatusTempMailbox, "Greylisted,\r\n  try   again", "DEFER_IF_PERMIT 4.7.1 Greylisted, try again"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DeferIfPermit(tt.enhanced, tt.def, tt.text); got != tt.want {
				t.Errorf("DeferIfPermit(%q, %q, %q): got %q, want %q", tt.enhanced, tt.def, tt.text, got, tt.want)
			}
		})
	}
}

func TestText(t *testing.T) {
	a199, a198 := strings.Repeat("a", 199), strings.Repeat("a", 198)
	tests := []struct {
		name string
		in   string
		def  string
		want string
	}{
		{"plain", "User unknown", "d", "User unknown"},
		{"CRLF between words becomes one space", "User\r\nunknown", "d", "User unknown"},
		{"CR, LF at the ends removed", "\r\nUser unknown\r\n", "d", "User unknown"},
		{"control characters separate words", "a\x00b\x07c\x1bd\x7fe", "d", "a b c d e"},
		{"tabs folded", "a\t\tb", "d", "a b"},
		{"runs of spaces folded", "a     b  c", "d", "a b c"},
		{"leading and trailing spaces removed", "   a b   ", "d", "a b"},
		{"non-ASCII octets removed", "M\xc3\xbcller", "d", "M ller"},
		{"printable ASCII kept", "<a@b> [x] {y} ~!#$%^&*()_+=", "d", "<a@b> [x] {y} ~!#$%^&*()_+="},
		{"empty: default", "", "User unknown", "User unknown"},
		{"blank: default", " \t\r\n", "User unknown", "User unknown"},
		{"controls only: default", "\x00\x01\x02", "User unknown", "User unknown"},
		{"empty default may be empty", "", "", ""},
		{"capped at 200", strings.Repeat("a", 300), "d", strings.Repeat("a", 200)},
		{"exactly 200", strings.Repeat("b", 200), "d", strings.Repeat("b", 200)},
		{"space and a word at 200 fit", a198 + " bcd", "d", a198 + " b"},
		// The space would be octet 200 and the next word's first octet 201:
		// neither goes out, and no trailing space is left.
		{"no space alone at the cap", a199 + " bcd", "d", a199},
		{"folded run at the cap", a199 + "\r\n  \t bcd", "d", a199},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Text(tt.in, tt.def); got != tt.want {
				t.Errorf("Text(%q, %q):\ngot  %q\nwant %q", tt.in, tt.def, got, tt.want)
			}
		})
	}
}

var (
	rejectRE = regexp.MustCompile(`^([45])[0-9][0-9] ([45])\.[0-9]{1,3}\.[0-9]{1,3} [!-~]`)
	deferRE  = regexp.MustCompile(`^DEFER_IF_PERMIT 4\.[0-9]{1,3}\.[0-9]{1,3} [!-~]`)
)

// checkText asserts what Text promises for any input.
func checkText(t *testing.T, in, got string) {
	t.Helper()
	if len(got) > MaxText {
		t.Fatalf("Text(%q): got %d octets, want at most %d", in, len(got), MaxText)
	}
	for i := 0; i < len(got); i++ {
		if c := got[i]; c < ' ' || c > '~' {
			t.Fatalf("Text(%q) = %q: octet %#02x at %d, want printable ASCII only", in, got, c, i)
		}
	}
	if strings.Contains(got, "  ") || strings.HasPrefix(got, " ") || strings.HasSuffix(got, " ") {
		t.Fatalf("Text(%q) = %q: want single spaces between words only", in, got)
	}
	if again := Text(got, "d"); got != "" && again != got {
		t.Fatalf("Text(Text(%q)) = %q, want %q unchanged", in, again, got)
	}
}

// FuzzActionText checks the property the protocol depends on: no Action
// carries a line break (which would end the answer early and desynchronise
// the connection), and no reject is a bare code (which Postfix takes as OK).
func FuzzActionText(f *testing.F) {
	f.Add("User unknown", "5.1.1", 550)
	f.Add("User\r\nunknown", "4.2.0", 450)
	f.Add("\r\n", "5.1.1\r\n", 554)
	f.Add(strings.Repeat("a", 199)+" b", "", 421)
	f.Add("M\xc3\xbcller\x00", "5.1.1.1", 599)
	f.Fuzz(func(t *testing.T, text, enhanced string, code int) {
		code = 400 + (code%200+200)%200 // any 4xx or 5xx
		def := StatusBadMailbox
		if code < 500 {
			def = StatusTempBadMailbox
		}
		checkText(t, text, Text(text, ""))

		for _, a := range []Action{Reject(code, enhanced, def, text), DeferIfPermit(enhanced, StatusTempMailbox, text)} {
			if strings.ContainsAny(string(a), "\r\n") {
				t.Fatalf("action %q holds a line break (text %q, enhanced %q)", a, text, enhanced)
			}
		}
		r := Reject(code, enhanced, def, text)
		m := rejectRE.FindStringSubmatch(string(r))
		if m == nil {
			t.Fatalf("Reject(%d, %q, %q, %q) = %q, want NNN x.y.z text", code, enhanced, def, text, r)
		}
		if m[1] != m[2] || m[1] != fmt.Sprint(code/100) {
			t.Fatalf("Reject(%d, %q, ...) = %q: enhanced code of another class", code, enhanced, r)
		}
		if d := DeferIfPermit(enhanced, StatusTempMailbox, text); !deferRE.MatchString(string(d)) {
			t.Fatalf("DeferIfPermit(%q, ..., %q) = %q, want DEFER_IF_PERMIT 4.y.z text", enhanced, text, d)
		}
	})
}
