package callout

import (
	"bufio"
	"context"
	"strings"
	"testing"

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
