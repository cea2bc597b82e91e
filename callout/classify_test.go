package callout

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// corpusRecord is one real reply of testdata/replies/, with its source and
// the classification calloutd must reach.
type corpusRecord struct {
	file    string
	line    int // of "product:"
	product string
	source  string
	want    Classification
	reply   string // wire form, CRLF line endings
}

// readCorpus parses testdata/replies/*.txt: records separated by blank
// lines, each "product:", "source:", "want: MEANING REASON" and the reply
// lines as the server sent them. Lines starting with '#' are comments.
func readCorpus(t *testing.T) []corpusRecord {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "replies", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no reply corpus in testdata/replies: %v", err)
	}
	var out []corpusRecord
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rec *corpusRecord
		flush := func() {
			if rec == nil {
				return
			}
			if rec.product == "" || rec.source == "" || rec.want.Meaning == 0 || rec.reply == "" {
				t.Errorf("%s:%d: record needs product:, source:, want: and a reply", rec.file, rec.line)
			} else {
				out = append(out, *rec)
			}
			rec = nil
		}
		for n, line := range strings.Split(string(data), "\n") {
			line = strings.TrimRight(line, "\r")
			switch {
			case strings.HasPrefix(line, "#"):
				continue
			case strings.TrimSpace(line) == "":
				flush()
				continue
			}
			if rec == nil {
				rec = &corpusRecord{file: f, line: n + 1}
			}
			key, val, _ := strings.Cut(line, ":")
			val = strings.TrimSpace(val)
			switch key {
			case "product":
				rec.product = val
			case "source":
				kind, _, _ := strings.Cut(val, ":")
				if kind != "documented" && kind != "observed" && kind != "inferred" {
					t.Errorf("%s:%d: source must start with documented:, observed: or inferred:", f, n+1)
				}
				rec.source = val
			case "want":
				m, r, _ := strings.Cut(val, " ")
				rec.want = Classification{meaningOf(t, f, n+1, m), r}
			default:
				if len(line) < 3 || line[0] < '2' || line[0] > '5' {
					t.Errorf("%s:%d: not a key nor a reply line: %q", f, n+1, line)
					continue
				}
				rec.reply += line + "\r\n"
			}
		}
		flush()
	}
	return out
}

func meaningOf(t *testing.T, file string, line int, s string) Meaning {
	for m, name := range meaningNames {
		if name == s && name != "" {
			return Meaning(m)
		}
	}
	t.Errorf("%s:%d: unknown meaning %q", file, line, s)
	return 0
}

// TestCorpus classifies every real reply of the corpus. Adding a backend is
// adding a record to testdata/replies/.
func TestCorpus(t *testing.T) {
	recs := readCorpus(t)
	if len(recs) < 40 {
		t.Errorf("corpus holds %d replies, want at least 40", len(recs))
	}
	for _, rec := range recs {
		rep, err := ReadReply(bufio.NewReader(strings.NewReader(rec.reply)))
		if err != nil {
			t.Errorf("%s:%d: %s: reply does not parse: %v", rec.file, rec.line, rec.product, err)
			continue
		}
		if got := Classify(rep); got != rec.want {
			t.Errorf("%s:%d: %s\n\t%s\n\tgot %v, want %v (source: %s)", rec.file, rec.line, rec.product,
				strings.TrimSpace(rec.reply), got, rec.want, rec.source)
		}
	}
}

