package callout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/smtptest"
)

func TestMatch(t *testing.T) {
	routes := []Route{
		{Name: "exact", Domains: []string{"example.test"}},
		{Name: "sub", Domains: []string{".example.test"}},
		{Name: "mixed-case", Domains: []string{"EXAMPLE.ORG", ".Deep.Example.Test"}},
		{Name: "twice", Domains: []string{"two.test", "TWO.test", "two.test"}},
		{Name: "both", Domains: []string{"a.example.test", ".example.test", ".a.example.test"}},
		{Name: "other", Domains: []string{"other.test"}},
	}
	v := NewVerifier(nil, routes)
	tests := []struct {
		domain string
		want   []string
	}{
		{"example.test", []string{"exact"}},
		{"EXAMPLE.Test", []string{"exact"}},
		{"example.test.", []string{"exact"}},
		{"a.example.test", []string{"sub", "both"}},
		{"x.a.example.test", []string{"sub", "both"}},
		{"b.example.test", []string{"sub", "both"}},
		{"B.EXAMPLE.TEST", []string{"sub", "both"}},
		{"deep.example.test", []string{"sub", "both"}},
		{"x.deep.example.test", []string{"sub", "mixed-case", "both"}},
		{"example.org", []string{"mixed-case"}},
		{"x.example.org", nil},
		{"two.test", []string{"twice"}},
		{"x.two.test", nil},
		{"other.test", []string{"other"}},
		{"xexample.test", nil},
		{"test", nil},
		{"", nil},
		{".", nil},
		{"[192.0.2.1]", nil},
	}
	for _, tc := range tests {
		var got []string
		for _, r := range v.Match(tc.domain) {
			got = append(got, r.Name)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Match(%q) = %q, want %q", tc.domain, got, tc.want)
		}
	}
	// Match hands out the routes themselves, not copies.
	if m := v.Match("other.test"); len(m) != 1 || m[0] != &routes[5] {
		t.Errorf("Match did not return &routes[5]")
	}
	if got := routes[3].Domains; !slices.Equal(got, []string{"two.test", "TWO.test", "two.test"}) {
		t.Errorf("NewVerifier modified the routes: %q", got)
	}
}

// backends starts smtptest servers for the tests of Verify.
type backends struct {
	valid, unknown, unknown2, grey *smtptest.Server
	down                           string
}

func newBackends(t *testing.T) backends {
	return backends{
		valid:    smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("bob@example.test")}),
		unknown:  smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users()}),
		unknown2: smtptest.NewServer(t, smtptest.Behavior{Rcpt: func(a string) string { return "550 5.1.1 <" + a + ">: mailbox unavailable" }}),
		grey: smtptest.NewServer(t, smtptest.Behavior{Rcpt: func(a string) string {
			return "450 4.2.0 <" + a + ">: Recipient address rejected: Greylisted"
		}}),
		down: closedAddr(t),
	}
}

// attempt renders an Attempt for comparison: "route server verdict code"
// or "route server error stage".
func attemptString(a Attempt, names map[string]string) string {
	server := names[a.Server]
	if a.Err != nil {
		var e *Error
		if errors.As(a.Err, &e) {
			return fmt.Sprintf("%s %s error %s", a.Route, server, e.Stage)
		}
		return fmt.Sprintf("%s %s error %v", a.Route, server, a.Err)
	}
	return fmt.Sprintf("%s %s %v %d", a.Route, server, a.Result.Verdict, a.Result.Reply.Code)
}

