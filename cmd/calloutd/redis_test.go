package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/redistest"
	"github.com/calloutd/calloutd/internal/smtptest"
)

// Answers of the policy server, as Postfix reads them.
const (
	answerDunno     = "action=DUNNO\n\n"
	answerUnknown   = "action=550 5.1.1 User unknown in local recipient table\n\n"
	answerUnknownC  = "action=550 5.1.1 User unknown in local recipient table (cached verdict)\n\n"
	sharedNegTTL    = 10 * time.Minute
	sharedNegTTLStr = "10m"
)

// sharedNode is one calloutd process of TestTwoDaemonsShareRedis, with what
// it wrote to standard error.
type sharedNode struct {
	name    string
	config  string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error // set before exited is closed

	policy  string // TCP address of its policy listener
	metrics string // address of its metrics listener
	conn    net.Conn
	br      *bufio.Reader

	mu      sync.Mutex
	partial []byte
	lines   []string         // every line, as written
	logs    []map[string]any // the lines that are JSON
}

// Write implements io.Writer for the process's standard error.
func (n *sharedNode) Write(p []byte) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.partial = append(n.partial, p...)
	for {
		i := bytes.IndexByte(n.partial, '\n')
		if i < 0 {
			break
		}
		line := string(n.partial[:i])
		n.partial = n.partial[i+1:]
		n.lines = append(n.lines, line)
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			n.logs = append(n.logs, m)
		}
	}
	return len(p), nil
}

// findLog returns the first log record whose message is msg.
func (n *sharedNode) findLog(msg string) (map[string]any, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.logs {
		if m["msg"] == msg {
			return m, true
		}
	}
	return nil, false
}

// countLogs counts the log records whose message starts with prefix.
func (n *sharedNode) countLogs(prefix string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.logs {
		if s, _ := m["msg"].(string); strings.HasPrefix(s, prefix) {
			c++
		}
	}
	return c
}

// logsMatching returns the raw log lines whose message starts with prefix.
func (n *sharedNode) logsMatching(prefix string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, l := range n.lines {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			if s, _ := m["msg"].(string); strings.HasPrefix(s, prefix) {
				out = append(out, l)
			}
		}
	}
	return out
}

func (n *sharedNode) stderr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.lines, "\n") + string(n.partial)
}