// TestClassifyRefusalsWin is the property that matters most: no
// reply that refuses the gateway is ever read as "the mailbox does not
// exist", however its code reads.
func TestClassifyRefusalsWin(t *testing.T) {
	for _, line := range []string{
		"550 5.1.1 <bob@example.com>: Sender address rejected: User unknown in local recipient table",
		"550 5.1.1 <bob@example.com>: Recipient address rejected: undeliverable address: host x[192.0.2.1] said: 554 5.7.1 Relay access denied",
		"550-Verification failed for <v@gw.example.net>\r\n550-Unrouteable address\r\n550 Sender verify failed",
		"550 User unknown; Client host rejected: blocked using zen.spamhaus.org",
		"550 Domain does not exist",
		"550 5.7.1 Recipient address rejected: Access denied",
		// Found by review: refusals of the gateway worded like "unknown".
		"511 sorry, can't find a valid MX for rcpt domain (#5.1.1 - chkuser)",
		"511 sorry, you must specify a domain (#5.1.1 - chkuser)",
		"550 Your HELO hostname does not exist",
		"550 PTR record for your IP does not exist",
		"550 SPF: example.net SPF record does not exist",
		"550 Your IP is not listed in our allowed senders",
		"554 Your IP 192.0.2.1 not listed in relay whitelist",
		"550 Authentication required: user does not exist",
		"550 5.2.1 Account over quota",
		"550 5.2.1 Mailbox temporarily disabled, try later",
		"551 Not our customer",
		"551 Authentication required",
	} {
		if c := Classify(parseReply(t, line)); c.Meaning == MeansUnknown {
			t.Errorf("Classify(%q) = %v, want anything but unknown", line, c)
		}
	}
}

func TestClassifyCodes(t *testing.T) {
	tests := []struct {
		reply string
		want  Classification
	}{
		{"250 2.1.5 Ok", Classification{MeansExists, ReasonAccepted}},
		{"251 User not local; will forward", Classification{MeansExists, ReasonAccepted}},
		{"354 go ahead", Classification{MeansRefused, ReasonProtocol}},
		{"421 4.7.0 closing", Classification{MeansRefused, ReasonClosing}},
		{"450 4.2.0 Greylisted", Classification{MeansTemporary, ReasonGreylisted}},
		{"451 4.3.0 Temporary lookup failure", Classification{MeansTemporary, ReasonTemporary}},
		{"452 4.2.2 Over quota", Classification{MeansTemporary, ReasonQuota}},
		{"452 4.5.3 Error: too many recipients", Classification{MeansTemporary, ReasonTooManyRecipients}},
		{"451 4.7.1 Rate limit exceeded", Classification{MeansTemporary, ReasonRateLimited}},
		{"552 5.2.2 Mailbox full", Classification{MeansTemporary, ReasonQuota}},
		{"552 Requested mail action aborted: exceeded storage allocation", Classification{MeansTemporary, ReasonQuota}},
		{"550 5.2.2 over quota", Classification{MeansTemporary, ReasonQuota}},
		{"550 5.1.1 whatever", Classification{MeansUnknown, ReasonNoSuchUser}},
		{"550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", Classification{MeansUnknown, ReasonNoSuchUser}},
		{"550 5.1.6 Recipient addresses moved", Classification{MeansUnknown, ReasonMoved}},
		{"551 User not local; please try <bob@example.net>", Classification{MeansUnknown, ReasonMoved}},
		{"550 5.2.1 Mailbox disabled", Classification{MeansUnknown, ReasonDisabled}},
		{"550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", Classification{MeansUnknown, ReasonNoSuchUser}},
		{"550 5.4.1 Unable to route", Classification{MeansUnrecognised, ReasonUnrecognised}},
		{"550 5.1.0 Sender rejected", Classification{MeansRefused, ReasonSenderRefused}},
		{"550 5.1.2 Bad destination system", Classification{MeansRefused, ReasonRelayDenied}},
		{"550 5.7.1 Service unavailable", Classification{MeansRefused, ReasonPolicy}},
		{"550 5.7.1 Sending rate exceeded", Classification{MeansRefused, ReasonRateLimited}},
		{"503 5.5.1 Error: need MAIL command", Classification{MeansRefused, ReasonProtocol}},
		{"550 Requested action not taken: mailbox unavailable", Classification{MeansUnrecognised, ReasonUnrecognised}},
		{"550 No such user here", Classification{MeansUnknown, ReasonNoSuchUser}},
		{"550 Administrative prohibition", Classification{MeansRefused, ReasonPolicy}},
		{"550 relay not permitted", Classification{MeansRefused, ReasonRelayDenied}},
		{"511 sorry, no mailbox here by that name (#5.1.1)", Classification{MeansUnknown, ReasonNoSuchUser}},
		{"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", Classification{MeansRefused, ReasonRelayDenied}},
		{"554 mail server permanently rejected message (#5.3.0)", Classification{MeansUnrecognised, ReasonUnrecognised}},
		{"550 5.0.0 User unknown", Classification{MeansUnknown, ReasonNoSuchUser}},
		{"550", Classification{MeansUnrecognised, ReasonUnrecognised}},
	}
	for _, tc := range tests {
		if got := Classify(parseReply(t, tc.reply)); got != tc.want {
			t.Errorf("Classify(%q) = %v, want %v", tc.reply, got, tc.want)
		}
	}
}