func TestVerify(t *testing.T) {
	checkGoroutines(t)
	b := newBackends(t)
	valid, unknown, unknown2, grey, down := b.valid.Addr(), b.unknown.Addr(), b.unknown2.Addr(), b.grey.Addr(), b.down
	names := map[string]string{valid: "valid", unknown: "unknown", unknown2: "unknown2", grey: "grey", down: "down"}
	route := func(name string, servers ...string) Route {
		return Route{Name: name, Domains: []string{"example.test"}, Servers: servers}
	}
	tests := []struct {
		name     string
		routes   []Route
		verdict  Verdict
		route    string // deciding route and server; "" for Unreachable
		server   string
		code     int
		attempts []string
	}{
		{"valid", []Route{route("A", valid)},
			Valid, "A", "valid", 250, []string{"A valid valid 250"}},
		{"first server down, second asked", []Route{route("A", down, valid)},
			Valid, "A", "valid", 250, []string{"A down error connect", "A valid valid 250"}},
		{"A unknown, B valid", []Route{route("A", unknown), route("B", valid)},
			Valid, "B", "valid", 250, []string{"A unknown unknown 550", "B valid valid 250"}},
		{"A valid, B not asked", []Route{route("A", valid), route("B", unknown)},
			Valid, "A", "valid", 250, []string{"A valid valid 250"}},
		{"A unknown, B unknown: first reply kept", []Route{route("A", unknown), route("B", unknown2)},
			Unknown, "A", "unknown", 550, []string{"A unknown unknown 550", "B unknown2 unknown 550"}},
		// Deliberate: B might hold the mailbox, so one route's "unknown" is
		// not the answer.
		{"A unknown, B unreachable", []Route{route("A", unknown), route("B", down)},
			Unreachable, "", "", 0, []string{"A unknown unknown 550", "B down error connect"}},
		{"A unreachable, B unknown", []Route{route("A", down), route("B", unknown)},
			Unreachable, "", "", 0, []string{"A down error connect", "B unknown unknown 550"}},
		{"A 4xx, B unknown", []Route{route("A", grey), route("B", unknown)},
			TempFail, "A", "grey", 450, []string{"A grey tempfail 450", "B unknown unknown 550"}},
		{"A unknown, B 4xx", []Route{route("A", unknown), route("B", grey)},
			TempFail, "B", "grey", 450, []string{"A unknown unknown 550", "B grey tempfail 450"}},
		{"A 4xx, B valid", []Route{route("A", grey), route("B", valid)},
			Valid, "B", "valid", 250, []string{"A grey tempfail 450", "B valid valid 250"}},
		{"4xx then 5xx in one route", []Route{route("A", grey, unknown)},
			Unknown, "A", "unknown", 550, []string{"A grey tempfail 450", "A unknown unknown 550"}},
		{"4xx then valid in one route", []Route{route("A", grey, valid)},
			Valid, "A", "valid", 250, []string{"A grey tempfail 450", "A valid valid 250"}},
		{"5xx settles the route", []Route{route("A", unknown, valid)},
			Unknown, "A", "unknown", 550, []string{"A unknown unknown 550"}},
		{"down then 5xx in one route", []Route{route("A", down, unknown)},
			Unknown, "A", "unknown", 550, []string{"A down error connect", "A unknown unknown 550"}},
		{"4xx then down in one route", []Route{route("A", grey, down)},
			TempFail, "A", "grey", 450, []string{"A grey tempfail 450", "A down error connect"}},
		{"all 4xx: first kept", []Route{route("A", grey), route("B", grey)},
			TempFail, "A", "grey", 450, []string{"A grey tempfail 450", "B grey tempfail 450"}},
		{"all down", []Route{route("A", down, down), route("B", down)},
			Unreachable, "", "", 0, []string{"A down error connect", "A down error connect", "B down error connect"}},
		{"route without servers", []Route{route("A")},
			Unreachable, "", "", 0, nil},
		{"route without servers, B unknown", []Route{route("A"), route("B", unknown)},
			Unreachable, "", "", 0, []string{"B unknown unknown 550"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(newClient(), tc.routes)
			out, err := v.Verify(context.Background(), mustParse(t, "bob@example.test"))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			var got []string
			for _, a := range out.Attempts {
				got = append(got, attemptString(a, names))
				if a.Duration < 0 {
					t.Errorf("attempt %+v has no duration", a)
				}
			}
			if !slices.Equal(got, tc.attempts) {
				t.Errorf("attempts\n\t%q\nwant\n\t%q", got, tc.attempts)
			}
			if out.Verdict != tc.verdict || out.Route != tc.route || names[out.Server] != tc.server || out.Reply.Code != tc.code {
				t.Errorf("Verify = %v from %q %q (%d), want %v from %q %q (%d)", out.Verdict, out.Route, names[out.Server],
					out.Reply.Code, tc.verdict, tc.route, tc.server, tc.code)
			}
			switch {
			case tc.verdict == Unreachable && slices.ContainsFunc(tc.attempts, func(a string) bool { return strings.Contains(a, " error ") }):
				// The last unavailable server's error.
				var e *Error
				if !errors.As(out.Err, &e) || e.Stage != StageConnect || e.Server != down {
					t.Errorf("Err = %v, want the connect error of %s", out.Err, down)
				}
			case tc.verdict != Unreachable && out.Err != nil:
				t.Errorf("Err = %v with verdict %v, want nil", out.Err, out.Verdict)
			}
		})
	}
	// The unknown reply of the deciding server is kept whole.
	v := NewVerifier(newClient(), []Route{route("A", unknown), route("B", unknown2)})
	out, _ := v.Verify(context.Background(), mustParse(t, "nobody@example.test"))
	if got := out.Reply.String(); got != "550 5.1.1 "+unknownText {
		t.Errorf("Reply = %q, want the first server's", got)
	}
}

