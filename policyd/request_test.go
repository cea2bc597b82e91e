package policyd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// realRequestFile is a request a Postfix 3.7.11 smtpd sent at RCPT, byte for
// byte (see /work/shared/POSTFIX-NOTES.md).
const realRequestFile = "testdata/postfix-3.7-rcpt.txt"

func realRequest(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile(realRequestFile)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// realParsed is what ReadRequest must make of realRequestFile: every field
// Request has, empty ones included.
var realParsed = Request{
	Request:        "smtpd_access_policy",
	ProtocolState:  "RCPT",
	ProtocolName:   "ESMTP",
	ClientAddress:  "127.0.0.1",
	ClientName:     "unknown",
	ClientPort:     "58030",
	HeloName:       "client.harness.test",
	Sender:         "tester@client.harness.test",
	Recipient:      "nobody@example.test",
	RecipientCount: "0",
	QueueID:        "",
	Instance:       "6a4b.6b02d68e.ecb0e.0",
	SASLMethod:     "",
	SASLUsername:   "",
	ServerAddress:  "127.0.0.1",
	ServerPort:     "2525",
	PolicyContext:  "",
}

// readAll reads requests from in until ReadRequest fails, and returns the
// requests and that error.
func readAll(in io.Reader, bufSize int) ([]Request, error) {
	br := bufio.NewReaderSize(in, bufSize)
	var got []Request
	for {
		r, err := ReadRequest(br)
		if err != nil {
			return got, err
		}
		got = append(got, *r)
	}
}

// rcpt is a minimal request for recipient a.
func rcpt(a string) string {
	return "request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=" + a + "\n\n"
}

// requestOfSize returns a valid request of exactly n >= 32 octets (LF line ends):
// the request line, filler attributes, the empty line.
func requestOfSize(n int) string {
	var b strings.Builder
	b.WriteString("request=smtpd_access_policy\n")
	for {
		rest := n - b.Len() - 1 // octets left for filler lines
		if rest <= 0 {
			break
		}
		l := min(rest, MaxLineLength+1) // "x=" value "\n"
		if left := rest - l; left > 0 && left < 3 {
			l -= 3 // leave room for a whole "x=\n"
		}
		b.WriteString("x=")
		b.WriteString(strings.Repeat("v", l-3))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.String()
}

func TestReadRequest(t *testing.T) {
	postfix := string(realRequest(t))
	longValue := strings.Repeat("x", MaxLineLength-len("sender="))
	manyAttrs := "request=smtpd_access_policy\n" + strings.Repeat("x=1\n", MaxAttributes-1)

	tests := []struct {
		name string
		in   string
		want []Request // requests read before the final error
		err  error     // final error: io.EOF or ErrMalformed
	}{
		{
			name: "Postfix 3.7 RCPT request, all fields landed",
			in:   postfix,
			want: []Request{realParsed},
			err:  io.EOF,
		},
		{
			name: "value holding '=' is split at the first '='",
			in:   "request=smtpd_access_policy\nsender=a=b@example.com\nrecipient==x@example.com\npolicy_context=k=v=w\n\n",
			want: []Request{{Request: "smtpd_access_policy", Sender: "a=b@example.com", Recipient: "=x@example.com", PolicyContext: "k=v=w"}},
			err:  io.EOF,
		},
		{
			name: "empty values",
			in:   "request=smtpd_access_policy\nsender=\nqueue_id=\nrecipient=\n\n",
			want: []Request{{Request: "smtpd_access_policy"}},
			err:  io.EOF,
		},
		{
			name: "unknown names ignored",
			in:   "request=smtpd_access_policy\nfuture_attribute=1\nx-y=z\nreverse_client_name=unknown\nrecipient=a@example.com\n\n",
			want: []Request{{Request: "smtpd_access_policy", Recipient: "a@example.com"}},
			err:  io.EOF,
		},
		{
			name: "CRLF line ends tolerated",
			in:   "request=smtpd_access_policy\r\nrecipient=a@example.com\r\nsender=\r\n\r\n",
			want: []Request{{Request: "smtpd_access_policy", Recipient: "a@example.com"}},
			err:  io.EOF,
		},
		{
			name: "CRLF and LF mixed",
			in:   "request=smtpd_access_policy\r\nrecipient=a@example.com\n\r\n",
			want: []Request{{Request: "smtpd_access_policy", Recipient: "a@example.com"}},
			err:  io.EOF,
		},
		{
			name: "request= need not come first",
			in:   "recipient=a@example.com\nrequest=smtpd_access_policy\n\n",
			want: []Request{{Request: "smtpd_access_policy", Recipient: "a@example.com"}},
			err:  io.EOF,
		},
		{
			name: "several requests back to back",
			in:   postfix + rcpt("a@example.com") + postfix,
			want: []Request{realParsed, {Request: "smtpd_access_policy", ProtocolState: "RCPT", Recipient: "a@example.com"}, realParsed},
			err:  io.EOF,
		},
		{
			name: "EOF before any request",
			in:   "",
			err:  io.EOF,
		},
		{
			name: "EOF within a request",
			in:   rcpt("a@example.com") + "request=smtpd_access_policy\nrecipient=b@example.com\n",
			want: []Request{{Request: "smtpd_access_policy", ProtocolState: "RCPT", Recipient: "a@example.com"}},
			err:  ErrMalformed,
		},
		{
			name: "EOF within a line",
			in:   "request=smtpd_access_policy\nrecip",
			err:  ErrMalformed,
		},
		{
			name: "EOF within the first line",
			in:   "requ",
			err:  ErrMalformed,
		},
		{
			name: "line without '='",
			in:   "request=smtpd_access_policy\nrecipient\n\n",
			err:  ErrMalformed,
		},
		{
			name: "empty name",
			in:   "request=smtpd_access_policy\n=a@example.com\n\n",
			err:  ErrMalformed,
		},
		{
			name: "request is not smtpd_access_policy",
			in:   "request=junk\nrecipient=a@example.com\n\n",
			err:  ErrMalformed,
		},
		{
			name: "request= missing",
			in:   "protocol_state=RCPT\nrecipient=a@example.com\n\n",
			err:  ErrMalformed,
		},
		{
			name: "empty request",
			in:   "\n",
			err:  ErrMalformed,
		},
		{
			name: "empty request after a good one",
			in:   postfix + "\n",
			want: []Request{realParsed},
			err:  ErrMalformed,
		},
		{
			name: "line of MaxLineLength octets",
			in:   "request=smtpd_access_policy\nsender=" + longValue + "\n\n",
			want: []Request{{Request: "smtpd_access_policy", Sender: longValue}},
			err:  io.EOF,
		},
		{
			name: "line of MaxLineLength octets and CRLF",
			in:   "request=smtpd_access_policy\r\nsender=" + longValue + "\r\n\r\n",
			want: []Request{{Request: "smtpd_access_policy", Sender: longValue}},
			err:  io.EOF,
		},
		{
			name: "line over MaxLineLength",
			in:   "request=smtpd_access_policy\nsender=" + longValue + "x\n\n",
			err:  ErrMalformed,
		},
		{
			name: "line far over MaxLineLength, no newline in sight",
			in:   "request=smtpd_access_policy\nsender=" + strings.Repeat(longValue, 4),
			err:  ErrMalformed,
		},
		{
			name: "MaxAttributes attributes",
			in:   manyAttrs + "\n",
			want: []Request{{Request: "smtpd_access_policy"}},
			err:  io.EOF,
		},
		{
			name: "too many attributes",
			in:   manyAttrs + "x=1\n\n",
			err:  ErrMalformed,
		},
		{
			name: "request of MaxRequestBytes octets",
			in:   requestOfSize(MaxRequestBytes),
			want: []Request{{Request: "smtpd_access_policy"}},
			err:  io.EOF,
		},
		{
			name: "request over MaxRequestBytes",
			in:   requestOfSize(MaxRequestBytes + 1),
			err:  ErrMalformed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(strings.NewReader(tt.in), MaxLineLength+2)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("requests:\ngot  %+v\nwant %+v", got, tt.want)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("final error: got %v, want %v", err, tt.err)
			}
			if tt.err == ErrMalformed && errors.Is(err, io.EOF) {
				t.Errorf("error %q wraps io.EOF; a malformed request must not look like a clean close", err)
			}
		})
	}
}