// parseReply reads one reply written as on the wire, without its last CRLF.
func parseReply(tb testing.TB, s string) Reply {
	tb.Helper()
	rep, err := ReadReply(bufio.NewReader(strings.NewReader(s + "\r\n")))
	if err != nil {
		tb.Fatalf("%q: %v", s, err)
	}
	return rep
}

func TestRulesWin(t *testing.T) {
	r := &Rules{
		Unknown: []*regexp.Regexp{regexp.MustCompile(`^550 5\.7\.1 .*not a user here`), regexp.MustCompile(`Greylisted`)},
		Ignore:  []*regexp.Regexp{regexp.MustCompile(`^550 5\.1\.1 .*Legacy`), regexp.MustCompile(`Greylisted`)},
	}
	tests := []struct {
		reply string
		want  Classification
	}{
		{"550 5.7.1 bob is not a user here", Classification{MeansUnknown, ReasonAdmin}},
		{"550 5.1.1 Legacy user table says no", Classification{MeansIgnored, ReasonIgnored}},
		// Both match: ignoring (fail open) wins.
		{"450 4.2.0 Greylisted", Classification{MeansIgnored, ReasonIgnored}},
		{"550 5.1.1 User unknown", Classification{MeansUnknown, ReasonNoSuchUser}},
		// Multi-line replies are matched as one line.
		{"550-5.7.1 bob\r\n550 5.7.1 is not a user here", Classification{MeansUnknown, ReasonAdmin}},
	}
	for _, tc := range tests {
		if got := r.Classify(parseReply(t, tc.reply)); got != tc.want {
			t.Errorf("Rules.Classify(%q) = %v, want %v", tc.reply, got, tc.want)
		}
	}
	var none *Rules
	rep := Reply{Code: 550, Enhanced: "5.1.1", Lines: []string{"x"}}
	if got := none.Classify(rep); got != (Classification{MeansUnknown, ReasonNoSuchUser}) {
		t.Errorf("nil Rules: %v", got)
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{"550 5.1.1 User unknown\r\n", "553 sorry (#5.7.1)\r\n", "250 ok\r\n", "550 (#\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rep, err := ReadReply(bufio.NewReader(strings.NewReader(s)))
		if err != nil {
			return
		}
		c := Classify(rep)
		if c.Meaning == 0 || c.Reason == "" {
			t.Fatalf("Classify(%q) = %v", s, c)
		}
		if c.Meaning == MeansUnknown && rep.Class() != 5 {
			t.Fatalf("Classify(%q) = unknown for a non-5xx reply", s)
		}
	})
}

// BenchmarkClassify reads a Gmail multi-line unknown and a Postfix
// relay refusal: the cost a callout adds to read its reply.
func BenchmarkClassify(b *testing.B) {
	var reps []Reply
	for _, s := range []string{
		"550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n550 5.1.1  https://support.google.com/mail/?p=NoSuchUser - gsmtp\r\n",
		"554 5.7.1 <bob@example.com>: Relay access denied\r\n",
		"550 Requested action not taken: mailbox unavailable\r\n",
	} {
		rep, err := ReadReply(bufio.NewReader(strings.NewReader(s)))
		if err != nil {
			b.Fatal(err)
		}
		reps = append(reps, rep)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = Classify(reps[i%len(reps)])
	}
}
