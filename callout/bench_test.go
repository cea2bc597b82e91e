package callout

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calloutd/calloutd/internal/smtptest"
)

// BenchmarkProbe is one whole probe (connect, greeting, EHLO, MAIL, RCPT,
// QUIT) against a local smtptest server: the floor of a fresh callout's
// cost, without network latency.
func BenchmarkProbe(b *testing.B) {
	srv := smtptest.NewServer(b, smtptest.Behavior{Rcpt: smtptest.Users("bob@example.test")})
	c := newClient()
	rcpt := mustParse(b, "bob@example.test")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		res, err := c.Probe(ctx, nil, srv.Addr(), rcpt)
		if err != nil || res.Verdict != Valid {
			b.Fatalf("Probe = %v, %v", res.Verdict, err)
		}
	}
}

// BenchmarkReadReply parses a typical multi-line EHLO reply.
func BenchmarkReadReply(b *testing.B) {
	const ehlo = "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n" +
		"250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250 SMTPUTF8\r\n"
	sr := strings.NewReader(ehlo)
	br := bufio.NewReaderSize(sr, 1024)
	b.SetBytes(int64(len(ehlo)))
	b.ReportAllocs()
	for b.Loop() {
		sr.Reset(ehlo)
		br.Reset(sr)
		if r, err := ReadReply(br); err != nil || len(r.Lines) != 10 {
			b.Fatalf("ReadReply = %v, %v", r, err)
		}
	}
}

// latencyProxy forwards TCP connections to upstream, delivering every
// chunk oneWay after it was read, in each direction, in order: a link of
// RTT 2*oneWay. The TCP handshake with the proxy itself is instant (it is
// on loopback), so connecting costs no RTT here; on a real link it costs
// one more than these figures.
func latencyProxy(b *testing.B, upstream string, oneWay time.Duration) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { l.Close(); wg.Wait() })
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		type chunk struct {
			data []byte
			due  time.Time
		}
		q := make(chan chunk, 1024)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer dst.Close()
			for c := range q {
				time.Sleep(time.Until(c.due))
				if _, err := dst.Write(c.data); err != nil {
					return
				}
			}
		}()
		defer close(q)
		buf := make([]byte, 4096)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(oneWay)}
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
	return l.Addr().String()
}

// BenchmarkVerdictRTT measures one probe through a 20 ms RTT link, in
// round trips: a fresh session per probe as Client makes it (greeting,
// EHLO, MAIL, RCPT, and QUIT's reply awaited), the pool's first probe to a
// server (greeting, EHLO, then MAIL and RCPT pipelined in one write), and
// a probe on a pooled session (RCPT alone).
func BenchmarkVerdictRTT(b *testing.B) {
	const oneWay = 10 * time.Millisecond
	rtt := 2 * oneWay
	srv := smtptest.NewServer(b, smtptest.Behavior{})
	addr := latencyProxy(b, srv.Addr(), oneWay)
	rcpt := mustParse(b, "bob@example.test")
	ctx := context.Background()
	measure := func(f func() error) float64 {
		var total time.Duration
		const n = 10
		for range n {
			start := time.Now()
			if err := f(); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
		}
		return float64(total) / n / float64(rtt)
	}
	c := newClient()
	client := measure(func() error { _, err := c.Probe(ctx, nil, addr, rcpt); return err })
	var pools []*Pool // closed after the timing: Close waits for QUIT
	cold := measure(func() error {
		p := NewPool(c, PoolSettings{})
		pools = append(pools, p)
		_, err := p.Probe(ctx, nil, addr, rcpt)
		return err
	})
	for _, p := range pools {
		p.Close()
	}
	p := NewPool(c, PoolSettings{})
	defer p.Close()
	if _, err := p.Probe(ctx, nil, addr, rcpt); err != nil {
		b.Fatal(err)
	}
	warm := measure(func() error { _, err := p.Probe(ctx, nil, addr, rcpt); return err })
	for b.Loop() {
	}
	b.ReportMetric(client, "client-RTT")
	b.ReportMetric(cold, "cold-RTT")
	b.ReportMetric(warm, "warm-RTT")
}