func TestRequestOfSize(t *testing.T) {
	for _, n := range []int{32, 33, 34, MaxLineLength + 40, MaxRequestBytes, MaxRequestBytes + 1} {
		if got := len(requestOfSize(n)); got != n {
			t.Errorf("len(requestOfSize(%d)): got %d, want %d", n, got, n)
		}
	}
}

// The line bound is MaxLineLength whatever buffer the caller reads through:
// a small one must not refuse a line Postfix may send, a large one must not
// let through a line the server refuses.
func TestReadRequestBufferSize(t *testing.T) {
	longValue := strings.Repeat("x", MaxLineLength-len("sender="))
	tests := []struct {
		name string
		in   string
		err  error
	}{
		{"MaxLineLength", "request=smtpd_access_policy\nsender=" + longValue + "\n\n", io.EOF},
		{"MaxLineLength and CRLF", "request=smtpd_access_policy\r\nsender=" + longValue + "\r\n\r\n", io.EOF},
		{"MaxLineLength+1", "request=smtpd_access_policy\nsender=" + longValue + "x\n\n", ErrMalformed},
		{"MaxLineLength+1 and CRLF", "request=smtpd_access_policy\r\nsender=" + longValue + "x\r\n\r\n", ErrMalformed},
		{"Postfix 3.7 request", string(realRequest(t)), io.EOF},
	}
	for _, size := range []int{16, 4096, MaxLineLength + 2, 1 << 17} {
		for _, tt := range tests {
			got, err := readAll(strings.NewReader(tt.in), size)
			if !errors.Is(err, tt.err) {
				t.Errorf("%s, buffer %d: got error %v, want %v", tt.name, size, err, tt.err)
			}
			if wantN := map[error]int{io.EOF: 1, ErrMalformed: 0}[tt.err]; len(got) != wantN {
				t.Errorf("%s, buffer %d: got %d requests, want %d", tt.name, size, len(got), wantN)
			}
		}
	}
}

