package callout

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Reply
		err  error  // wanted with errors.Is; nil for success
		rest string // what the next read finds
	}{
		{name: "single", in: "250 2.1.5 Ok\r\n",
			want: Reply{250, "2.1.5", []string{"Ok"}}},
		{name: "no enhanced code", in: "220 mx.example.test ESMTP Postfix (Debian/GNU)\r\n",
			want: Reply{220, "", []string{"mx.example.test ESMTP Postfix (Debian/GNU)"}}},
		{name: "Postfix unknown user",
			in:   "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in local recipient table\r\n",
			want: Reply{550, "5.1.1", []string{"<nobody@example.test>: Recipient address rejected: User unknown in local recipient table"}}},
		{name: "multi-line EHLO",
			in:   "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n",
			want: Reply{250, "", []string{"mx.example.test", "PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES", "8BITMIME"}}},
		{name: "enhanced code on every line", in: "550-5.1.1 first\r\n550 5.1.1 second\r\n",
			want: Reply{550, "5.1.1", []string{"first", "second"}}},
		{name: "another enhanced code on a later line is text", in: "550-5.1.1 first\r\n550 5.7.1 second\r\n",
			want: Reply{550, "5.1.1", []string{"first", "5.7.1 second"}}},
		{name: "bare LF", in: "250-2.0.0 a\n250 b\n",
			want: Reply{250, "2.0.0", []string{"a", "b"}}},
		{name: "code only", in: "250\r\n", want: Reply{250, "", []string{""}}},
		{name: "code and space", in: "250 \r\n", want: Reply{250, "", []string{""}}},
		{name: "empty continuation", in: "250-\r\n250 x\r\n", want: Reply{250, "", []string{"", "x"}}},
		{name: "enhanced code only", in: "550 5.1.1\r\n", want: Reply{550, "5.1.1", []string{""}}},
		{name: "spaces after enhanced code", in: "550 5.1.1   x\r\n", want: Reply{550, "5.1.1", []string{"x"}}},
		{name: "widest enhanced code", in: "451 4.123.456 x\r\n", want: Reply{451, "4.123.456", []string{"x"}}},
		{name: "enhanced class mismatch", in: "250 5.1.1 x\r\n", want: Reply{250, "", []string{"5.1.1 x"}}},
		{name: "enhanced class mismatch 5xx", in: "550 2.0.0 x\r\n", want: Reply{550, "", []string{"2.0.0 x"}}},
		{name: "enhanced class 3", in: "354 3.0.0 go\r\n", want: Reply{354, "", []string{"3.0.0 go"}}},
		{name: "not enhanced: two parts", in: "550 5.1 x\r\n", want: Reply{550, "", []string{"5.1 x"}}},
		{name: "not enhanced: four digits", in: "550 5.1.1234 x\r\n", want: Reply{550, "", []string{"5.1.1234 x"}}},
		{name: "not enhanced: four parts", in: "550 5.1.1.1 x\r\n", want: Reply{550, "", []string{"5.1.1.1 x"}}},
		{name: "not enhanced: letter", in: "550 5.a.1 x\r\n", want: Reply{550, "", []string{"5.a.1 x"}}},
		{name: "not enhanced: glued text", in: "550 5.1.1x y\r\n", want: Reply{550, "", []string{"5.1.1x y"}}},
		{name: "not enhanced: empty part", in: "550 5..1 x\r\n", want: Reply{550, "", []string{"5..1 x"}}},
		{name: "reads one reply only", in: "250 a\r\n251 b\r\n", want: Reply{250, "", []string{"a"}}, rest: "251 b\r\n"},
		{name: "line of 2048", in: "250 " + strings.Repeat("x", maxReplyLine-4) + "\r\n",
			want: Reply{250, "", []string{strings.Repeat("x", maxReplyLine-4)}}},
		{name: "64 lines", in: strings.Repeat("250-x\r\n", maxReplyLines-1) + "250 x\r\n",
			want: Reply{250, "", slices.Repeat([]string{"x"}, maxReplyLines)}},

		{name: "mixed codes", in: "250-a\r\n251 b\r\n", err: ErrMalformedReply},
		{name: "mixed classes", in: "250-a\r\n550 b\r\n", err: ErrMalformedReply},
		{name: "line of 2049", in: "250 " + strings.Repeat("x", maxReplyLine-3) + "\r\n", err: ErrMalformedReply},
		{name: "endless line", in: "250 " + strings.Repeat("x", 100000), err: ErrMalformedReply},
		{name: "65 lines", in: strings.Repeat("250-x\r\n", maxReplyLines) + "250 x\r\n", err: ErrMalformedReply},
		{name: "endless reply", in: strings.Repeat("250-x\r\n", 1000), err: ErrMalformedReply},
		{name: "EOF mid-line", in: "250 Ok", err: ErrMalformedReply},
		{name: "EOF mid-code", in: "25", err: ErrMalformedReply},
		{name: "EOF before reply", in: "", err: io.EOF},
		{name: "EOF between lines", in: "250-a\r\n", err: io.EOF},
		{name: "code 199", in: "199 x\r\n", err: ErrMalformedReply},
		{name: "code 600", in: "600 x\r\n", err: ErrMalformedReply},
		{name: "code 000", in: "000 x\r\n", err: ErrMalformedReply},
		{name: "code 999", in: "999\r\n", err: ErrMalformedReply},
		{name: "letters", in: "2a0 x\r\n", err: ErrMalformedReply},
		{name: "short", in: "25\r\n", err: ErrMalformedReply},
		{name: "empty line", in: "\r\n", err: ErrMalformedReply},
		{name: "bad separator", in: "250x\r\n", err: ErrMalformedReply},
		{name: "tab separator", in: "250\tx\r\n", err: ErrMalformedReply},
		{name: "garbage", in: "garbage\r\n", err: ErrMalformedReply},
		{name: "signed code", in: "+25 x\r\n", err: ErrMalformedReply},
		{name: "bad continuation", in: "250-a\r\nxyz\r\n", err: ErrMalformedReply},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.in))
			got, err := ReadReply(br)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("ReadReply(%q) = %+v, %v; want error %v", clip(tc.in), got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadReply(%q): %v", clip(tc.in), err)
			}
			if got.Code != tc.want.Code || got.Enhanced != tc.want.Enhanced || !slices.Equal(got.Lines, tc.want.Lines) {
				t.Errorf("ReadReply(%q)\n got %#v\nwant %#v", clip(tc.in), got, tc.want)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tc.rest {
				t.Errorf("left %q unread, want %q", rest, tc.rest)
			}
		})
	}
}

