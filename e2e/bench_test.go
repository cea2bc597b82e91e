package e2e

import (
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Benchmarks against real Postfix, in the suite's environment (newSuite:
// root, postfix and swaks, or a skip; a failure under CI=true). Like every
// Go benchmark they run only with -bench:
//
//	go test -run '^$' -bench . -benchtime 200x ./e2e/
//
// Every benchmark reports, besides ns/op, the p50, p99 and maximum of the
// operations it timed (p50-ms, p99-ms, max-ms). A few operations are too
// slow to repeat b.N times (Postfix's flow-control stalls, the first
// contact of reject_unverified_recipient); those benchmarks measure fewer
// and say so: "measured" is the number of operations timed, and ns/op is
// their mean instead of the loop's time divided by b.N.
//
// docs/benchmarks.md has the figures and what they mean.

// Benchmark backends, besides the suite's users, accept every
// v<digits>@example.test (an alias of alice's: smtpd accepts a recipient
// that virtual_alias_maps lists as it accepts one of
// virtual_mailbox_maps), so that a benchmark can ask about as many
// distinct existing recipients as it likes. "$$" is main.cf for "$".
const benchBackendExtra = `
# ---- e2e/bench_test.go ----
virtual_alias_maps = regexp:{ {/^v[0-9]+@example\.test$$/ alice@example.test} }
`

// benchBackend configures (does not start) a backend like the suite's.
// inFlowDelay "" keeps Postfix's default (1s).
func benchBackend(b testing.TB, s *suite, name, inFlowDelay string) *instance {
	b.Helper()
	var boxes []string
	for _, u := range backendUsers {
		boxes = append(boxes, fmt.Sprintf("%s@example.test=example.test/%s/", u, u))
	}
	extra := benchBackendExtra
	if inFlowDelay != "" {
		extra += "in_flow_delay = " + inFlowDelay + "\n"
	}
	return s.newInstance(b, "main.cf.backend", instanceData{
		Name: name, Port: freePort(b), Mailboxes: strings.Join(boxes, ", "),
		MailUID: s.nobodyUID, MailGID: s.nogroupGID,
	}, extra, "")
}

// kickQmgr wakes the instance's queue manager (postkick ... qmgr W) and
// gives it a moment. A woken qmgr refills the flow-control pool to
// default_process_limit (100) tokens, as it does whenever mail arrives.
// smtpd takes a token when it opens a queue file, at the first accepted
// RCPT of a transaction; one that ends without DATA (a callout for an
// existing user) never wakes qmgr, so the token is not made up for.
func (in *instance) kickQmgr(b testing.TB) {
	b.Helper()
	postkick := lookPath("postkick")
	if postkick == "" {
		b.Fatal("postkick (part of postfix) not found")
	}
	out, err := exec.Command(postkick, "-c", in.path("etc"), "public", "qmgr", "W").CombinedOutput()
	// postkick writes the trigger, then a NUL byte; qmgr may have read
	// the trigger and closed the connection before the second write, and
	// postkick dies of SIGPIPE: the trigger got through.
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGPIPE {
			err = nil
		}
	}
	if err != nil {
		b.Fatalf("%s: postkick: %v\n%s", in.name, err, out)
	}
	time.Sleep(100 * time.Millisecond)
}

// benchCalloutdConfig is calloutd with the shipped defaults
// (contrib/calloutd.toml: request_timeout 30s, memory cache, 2h negative
// and 24h positive lifetimes), info logging (a line per verdict) to a file,
// and one route to the backend.
func benchCalloutdConfig(listen, logFile string, backendPort int) string {
	return fmt.Sprintf(`# calloutd for the e2e benchmarks (generated)
listen = [%q]
metrics_listen = ""
admin_socket = ""

[log]
level = "info"
file = %q

[callout]
helo_name = "calloutd.bench.test"

[[route]]
name = "backend"
domains = ["example.test"]
servers = ["127.0.0.1:%d"]
`, listen, logFile, backendPort)
}

func startBenchCalloutd(b testing.TB, s *suite, name, listen string, backendPort int) {
	b.Helper()
	s.startCalloutdConfig(b, name, listen, func(logFile string) string {
		return benchCalloutdConfig(listen, logFile, backendPort)
	})
}

// A verdict that takes longer than stallThreshold waited in the backend's
// flow control (in_flow_delay, 1s by default; a callout to Postfix on
// loopback otherwise takes a few milliseconds). After maxStalls of them a
// round stops measuring: each further one would only add another second.
const (
	stallThreshold = 500 * time.Millisecond
	maxStalls      = 10
)