// Read errors other than EOF are passed on as they are: a timeout is not a
// protocol violation.
func TestReadRequestReadError(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name string
		in   io.Reader
	}{
		{"before a request", iotest.ErrReader(errBoom)},
		{"within a request", io.MultiReader(strings.NewReader("request=smtpd_access_policy\n"), iotest.ErrReader(errBoom))},
		{"within a line", io.MultiReader(strings.NewReader("request=smtpd_acc"), iotest.ErrReader(errBoom))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadRequest(bufio.NewReader(tt.in))
			if !errors.Is(err, errBoom) || errors.Is(err, ErrMalformed) {
				t.Errorf("got %v, want %v", err, errBoom)
			}
		})
	}
}

// Postfix writes a request in one piece, but nothing promises that a read
// returns it whole.
func TestReadRequestOneOctetReads(t *testing.T) {
	in := realRequest(t)
	got, err := readAll(iotest.OneByteReader(bytes.NewReader(append(in, in...))), MaxLineLength+2)
	if want := []Request{realParsed, realParsed}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if !errors.Is(err, io.EOF) {
		t.Errorf("final error: got %v, want io.EOF", err)
	}
}

func FuzzParseRequest(f *testing.F) {
	postfix := realRequest(f)
	f.Add(postfix)
	f.Add(append(append([]byte{}, postfix...), postfix...))
	f.Add(bytes.ReplaceAll(postfix, []byte("\n"), []byte("\r\n")))
	f.Add(postfix[:len(postfix)/2])
	f.Add([]byte(rcpt("a=b@example.com")))
	f.Add([]byte("\n"))
	f.Add([]byte("request=junk\n\n"))
	f.Add([]byte("=x\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := readAll(bytes.NewReader(data), MaxLineLength+2)
		for i, r := range got {
			if r.Request != "smtpd_access_policy" {
				t.Fatalf("request %d: Request = %q, want smtpd_access_policy", i, r.Request)
			}
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("got error %v, want io.EOF or ErrMalformed", err)
		}
		// The outcome does not depend on the buffer the caller reads
		// through.
		small, serr := readAll(bytes.NewReader(data), 16)
		if !reflect.DeepEqual(small, got) {
			t.Fatalf("16-octet buffer: got %+v, want %+v as with a full buffer", small, got)
		}
		if errors.Is(serr, ErrMalformed) != errors.Is(err, ErrMalformed) {
			t.Fatalf("16-octet buffer: got error %v, want %v as with a full buffer", serr, err)
		}
	})
}

func BenchmarkReadRequest(b *testing.B) {
	in := realRequest(b)
	rd := bytes.NewReader(in)
	br := bufio.NewReaderSize(rd, MaxLineLength+2)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(in)
		br.Reset(rd)
		if _, err := ReadRequest(br); err != nil {
			b.Fatal(err)
		}
	}
}
