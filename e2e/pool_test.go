package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestPooledCalloutsAgainstDefaultPostfix: 400 new valid recipients, then
// 100 new unknown ones, verified through calloutd against a Postfix
// backend with every default (in_flow_delay = 1s, error and recipient
// limits): every answer right, the backend never disconnects calloutd for
// too many errors, and a handful of sessions serve all 500 verdicts. (Its
// timings, 0 stalls of 1 s against ~300 before the pool, are measured by
// BenchmarkPolicyBackendPostfix.)
func TestPooledCalloutsAgainstDefaultPostfix(t *testing.T) {
	s := newSuite(t)
	backend := benchBackend(t, s, "pool-backend", "")
	startAll(t, backend)
	backend.kickQmgr(t)
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startBenchCalloutd(t, s, "pool-calloutd", listen, backend.port)
	p := dialPolicy(t, listen)
	for i := range 500 {
		rcpt, want := newValid(), isDunno
		if i >= 400 {
			rcpt, want = newUnknown(), isFreshReject
		}
		if ans, _ := p.ask(t, rcpt); !want(ans) {
			t.Fatalf("verdict %d, %s: answer %q", i+1, rcpt, ans)
		}
	}
	log := backend.maillog()
	if strings.Contains(log, "too many errors") {
		t.Errorf("the backend disconnected calloutd for too many errors:\n%s", tail(backend.path("log/maillog"), 30))
	}
	// Valid verdicts share sessions; unknown ones take a new session
	// every 8 rejections (session_max_errors), before Postfix's soft
	// limit of 10.
	if n := strings.Count(log, "]: connect from "); n < 1 || n > 20 {
		t.Errorf("backend saw %d connections for 500 verdicts, want 1 to 20", n)
	}
	for _, bad := range []string{"improper command pipelining", "warning: Illegal address syntax"} {
		if strings.Contains(log, bad) {
			t.Errorf("backend log says %q", bad)
		}
	}
}
