package callout

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// checkGoroutines fails t if goroutines started during the test are still
// running when it ends, after its other cleanups (smtptest servers closing)
// have run. Goroutines that finish a little late (a context.AfterFunc, a
// connection's last read) are given a couple of seconds. Tests that use it
// must not run in parallel with tests that start goroutines.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := map[string]bool{}
	for _, g := range goroutines() {
		before[goroutineID(g)] = true
	}
	// Registered first, so it runs last.
	t.Cleanup(func() {
		var leaked []string
		for range 300 {
			leaked = leaked[:0]
			for _, g := range goroutines() {
				if !before[goroutineID(g)] && !ignoredGoroutine(g) {
					leaked = append(leaked, g)
				}
			}
			if len(leaked) == 0 {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Errorf("%d goroutines leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	})
}

// goroutines returns the stack of every goroutine.
func goroutines() []string {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(strings.TrimSpace(string(buf[:n])), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// goroutineID returns "goroutine 42" from a stack's first line.
func goroutineID(stack string) string {
	id, _, _ := strings.Cut(stack, " [")
	return id
}

// ignoredGoroutine reports goroutines of the test framework and the runtime.
func ignoredGoroutine(stack string) bool {
	for _, s := range []string{"testing.tRunner", "testing.(*T).Run", "testing.runFuzzing",
		"testing.(*F).Fuzz", "os/signal.signal_recv", "runtime.ensureSigM", "runtime/trace"} {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}