// TestReadReplySmallBuffer reads lines longer than the bufio.Reader's buffer.
func TestReadReplySmallBuffer(t *testing.T) {
	long := strings.Repeat("y", 1500)
	br := bufio.NewReaderSize(strings.NewReader("250-2.0.0 "+long+"\r\n250 "+long+"\r\n"), 16)
	got, err := ReadReply(br)
	if err != nil {
		t.Fatal(err)
	}
	if got.Code != 250 || got.Enhanced != "2.0.0" || !slices.Equal(got.Lines, []string{long, long}) {
		t.Errorf("got %d %q and %d lines", got.Code, got.Enhanced, len(got.Lines))
	}
}

func TestReplyString(t *testing.T) {
	for _, tc := range []struct {
		r         Reply
		str, text string
		class     int
	}{
		{Reply{250, "2.1.5", []string{"Ok"}}, "250 2.1.5 Ok", "Ok", 2},
		{Reply{250, "", []string{"a", "b"}}, "250 a b", "a b", 2},
		{Reply{550, "5.1.1", []string{""}}, "550 5.1.1", "", 5},
		{Reply{421, "", nil}, "421", "", 4},
	} {
		if got := tc.r.String(); got != tc.str {
			t.Errorf("%#v.String() = %q, want %q", tc.r, got, tc.str)
		}
		if got := tc.r.Text(); got != tc.text {
			t.Errorf("%#v.Text() = %q, want %q", tc.r, got, tc.text)
		}
		if got := tc.r.Class(); got != tc.class {
			t.Errorf("%#v.Class() = %d, want %d", tc.r, got, tc.class)
		}
	}
}

func TestIsEnhancedCode(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"2.0.0", true}, {"4.4.1", true}, {"5.1.1", true}, {"5.123.123", true}, {"5.01.001", true},
		{"", false}, {"5", false}, {"5.1", false}, {"5.1.", false}, {"5..1", false}, {".1.1", false},
		{"3.0.0", false}, {"1.0.0", false}, {"6.0.0", false}, {"55.1.1", false},
		{"5.1234.1", false}, {"5.1.1234", false}, {"5.1.1.1", false}, {"5-1-1", false},
		{"5.a.1", false}, {"5.1.1 ", false}, {"5.1.-1", false},
	} {
		if got := IsEnhancedCode(tc.in); got != tc.ok {
			t.Errorf("IsEnhancedCode(%q) = %v, want %v", tc.in, got, tc.ok)
		}
	}
}

// Real replies, from Postfix, Exim, Exchange and smtp-sink.
var replySeeds = []string{
	"220 mx.example.test ESMTP Postfix (Debian/GNU)\r\n",
	"250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n",
	"250 2.1.0 Ok\r\n",
	"250 2.1.5 Ok\r\n",
	"550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in local recipient table\r\n",
	"450 4.2.0 <bob@example.test>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.test.html\r\n",
	"421 4.3.2 Service shutting down\r\n",
	"554 5.7.1 <bob@example.test>: Relay access denied\r\n",
	"502 5.5.2 Error: command not recognized\r\n",
	"221 2.0.0 Bye\r\n",
	"550-Verification failed for <x@example.test>\r\n550-Unrouteable address\r\n550 Sender verify failed\r\n",
	"220-mx.example.test ESMTP Exim 4.96\r\n220 We do not authorize the use of this system to transport unsolicited mail\r\n",
	"550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup\r\n",
	"451 4.7.1 Greylisted\n",
	"250",
	"250-\r\n",
	"garbage\r\n",
}

func FuzzReadReply(f *testing.F) {
	for _, s := range replySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// A small buffer exercises lines that span buffer fills.
		for _, size := range []int{16, 4096} {
			br := bufio.NewReaderSize(bytes.NewReader(data), size)
			r, err := ReadReply(br)
			if err != nil {
				if !errors.Is(err, ErrMalformedReply) && err != io.EOF {
					t.Fatalf("ReadReply(%q): unexpected error %v", data, err)
				}
				continue
			}
			if r.Code < 200 || r.Code > 599 {
				t.Fatalf("ReadReply(%q): code %d out of range", data, r.Code)
			}
			if r.Enhanced != "" && (!IsEnhancedCode(r.Enhanced) || int(r.Enhanced[0]-'0') != r.Class()) {
				t.Fatalf("ReadReply(%q): enhanced code %q with reply %d", data, r.Enhanced, r.Code)
			}
			if len(r.Lines) < 1 || len(r.Lines) > maxReplyLines {
				t.Fatalf("ReadReply(%q): %d lines", data, len(r.Lines))
			}
			for _, l := range r.Lines {
				if len(l) > maxReplyLine || strings.ContainsRune(l, '\n') {
					t.Fatalf("ReadReply(%q): bad line %q", data, clip(l))
				}
			}
			_ = r.String()
		}
	})
}
