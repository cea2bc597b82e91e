package e2e

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net"
	"net/textproto"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The clients and the statistics of the benchmarks in bench_test.go.

// policyClient speaks Postfix's policy protocol to calloutd over one TCP
// connection, as smtpd does: one connection serves many requests.
type policyClient struct {
	c  net.Conn
	br *bufio.Reader
}

func dialPolicy(b testing.TB, addr string) *policyClient {
	b.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return &policyClient{c: c, br: bufio.NewReader(c)}
}

// policyRequest is what Postfix 3.7 sends at RCPT (POSTFIX-NOTES), with
// the recipient to fill in.
const policyRequest = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n" +
	"client_address=203.0.113.9\nclient_name=unknown\nclient_port=58030\nreverse_client_name=unknown\n" +
	"server_address=127.0.0.1\nserver_port=2525\nhelo_name=client.bench.test\n" +
	"sender=tester@client.bench.test\nrecipient=%s\nrecipient_count=0\nqueue_id=\n" +
	"instance=6a4b.6b02d68e.ecb0e.0\nsize=0\netrn_domain=\nstress=\nsasl_method=\nsasl_username=\n" +
	"sasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\n" +
	"encryption_protocol=\nencryption_cipher=\nencryption_keysize=0\npolicy_context=\n\n"

// ask sends a request about rcpt and returns the answer (its lines, the
// blank line that ends it included) and the time from the request's first
// byte to the answer's last.
func (p *policyClient) ask(b testing.TB, rcpt string) (string, time.Duration) {
	req := fmt.Sprintf(policyRequest, rcpt)
	// Above calloutd's request_timeout (30s), so a verdict stuck in
	// Postfix's flow control shows as a slow answer, not an error.
	_ = p.c.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	if _, err := io.WriteString(p.c, req); err != nil {
		b.Fatalf("policy request for %s: %v", rcpt, err)
	}
	var ans strings.Builder
	for {
		line, err := p.br.ReadString('\n')
		ans.WriteString(line)
		if err != nil {
			b.Fatalf("policy answer for %s: %v (got %q)", rcpt, err, ans.String())
		}
		if line == "\n" {
			return ans.String(), time.Since(start)
		}
	}
}

// frontClient is a sender talking SMTP to a front Postfix: EHLO, MAIL FROM,
// then RCPT TO after RCPT TO in one transaction. Only RCPT TO is timed: it
// stops the benchmark's timer while it starts a session. It starts a new
// session before Postfix would start to punish this
// one: after smtpd_soft_error_limit (10) refused commands every reply of
// the session is delayed by smtpd_error_sleep_time (1s), and a transaction
// takes at most smtpd_recipient_limit (1000) recipients.
type frontClient struct {
	b       *testing.B
	name    string
	port    int
	nc      net.Conn
	c       *textproto.Conn
	rcpts   int // in this session
	refused int // in this session
}

const (
	sessionMaxRefused = 5   // half smtpd_soft_error_limit
	sessionMaxRcpts   = 900 // below smtpd_recipient_limit
)

func newFrontClient(b *testing.B, name string, port int) *frontClient {
	f := &frontClient{b: b, name: name, port: port}
	b.Cleanup(f.close)
	return f
}

// rcpt sends RCPT TO:<addr> and returns the reply's code, its text (lines
// joined by "\n", without the code) and how long it took to arrive.
func (f *frontClient) rcpt(addr string) (int, string, time.Duration) {
	f.b.Helper()
	if f.c == nil || f.refused >= sessionMaxRefused || f.rcpts >= sessionMaxRcpts {
		f.b.StopTimer()
		f.close()
		f.open()
		f.b.StartTimer()
	}
	_ = f.nc.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	code, msg := f.cmd("RCPT TO:<%s>", addr)
	d := time.Since(start)
	f.rcpts++
	if code >= 400 {
		f.refused++
	}
	return code, msg, d
}

func (f *frontClient) open() {
	f.b.Helper()
	nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", f.port), 5*time.Second)
	if err != nil {
		f.b.Fatalf("%s: %v", f.name, err)
	}
	f.nc, f.c, f.rcpts, f.refused = nc, textproto.NewConn(nc), 0, 0
	_ = nc.SetDeadline(time.Now().Add(60 * time.Second))
	if _, _, err := f.c.ReadResponse(220); err != nil {
		f.b.Fatalf("%s: greeting: %v", f.name, err)
	}
	for _, c := range []struct {
		cmd  string
		want int
	}{{"EHLO client.bench.test", 250}, {"MAIL FROM:<sender@client.bench.test>", 250}} {
		if code, msg := f.cmd("%s", c.cmd); code != c.want {
			f.b.Fatalf("%s: %s: %d %s", f.name, c.cmd, code, msg)
		}
	}
}

func (f *frontClient) cmd(format string, args ...any) (int, string) {
	f.b.Helper()
	id, err := f.c.Cmd(format, args...)
	if err != nil {
		f.b.Fatalf("%s: sending %q: %v", f.name, fmt.Sprintf(format, args...), err)
	}
	f.c.StartResponse(id)
	defer f.c.EndResponse(id)
	code, msg, err := f.c.ReadResponse(0) // 0: any code
	if err != nil {
		f.b.Fatalf("%s: reply to %q: %v", f.name, fmt.Sprintf(format, args...), err)
	}
	return code, msg
}

// close says QUIT, briefly, and closes the connection.
func (f *frontClient) close() {
	if f.c == nil {
		return
	}
	_ = f.nc.SetDeadline(time.Now().Add(2 * time.Second))
	if id, err := f.c.Cmd("QUIT"); err == nil {
		f.c.StartResponse(id)
		_, _, _ = f.c.ReadResponse(221)
		f.c.EndResponse(id)
	}
	f.c.Close()
	f.c, f.nc = nil, nil
}

// benchSeq numbers the addresses the benchmarks make up, so that no two
// are alike in a run: a "fresh" verdict is never in any cache.
var benchSeq atomic.Int64

// newValid returns an address the benchmark backend accepts (its
// virtual_alias_maps match ^v[0-9]+@), newUnknown one it rejects.
func newValid() string   { return fmt.Sprintf("v%d@example.test", benchSeq.Add(1)) }
func newUnknown() string { return fmt.Sprintf("nobody%d@example.test", benchSeq.Add(1)) }

// roundDur rounds d for a log line: to the microsecond below a second,
// else to the millisecond.
func roundDur(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

// latencies are the durations of the operations a benchmark measured.
type latencies []time.Duration

// pct returns the p-th percentile, nearest rank.
func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func (l latencies) mean() time.Duration {
	if len(l) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range l {
		sum += d
	}
	return sum / time.Duration(len(l))
}

// report adds p50-ms, p99-ms and max-ms to b's result. ns/op stays the
// framework's (the timer covers the whole loop) unless fewer operations
// than b.N were measured: then ns/op is the mean of those measured, and
// "measured" says how many there were.
func (l latencies) report(b *testing.B) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(l.pct(50)), "p50-ms")
	b.ReportMetric(ms(l.pct(99)), "p99-ms")
	b.ReportMetric(ms(l.pct(100)), "max-ms")
	if len(l) < b.N {
		b.ReportMetric(float64(l.mean().Nanoseconds()), "ns/op")
		b.ReportMetric(float64(len(l)), "measured")
	}
}