func (n *sharedNode) running() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// waitLog waits up to limit for a log record with message msg.
func (n *sharedNode) waitLog(t *testing.T, msg string, limit time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if m, ok := n.findLog(msg); ok {
			return m
		}
		if !n.running() {
			t.Fatalf("%s: calloutd exited (%v) before logging %q", n.name, n.waitErr, msg)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q log line within %v", n.name, msg, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLogCount waits up to limit until count log records start with prefix.
func (n *sharedNode) waitLogCount(t *testing.T, prefix string, count int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for n.countLogs(prefix) < count {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d log lines starting %q within %v, want %d", n.name, n.countLogs(prefix), prefix, limit, count)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startSharedNode runs `bin serve` with cfg in a directory of its own and
// waits until its listeners serve.
func startSharedNode(t *testing.T, bin, name, cfg string) *sharedNode {
	t.Helper()
	dir := t.TempDir()
	n := &sharedNode{name: name, exited: make(chan struct{})}
	n.config = writeConfig(t, dir, strings.ReplaceAll(cfg, "{{DIR}}", dir))
	n.cmd = exec.Command(bin, "serve", "-config", n.config)
	n.cmd.Stderr = n
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		n.waitErr = n.cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(func() {
		if n.running() {
			n.cmd.Process.Kill()
			<-n.exited
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", n.name, n.stderr())
		}
	})
	n.policy = n.waitLog(t, "listening for policy requests", 10*time.Second)["addr"].(string)
	n.metrics = n.waitLog(t, "serving metrics", 10*time.Second)["addr"].(string)
	n.waitLog(t, "admin socket ready", 10*time.Second)
	c, err := net.Dial("tcp", n.policy)
	if err != nil {
		t.Fatal(err)
	}
	n.conn, n.br = c, bufio.NewReader(c)
	return n
}

// askPolicyOn sends one RCPT-state policy request for rcpt on c, as Postfix
// writes it, and returns the answer up to and including its blank line.
func askPolicyOn(c net.Conn, br *bufio.Reader, rcpt string) (string, error) {
	req := "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n" +
		"client_address=203.0.113.9\nclient_name=unknown\nhelo_name=client.test\nsender=tester@client.test\n" +
		"recipient=" + rcpt + "\nrecipient_count=0\nqueue_id=\ninstance=1.2.3\nsize=0\n\n"
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return "", err
	}
	var b strings.Builder
	for !strings.HasSuffix(b.String(), "\n\n") {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), fmt.Errorf("read answer: %w (got %q)", err, b.String())
		}
	}
	return b.String(), nil
}

// ask asks the node about rcpt on its long-lived policy connection.
func (n *sharedNode) ask(t *testing.T, rcpt string) string {
	t.Helper()
	got, err := askPolicyOn(n.conn, n.br, rcpt)
	if err != nil {
		t.Fatalf("%s: asking about %s: %v", n.name, rcpt, err)
	}
	return got
}

// get fetches a path of the node's metrics listener and returns the body.
func (n *sharedNode) get(t *testing.T, path string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + n.metrics + path)
	if err != nil {
		t.Fatalf("%s: GET %s: %v", n.name, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: GET %s: %v", n.name, path, err)
	}
	return string(body)
}

// metricValue returns the value of the sample written exactly as series
// ("name" or `name{label="v"}`) in body, and whether there was one.
func metricValue(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// rcptBackend is an SMTP backend that counts RCPTs by address and can be
// slow for some of them.
type rcptBackend struct {
	*smtptest.Server
	mu   sync.Mutex
	seen map[string]int
}

func (b *rcptBackend) rcpts(addr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seen[strings.ToLower(addr)]
}

// redisGetCalls is how many GET commands Redis has served since it started.
func redisGetCalls(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	for _, line := range strings.Split(srv.CLI("INFO", "commandstats"), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_get:calls="); ok {
			n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			if err != nil {
				t.Fatalf("INFO commandstats: %q: %v", line, err)
			}
			return n
		}
	}
	return 0
}

// storedVerdict reads the verdict of key from Redis with redis-cli.
func storedVerdict(t *testing.T, srv *redistest.Server, key string) (map[string]any, string, error) {
	t.Helper()
	raw := srv.CLI("GET", key)
	var v map[string]any
	err := json.Unmarshal([]byte(raw), &v)
	return v, raw, err
}

// TestTwoDaemonsShareRedis runs two calloutd processes against one real
// Redis and one SMTP backend: verdicts are shared, redis-cli DEL is
// honoured by both local layers, concurrent requests on both nodes for a new
// address make one callout, lookup and flush work on Redis directly, an
// outage degrades both nodes to callouts and their own memory and they
// recover by themselves, and a value calloutd cannot read is replaced.
func TestTwoDaemonsShareRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary against redis-server")
	}
	rdb := redistest.Start(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "calloutd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	const slowAddr = "slow@example.test"
	known := smtptest.Users("alice@example.test", slowAddr, "v1@example.test", "v2@example.test")
	backend := &rcptBackend{seen: map[string]int{}}
	backend.Server = smtptest.NewServer(t, smtptest.Behavior{Rcpt: func(addr string) string {
		backend.mu.Lock()
		backend.seen[strings.ToLower(addr)]++
		backend.mu.Unlock()
		if strings.EqualFold(addr, slowAddr) {
			time.Sleep(300 * time.Millisecond)
		}
		return known(addr)
	}})
	// A backend that refuses connections: its verdicts are "unreachable".
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadServer := l.Addr().String()
	l.Close()

	cfg := fmt.Sprintf(`listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
admin_socket = "{{DIR}}/run/admin.sock"
[log]
format = "json"
[callout]
helo_name = "gw.test"
request_timeout = "5s"
[cache]
store = "redis"
positive_ttl = "1h"
negative_ttl = %q
[cache.redis]
addrs = [%q]
dial_timeout = "1s"
read_timeout = "1s"
[[route]]
domains = ["example.test"]
servers = [%q]
[[route]]
name = "dead"
domains = ["down.test"]
servers = [%q]
`, sharedNegTTLStr, rdb.Addr(), backend.Addr(), deadServer)
	a := startSharedNode(t, bin, "node A", cfg)
	b := startSharedNode(t, bin, "node B", cfg)

	// expect asks node about rcpt and checks the answer and how many RCPTs
	// for rcpt the backend received because of it.
	expect := func(step string, node *sharedNode, rcpt, want string, newRcpts int) {
		t.Helper()
		before, totalBefore := backend.rcpts(rcpt), backend.Count("RCPT")
		got := node.ask(t, rcpt)
		if got != want {
			t.Errorf("%s: %s about %s answered %q, want %q", step, node.name, rcpt, got, want)
		}
		if d := backend.rcpts(rcpt) - before; d != newRcpts {
			t.Errorf("%s: %s about %s made %d RCPTs at the backend, want %d", step, node.name, rcpt, d, newRcpts)
		}
		if d := backend.Count("RCPT") - totalBefore; d != newRcpts {
			t.Errorf("%s: %s about %s: the backend saw %d RCPTs in all, want %d", step, node.name, rcpt, d, newRcpts)
		}
	}
	for _, n := range []*sharedNode{a, b} {
		if body := n.get(t, "/readyz"); !strings.Contains(body, "store: redis, reachable") {
			t.Errorf("%s: /readyz at start:\n%s", n.name, body)
		}
		if got := n.countLogs("redis unreachable"); got != 0 {
			t.Errorf("%s: %d \"redis unreachable\" lines with Redis up", n.name, got)
		}
	}

	// 1. A verdict reached on one node is served by the other.
	expect("shared valid", a, "alice@example.test", answerDunno, 1)
	expect("shared valid", b, "alice@example.test", answerDunno, 0)
	expect("shared unknown", a, "nobody@example.test", answerUnknown, 1)
	expect("shared unknown", b, "nobody@example.test", answerUnknownC, 0)
	const nobodyKey = "calloutd:rcpt:nobody@example.test"
	ttl, err := strconv.Atoi(rdb.CLI("TTL", nobodyKey))
	if err != nil || ttl <= 0 || time.Duration(ttl)*time.Second > sharedNegTTL || time.Duration(ttl)*time.Second < sharedNegTTL-30*time.Second {
		t.Errorf("TTL %s = %d (%v), want within (%v - 30s, %v]", nobodyKey, ttl, err, sharedNegTTL, sharedNegTTL)
	}
	if v, raw, err := storedVerdict(t, rdb, nobodyKey); err != nil || v["verdict"] != "unknown" || v["v"] != float64(1) {
		t.Errorf("GET %s = %q (%v), want JSON with \"v\":1 and \"verdict\":\"unknown\"", nobodyKey, raw, err)
	}
	// An unreachable verdict describes this node's network: never shared.
	expect("unreachable", a, "someone@down.test", answerDunno, 0)
	if got := rdb.CLI("EXISTS", "calloutd:rcpt:someone@down.test"); got != "0" {
		t.Errorf("an unreachable verdict was written to Redis: EXISTS = %s", got)
	}
	if got := rdb.CLI("--scan", "--pattern", "calloutd:rcpt:*@down.test"); got != "" {
		t.Errorf("unreachable verdicts in Redis: %q", got)
	}

	// 2. redis-cli DEL reaches both local layers within 100 ms. First both
	// nodes read the verdict back, which puts it in their local layer, and
	// show that they then answer without asking Redis.
	time.Sleep(50 * time.Millisecond) // the invalidations of the first write are in
	for _, n := range []*sharedNode{a, b} {
		expect("warm local layer", n, "nobody@example.test", answerUnknownC, 0)
	}
	gets := redisGetCalls(t, rdb)
	for _, n := range []*sharedNode{a, b, a, b} {
		expect("local layer", n, "nobody@example.test", answerUnknownC, 0)
	}
	if d := redisGetCalls(t, rdb) - gets; d != 0 {
		t.Errorf("repeated cached answers made %d GETs at Redis, want 0 (the local layer answers)", d)
	}
	for _, order := range [][2]*sharedNode{{b, a}, {a, b}} {
		first, second := order[0], order[1]
		// Both local layers hold the verdict again.
		expect("rewarm", first, "nobody@example.test", answerUnknownC, 0)
		expect("rewarm", second, "nobody@example.test", answerUnknownC, 0)
		if got := rdb.CLI("DEL", nobodyKey); got != "1" {
			t.Fatalf("DEL %s = %q, want 1", nobodyKey, got)
		}
		time.Sleep(100 * time.Millisecond)
		expect("after DEL, "+first.name+" first", first, "nobody@example.test", answerUnknown, 1)
		expect("after DEL, "+first.name+" first", second, "nobody@example.test", answerUnknownC, 0)
	}

	// 3. Concurrent requests on both nodes for a new address: one callout.
	const perNode = 5
	type result struct {
		node, answer string
		err          error
	}
	results := make(chan result, 2*perNode)
	start := make(chan struct{})
	var wg sync.WaitGroup
	slowBefore := backend.Count("RCPT")
	for _, n := range []*sharedNode{a, b} {
		for range perNode {
			c, err := net.Dial("tcp", n.policy)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				got, err := askPolicyOn(c, bufio.NewReader(c), slowAddr)
				results <- result{n.name, got, err}
			}()
		}
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	close(results)
	elapsed := time.Since(t0)
	for r := range results {
		if r.err != nil || r.answer != answerDunno {
			t.Errorf("coalescing: %s answered %q (%v), want %q", r.node, r.answer, r.err, answerDunno)
		}
	}
	if got := backend.rcpts(slowAddr); got != 1 {
		t.Errorf("coalescing: %d concurrent requests on two nodes made %d RCPTs for %s, want 1", 2*perNode, got, slowAddr)
	}
	if got := backend.Count("RCPT") - slowBefore; got != 1 {
		t.Errorf("coalescing: the backend saw %d RCPTs, want 1", got)
	}
	t.Logf("coalescing: %d requests answered in %v", 2*perNode, elapsed.Round(time.Millisecond))

	// 4. lookup and flush read and change Redis directly.
	code, out, errOut := calloutd("lookup", "-config", a.config, "nobody@example.test")
	if code != 0 || !strings.HasPrefix(out, "nobody@example.test\n  verdict   unknown\n") ||
		!strings.Contains(out, "  reply     550 5.1.1 User unknown in local recipient table\n") ||
		!strings.Contains(out, "  stored    redis key "+nobodyKey+"\n") {
		t.Errorf("lookup: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = calloutd("lookup", "-config", b.config, "Nobody@Example.Test")
	if code != 0 || !strings.Contains(out, "  stored    redis key "+nobodyKey+"\n") {
		t.Errorf("lookup in other case: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	stored := strings.Fields(rdb.CLI("--scan", "--pattern", "calloutd:rcpt:*"))
	if len(stored) != 3 {
		t.Errorf("keys before flush: %q, want alice, nobody and %s", stored, slowAddr)
	}
	code, out, errOut = calloutd("flush", "-config", a.config, "@example.test")
	if want := fmt.Sprintf("removed %d cached verdict(s)\n", len(stored)); code != 0 || out != want || len(stored) < 1 {
		t.Errorf("flush @example.test: exit %d, stdout %q, stderr %q; want 0, %q", code, out, errOut, want)
	}
	if got := rdb.CLI("--scan", "--pattern", "calloutd:rcpt:*"); got != "" {
		t.Errorf("keys left after flush: %q", got)
	}
	code, out, _ = calloutd("lookup", "-config", a.config, "nobody@example.test")
	if code != 1 || out != "nobody@example.test: not cached\n" {
		t.Errorf("lookup after flush: exit %d, %q", code, out)
	}
	time.Sleep(100 * time.Millisecond)
	expect("after flush", b, "alice@example.test", answerDunno, 1)
	expect("after flush", a, "nobody@example.test", answerUnknown, 1)

	// 5. Redis dies: each node verifies by itself and keeps verdicts in its
	// own memory, says so once, and reports it.
	rdb.Kill()
	for _, n := range []*sharedNode{a, b} {
		expect("redis down", n, "alice@example.test", answerDunno, 1)
		expect("redis down", n, "v1@example.test", answerDunno, 1)
		expect("redis down", n, "gone@example.test", answerUnknown, 1)
	}
	for _, n := range []*sharedNode{a, b} {
		expect("redis down, again", n, "alice@example.test", answerDunno, 0)
		expect("redis down, again", n, "v1@example.test", answerDunno, 0)
		expect("redis down, again", n, "gone@example.test", answerUnknownC, 0)
	}
	for _, n := range []*sharedNode{a, b} {
		n.waitLogCount(t, "redis unreachable", 1, 5*time.Second)
		if body := n.get(t, "/readyz"); !strings.Contains(body, "store: redis, degraded") {
			t.Errorf("%s: /readyz with Redis down:\n%s", n.name, body)
		}
		body := n.get(t, "/metrics")
		if v, ok := metricValue(body, "calloutd_store_up"); !ok || v != 0 {
			t.Errorf("%s: calloutd_store_up = %v (found %v) with Redis down, want 0", n.name, v, ok)
		}
		errs := 0.0
		for _, op := range []string{"get", "lease", "set"} {
			v, _ := metricValue(body, `calloutd_redis_errors_total{op="`+op+`"}`)
			errs += v
		}
		if errs < 1 {
			t.Errorf("%s: no calloutd_redis_errors_total for get, lease or set with Redis down", n.name)
		}
		// One more request, then still one warning.
		expect("redis down, once more", n, "alice@example.test", answerDunno, 0)
		if got := n.countLogs("redis unreachable"); got != 1 {
			t.Errorf("%s: %d \"redis unreachable\" lines over one outage, want 1:\n%s", n.name, got,
				strings.Join(n.logsMatching("redis unreachable"), "\n"))
		}
	}

	// Redis returns, empty: both nodes find it by themselves.
	rdb.Restart()
	back := time.Now()
	for _, n := range []*sharedNode{a, b} {
		for {
			body := n.get(t, "/readyz")
			if strings.Contains(body, "store: redis, reachable") {
				break
			}
			if time.Since(back) > 15*time.Second {
				t.Fatalf("%s: /readyz 15s after Redis returned:\n%s", n.name, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("both nodes saw Redis back after %v", time.Since(back).Round(time.Millisecond))
	for _, n := range []*sharedNode{a, b} {
		n.waitLogCount(t, "redis reachable again", 1, 5*time.Second)
		if body := n.get(t, "/metrics"); !strings.Contains(body, "\ncalloutd_store_up 1\n") {
			t.Errorf("%s: calloutd_store_up is not 1 after Redis returned", n.name)
		}
	}
	expect("redis back", a, "v2@example.test", answerDunno, 1)
	expect("redis back", b, "v2@example.test", answerDunno, 0)
	if v, raw, err := storedVerdict(t, rdb, "calloutd:rcpt:v2@example.test"); err != nil || v["verdict"] != "valid" {
		t.Errorf("GET calloutd:rcpt:v2@example.test = %q (%v), want JSON with \"verdict\":\"valid\"", raw, err)
	}
	for _, n := range []*sharedNode{a, b} {
		if got := n.countLogs("redis reachable again"); got != 1 {
			t.Errorf("%s: %d \"redis reachable again\" lines, want 1", n.name, got)
		}
		if got := n.countLogs("redis unreachable"); got != 1 {
			t.Errorf("%s: %d \"redis unreachable\" lines after recovery, want 1:\n%s", n.name, got,
				strings.Join(n.logsMatching("redis unreachable"), "\n"))
		}
	}

	// 6. A value calloutd cannot read is a miss, and the new verdict
	// replaces it.
	const aliceKey = "calloutd:rcpt:alice@example.test"
	if got := rdb.CLI("SET", aliceKey, "garbage", "EX", "600"); got != "OK" {
		t.Fatalf("SET %s garbage = %q", aliceKey, got)
	}
	time.Sleep(100 * time.Millisecond)
	expect("corrupt value", a, "alice@example.test", answerDunno, 1)
	deadline := time.Now().Add(2 * time.Second)
	for {
		v, raw, err := storedVerdict(t, rdb, aliceKey)
		if err == nil && v["verdict"] == "valid" && v["v"] == float64(1) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("GET %s = %q (%v) 2s after the new verdict, want JSON with \"verdict\":\"valid\"", aliceKey, raw, err)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	expect("corrupt value replaced", b, "alice@example.test", answerDunno, 0)
	if v, _ := metricValue(a.get(t, "/metrics"), `calloutd_redis_errors_total{op="decode"}`); v < 1 {
		t.Errorf("node A: calloutd_redis_errors_total{op=\"decode\"} = %v after reading garbage, want >= 1", v)
	}

	// SIGTERM: both exit 0.
	for _, n := range []*sharedNode{a, b} {
		n.conn.Close()
		if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*sharedNode{a, b} {
		select {
		case <-n.exited:
			if n.waitErr != nil {
				t.Errorf("%s: exit after SIGTERM: %v, want status 0", n.name, n.waitErr)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s: no exit within 10s of SIGTERM", n.name)
		}
	}
}