// BenchmarkPolicyBackendPostfix times one policy request to calloutd over
// TCP, as smtpd sends it, with a real Postfix as the backend.
//
//   - fresh: a new address each time, so each verdict is a callout (one
//     RCPT TO in calloutd's pooled session and its one transaction). "unknown"
//     addresses get 550 5.1.1 at RCPT; "valid" ones 250. Each against a
//     backend with Postfix's default in_flow_delay (1s) and one with 0s.
//     Every round (each b.N, each -count) starts with the backend's
//     flow-control pool full (kickQmgr), as after the backend took in a
//     message; a valid recipient's callout takes a token from it.
//   - cached: the same address every time, answered from calloutd's cache.
func BenchmarkPolicyBackendPostfix(b *testing.B) {
	s := newSuite(b)
	flows := []struct{ name, delay string }{
		{"in_flow_delay=1s", ""}, // Postfix's default
		{"in_flow_delay=0s", "0s"},
	}
	backends := make([]*instance, len(flows))
	for i, f := range flows {
		backends[i] = benchBackend(b, s, fmt.Sprintf("backend-%d", i), f.delay)
	}
	startAll(b, backends...)
	clients := make([]*policyClient, len(flows))
	for i := range flows {
		listen := fmt.Sprintf("127.0.0.1:%d", freePort(b))
		startBenchCalloutd(b, s, fmt.Sprintf("calloutd-%d", i), listen, backends[i].port)
		clients[i] = dialPolicy(b, listen)
	}

	b.Run("fresh", func(b *testing.B) {
		// unknown first: if it took flow-control tokens, valid would
		// start with fewer, and show it.
		for _, kind := range []struct {
			name string
			addr func() string
			want func(string) bool
		}{
			{"unknown", newUnknown, isFreshReject},
			{"valid", newValid, isDunno},
		} {
			b.Run(kind.name, func(b *testing.B) {
				for i, f := range flows {
					b.Run(f.name, func(b *testing.B) {
						p := clients[i]
						backends[i].kickQmgr(b)
						lat := make(latencies, 0, b.N)
						stalls := 0
						b.ResetTimer()
						for n := range b.N {
							if stalls == maxStalls {
								break
							}
							rcpt := kind.addr()
							ans, d := p.ask(b, rcpt)
							if !kind.want(ans) {
								b.Fatalf("%s: answer %q", rcpt, ans)
							}
							lat = append(lat, d)
							if d >= stallThreshold {
								if stalls == 0 {
									b.Logf("%s: first stall at fresh verdict #%d of a round of %d: %v", backends[i].name, n+1, b.N, roundDur(d))
								}
								stalls++
							}
						}
						b.StopTimer()
						lat.report(b)
						b.ReportMetric(float64(stalls), "stalls")
					})
				}
			})
		}
	})

	// A verifier that keeps sessions open must never run into the
	// backend's error limits (smtpd_soft/hard_error_limit).
	for _, be := range backends {
		if log := be.maillog(); strings.Contains(log, "too many errors") {
			b.Errorf("%s disconnected calloutd for too many errors:\n%s", be.name, tail(be.path("log/maillog"), 20))
		}
	}

	b.Run("cached", func(b *testing.B) {
		for _, c := range []struct {
			name, rcpt string
			want       func(string) bool
		}{
			{"unknown", "nobody@example.test", isCachedReject},
			{"valid", "alice@example.test", isDunno},
		} {
			b.Run(c.name, func(b *testing.B) {
				// The backend without flow control: fresh/valid has
				// drained the other's, and alice's first verdict
				// would wait for it.
				p := clients[1]
				p.ask(b, c.rcpt) // the verdict, into the cache
				lat := make(latencies, 0, b.N)
				b.ResetTimer()
				for range b.N {
					ans, d := p.ask(b, c.rcpt)
					if !c.want(ans) {
						b.Fatalf("%s: answer %q", c.rcpt, ans)
					}
					lat = append(lat, d)
				}
				b.StopTimer()
				lat.report(b)
			})
		}
	})
}

func isDunno(ans string) bool { return ans == "action=DUNNO\n\n" }

func isFreshReject(ans string) bool {
	return strings.HasPrefix(ans, "action=550 5.1.1 ") && !strings.Contains(ans, "(cached verdict)")
}

func isCachedReject(ans string) bool {
	return strings.HasPrefix(ans, "action=550 5.1.1 ") && strings.HasSuffix(ans, " (cached verdict)\n\n")
}

// verifyFrontExtra makes a front verify recipients with Postfix's own
// address verification instead of calloutd. Everything else is left at
// Postfix's defaults: address_verify_poll_delay 3s and poll_count 3,
// unverified_recipient_reject_code 450. The verify(8) service is in
// testdata/master.cf.
const verifyFrontExtra = `smtpd_recipient_restrictions =
    reject_unauth_destination,
    reject_unverified_recipient
address_verify_map = btree:$data_directory/verify_cache
`

// maxFirstContacts bounds how many first contacts reject_unverified_recipient
// gets per benchmark round: each takes about 3s.
const maxFirstContacts = 5