// TestVerifyBudget: when the context's deadline passes on a silent server,
// Verify stops asking, returns by then, and says Unreachable with the
// context's error.
func TestVerifyBudget(t *testing.T) {
	checkGoroutines(t)
	silent := smtptest.NewServer(t, smtptest.Behavior{Silent: "RCPT"})
	valid := smtptest.NewServer(t, smtptest.Behavior{})
	c := newClient()
	c.CommandTimeout = time.Hour
	v := NewVerifier(c, []Route{
		{Name: "A", Domains: []string{"example.test"}, Servers: []string{silent.Addr(), valid.Addr()}},
		{Name: "B", Domains: []string{".test"}, Servers: []string{valid.Addr()}},
	})
	const n = 3 // the deadline and the context's timer race; try a few times
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		start := time.Now()
		out, err := v.Verify(ctx, mustParse(t, "bob@example.test"))
		el := time.Since(start)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if el > hangBound {
			t.Errorf("Verify took %v with a budget of %v", el, budget)
		}
		if out.Verdict != Unreachable || !errors.Is(out.Err, context.DeadlineExceeded) {
			t.Errorf("Verify = %v, %v; want unreachable, context.DeadlineExceeded", out.Verdict, out.Err)
		}
		if len(out.Attempts) != 1 || out.Attempts[0].Server != silent.Addr() {
			t.Errorf("%d attempts %+v, want one of %s", len(out.Attempts), out.Attempts, silent.Addr())
		} else if e := out.Attempts[0].Err; !errors.Is(e, context.DeadlineExceeded) {
			t.Errorf("attempt error %v, want context.DeadlineExceeded", e)
		}
	}
	if n := valid.Sessions(); n != 0 {
		t.Errorf("%d sessions with a server asked after the budget ran out", n)
	}
	checkLines(t, silent, slices.Repeat([]string{"EHLO gw.test", "MAIL FROM:<>", "RCPT TO:<bob@example.test>"}, n)...)
}

// TestVerifyBudgetAfterTempFail: what was heard before the budget ran out
// still counts.
func TestVerifyBudgetAfterTempFail(t *testing.T) {
	checkGoroutines(t)
	grey := smtptest.NewServer(t, smtptest.Behavior{Rcpt: func(string) string { return "451 4.7.1 Greylisted" }})
	silent := smtptest.NewServer(t, smtptest.Behavior{Silent: "GREETING"})
	c := newClient()
	c.CommandTimeout = time.Hour
	v := NewVerifier(c, []Route{{Name: "A", Domains: []string{"example.test"}, Servers: []string{grey.Addr(), silent.Addr()}}})
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	out, err := v.Verify(ctx, mustParse(t, "bob@example.test"))
	if err != nil {
		t.Fatal(err)
	}
	if out.Verdict != TempFail || out.Server != grey.Addr() || out.Reply.Code != 451 || out.Err != nil || len(out.Attempts) != 2 {
		t.Errorf("Verify = %+v, want tempfail from %s", out, grey.Addr())
	}
}

// TestVerifyCancelled: a context that has ended before Verify asks nobody.
func TestVerifyCancelled(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{})
	v := NewVerifier(newClient(), []Route{{Name: "A", Domains: []string{"example.test"}, Servers: []string{srv.Addr()}}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out, err := v.Verify(ctx, mustParse(t, "bob@example.test"))
	if err != nil {
		t.Fatal(err)
	}
	if out.Verdict != Unreachable || !errors.Is(out.Err, context.Canceled) || len(out.Attempts) != 0 {
		t.Errorf("Verify = %+v, want unreachable, context.Canceled, no attempts", out)
	}
	if n := srv.Sessions(); n != 0 {
		t.Errorf("%d sessions, want none", n)
	}
}

func TestVerifyNoRoute(t *testing.T) {
	v := NewVerifier(newClient(), []Route{{Name: "A", Domains: []string{"example.test", ".example.test"}, Servers: []string{"127.0.0.1:1"}}})
	for _, rcpt := range []string{"bob@example.org", "bob@xexample.test", "bob@[192.0.2.1]"} {
		out, err := v.Verify(context.Background(), mustParse(t, rcpt))
		if !errors.Is(err, ErrNoRoute) || out.Verdict != 0 || len(out.Attempts) != 0 {
			t.Errorf("Verify(%s) = %+v, %v; want ErrNoRoute", rcpt, out, err)
		}
	}
}

// TestVerifyConcurrent: one Verifier serves many verdicts at once.
func TestVerifyConcurrent(t *testing.T) {
	checkGoroutines(t)
	srv := smtptest.NewServer(t, smtptest.Behavior{Rcpt: smtptest.Users("u0@example.test", "u2@example.test", "u4@example.test")})
	v := NewVerifier(newClient(), []Route{{Name: "A", Domains: []string{"example.test"}, Servers: []string{srv.Addr()}}})
	const n = 16
	errs := make(chan error, n)
	for i := range n {
		go func() {
			out, err := v.Verify(context.Background(), mustParse(t, fmt.Sprintf("u%d@example.test", i)))
			want := Unknown
			if i < 5 && i%2 == 0 {
				want = Valid
			}
			if err == nil && out.Verdict != want {
				err = fmt.Errorf("u%d: %v, want %v", i, out.Verdict, want)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := srv.Count("RCPT"); got != n {
		t.Errorf("%d RCPT, want %d", got, n)
	}
	if got := strings.Join(srv.Lines(), "\n"); strings.Contains(got, "DATA") {
		t.Errorf("DATA sent")
	}
}