// BenchmarkFrontRCPT times what a sender sees: RCPT TO through a front
// Postfix (the reply, not the session around it), for a recipient asked
// about for the first time and for one asked about before, with two fronts
// relaying example.test to the same backend:
//
//   - calloutd: contrib/postfix/main.cf.inet, calloutd behind
//     check_policy_service.
//   - reject_unverified_recipient: Postfix's own address verification, the
//     verify(8) service sending probes through the queue. Its first
//     contacts are capped at maxFirstContacts per round (see "measured").
//
// The backend has in_flow_delay = 0s: the benchmark measures latency, not
// how many transactions the backend's flow control lets through (which
// BenchmarkPolicyBackendPostfix/fresh/valid shows, and which would slow
// both fronts alike: each of Postfix's probes is a transaction too). The
// fronts keep the default, and every round starts with their pools full.
func BenchmarkFrontRCPT(b *testing.B) {
	s := newSuite(b)
	backend := benchBackend(b, s, "backend", "0s")
	cdListen := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	fronts := map[string]*instance{
		"calloutd": s.newInstance(b, "main.cf.front", instanceData{
			Name: "front-calloutd", Port: freePort(b), BackendPort: backend.port, HungPort: freePort(b),
			Snippet: "main.cf.inet",
		}, snippet(b, "main.cf.inet", "inet:127.0.0.1:10040", "inet:"+cdListen), ""),
		"reject_unverified_recipient": s.newInstance(b, "main.cf.front", instanceData{
			Name: "front-verify", Port: freePort(b), BackendPort: backend.port, HungPort: freePort(b),
			Snippet: "(none: reject_unverified_recipient, from e2e/bench_test.go)",
		}, verifyFrontExtra, ""),
	}
	startAll(b, backend, fronts["calloutd"], fronts["reject_unverified_recipient"])
	startBenchCalloutd(b, s, "calloutd", cdListen, backend.port)

	// The mean RCPT of each front and step ("calloutd/first/valid"), for
	// the ratios.
	means := map[string]time.Duration{}

	type step struct {
		name  string
		addr  func() string // a new address each time, or the same
		codes []int         // replies that are right
		limit int           // at most this many per round; 0: b.N
	}
	same := func(a string) func() string { return func() string { return a } }
	plans := []struct {
		front string
		steps []step
	}{
		{"calloutd", []step{
			{"first/valid", newValid, []int{250}, 0},
			{"first/unknown", newUnknown, []int{550}, 0},
			{"cached/valid", same("alice@example.test"), []int{250}, 0},
			{"cached/unknown", same("nobody@example.test"), []int{550}, 0},
		}},
		// 450 for a valid recipient is "Address verification in
		// progress": the probe took longer than the polls.
		{"reject_unverified_recipient", []step{
			{"first/valid", newValid, []int{250, 450}, maxFirstContacts},
			{"first/unknown", newUnknown, []int{450}, maxFirstContacts},
			{"cached/valid", same("bob@example.test"), []int{250}, 0},
			{"cached/unknown", same("nobody2@example.test"), []int{450}, 0},
		}},
	}
	for _, plan := range plans {
		f := fronts[plan.front]
		b.Run(plan.front, func(b *testing.B) {
			for _, st := range plan.steps {
				b.Run(st.name, func(b *testing.B) {
					// The front's pool too: each session of the
					// client takes a token at its first accepted
					// RCPT, and the rounds of cached/valid make many.
					f.kickQmgr(b)
					c := newFrontClient(b, f.name, f.port)
					if strings.HasPrefix(st.name, "cached/") {
						code, msg, d := c.rcpt(st.addr()) // first contact: into the cache
						if b.N == 1 {
							b.Logf("%s: first contact: %d %s (%v)", f.name, code, msg, roundDur(d))
						}
					}
					b.ResetTimer()
					n := b.N
					if st.limit > 0 {
						n = min(n, st.limit)
					}
					lat := make(latencies, 0, n)
					for i := range n {
						rcpt := st.addr()
						code, msg, d := c.rcpt(rcpt)
						if !slices.Contains(st.codes, code) {
							b.Fatalf("%s: RCPT TO:<%s>: %d %s (after %v), want %v", f.name, rcpt, code, msg, d, st.codes)
						}
						if i == 0 && b.N == 1 {
							b.Logf("%s: RCPT TO:<%s>: %d %s (%v)", f.name, rcpt, code, msg, roundDur(d))
						}
						if code == 450 && strings.Contains(msg, "in progress") {
							b.Logf("%s: RCPT TO:<%s>: %d %s (%v)", f.name, rcpt, code, msg, roundDur(d))
						}
						lat = append(lat, d)
					}
					b.StopTimer()
					lat.report(b)
					// How many times calloutd's time this is, when the
					// same step of the calloutd front ran before.
					means[plan.front+"/"+st.name] = lat.mean()
					if cd := means["calloutd/"+st.name]; plan.front != "calloutd" && cd > 0 {
						b.ReportMetric(float64(lat.mean())/float64(cd), "x-calloutd")
					}
				})
			}
		})
	}
}
