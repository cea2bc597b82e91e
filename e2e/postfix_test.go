package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The front's replies to RCPT TO, checked byte for byte: what a sender on
// the Internet sees.
const (
	// calloutd said DUNNO, the snippet's list ended: Postfix's own OK.
	replyOK = "250 2.1.5 Ok"
	// The backend's reply, relayed by calloutd without the backend's own
	// "<addr>: Recipient address rejected: " prefix, which the front adds
	// again.
	replyUnknown       = "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in virtual mailbox table"
	replyUnknownCached = replyUnknown + " (cached verdict)"
	// The backend's 4xx, relayed (tempfail_action = "defer").
	replyBusy       = "450 4.2.1 <busy@example.test>: Recipient address rejected: Mailbox busy"
	replyBusyCached = replyBusy + " (cached verdict)"
	// reject_unauth_destination, before calloutd is asked.
	replyRelayDenied = "554 5.7.1 <someone@elsewhere.test>: Relay access denied"
)

// backendUsers have mailboxes on the backend; any other user of
// example.test is unknown there.
var backendUsers = []string{"alice", "bob", "carol"}

// TestPostfix runs calloutd behind real Postfix in each wiring of
// contrib/postfix and checks what a sender sees, that mail is delivered,
// and that calloutd fails open when the backend or calloutd itself is gone.
func TestPostfix(t *testing.T) {
	s := newSuite(t)
	began := time.Now()
	hung := startSilentServer(t)

	backendPort := freePort(t)
	var boxes []string
	for _, u := range backendUsers {
		boxes = append(boxes, fmt.Sprintf("%s@example.test=example.test/%s/", u, u))
	}
	backend := s.newInstance(t, "main.cf.backend", instanceData{
		Name: "backend", Port: backendPort, Mailboxes: strings.Join(boxes, ", "),
		MailUID: s.nobodyUID, MailGID: s.nogroupGID,
	}, "", "")
	mkdir(t, backend.path("mail"), 0o755, s.nobodyUID, s.nogroupGID)

	front := func(name, snip string, oldnew []string, masterExtra string) *instance {
		t.Helper()
		return s.newInstance(t, "main.cf.front", instanceData{
			Name: name, Port: freePort(t), BackendPort: backendPort, HungPort: hung.port(), Snippet: snip,
		}, snippet(t, snip, oldnew...), masterExtra)
	}

	// TCP: the snippet with calloutd's port of this run instead of 10040.
	inetAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	inet := front("front-inet", "main.cf.inet", []string{"inet:127.0.0.1:10040", "inet:" + inetAddr}, "")

	// Unix socket: the snippet as it is ("unix:calloutd/policy.sock" is
	// relative to the queue directory), and the socket directory made as
	// main.cf.unix says: calloutd's user owns it, group postfix, setgid.
	unix := front("front-unix", "main.cf.unix", nil, "")
	sockDir := unix.path("queue/calloutd")
	mkdir(t, sockDir, 0o750|os.ModeSetgid, s.nobodyUID, s.postfixGID)

	// spawn(8): master.cf runs the binary of this run, as nobody, with a
	// configuration nobody can read and a log file nobody can write.
	spawnDir := s.calloutdDir(t, "calloutd-spawn")
	spawnCfg := filepath.Join(spawnDir, "calloutd.toml")
	writeFile(t, spawnCfg, calloutdConfig("127.0.0.1:0", filepath.Join(spawnDir, "calloutd.log"), backendPort, hung.port()), 0o644)
	spawn := front("front-spawn", "main.cf.spawn", nil, snippet(t, "master.cf.spawn",
		"user=calloutd", "user=nobody",
		"/usr/local/bin/calloutd", calloutdBin,
		"/etc/calloutd/calloutd.toml", spawnCfg))

	startAll(t, backend, inet, unix, spawn)
	t.Logf("4 Postfix instances started after %v", time.Since(began).Round(time.Millisecond))
	cdInet := s.startCalloutd(t, "calloutd-inet", inetAddr, backendPort, hung.port())
	sock := filepath.Join(sockDir, "policy.sock")
	cdUnix := s.startCalloutd(t, "calloutd-unix", "unix:"+sock, backendPort, hung.port())
	// What docs/postfix.md promises: srw-rw---- nobody postfix.
	if fi, err := os.Stat(sock); err != nil {
		t.Fatal(err)
	} else if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 ||
		int(st.Uid) != s.nobodyUID || int(st.Gid) != s.postfixGID {
		t.Errorf("%s: mode %v, owner %d:%d; want a socket, mode 0660, owner %d:%d (nobody:postfix)",
			sock, fi.Mode(), st.Uid, st.Gid, s.nobodyUID, s.postfixGID)
	}

	t.Run("wiring", func(t *testing.T) {
		// A backend that accepts the connection and never answers: calloutd's
		// budget runs out, it fails open, and the front hears it in time.
		t.Run("silent backend", func(t *testing.T) {
			t.Parallel()
			c := dialSMTP(t, inet.name, inet.port)
			c.begin()
			d := c.expect("RCPT TO:<someone@hung.test>", replyOK)
			if d < requestTimeout-500*time.Millisecond || d > requestTimeout+2*time.Second {
				t.Errorf("reply after %v, want about calloutd's request_timeout %v", d, requestTimeout)
			}
			c.quit()
		})
		for _, f := range []*instance{inet, unix, spawn} {
			t.Run(strings.TrimPrefix(f.name, "front-"), func(t *testing.T) {
				t.Parallel()
				checkVerdicts(t, f)
				checkDelivery(t, s, f, backend)
				// Nothing went wrong between Postfix and calloutd; in spawn
				// mode that includes calloutd writing anything but answers
				// to the socket.
				if w := problems(f.maillog()); w != "" {
					t.Errorf("%s: Postfix logged problems:\n%s", f.name, w)
				}
			})
		}
	})

	// Stopped backend: connections refused. Fail open at once for what
	// calloutd has not heard about; what it has heard stays cached.
	t.Run("backend stopped", func(t *testing.T) {
		backend.stop(t)
		c := dialSMTP(t, inet.name, inet.port)
		c.begin()
		for _, tc := range []struct{ rcpt, want string }{
			{"carol@example.test", replyOK},             // exists, never asked
			{"ghost@example.test", replyOK},             // does not exist, nobody can tell
			{"nobody@example.test", replyUnknownCached}, // known to be unknown
		} {
			if d := c.expect("RCPT TO:<"+tc.rcpt+">", tc.want); d > requestTimeout {
				t.Errorf("RCPT TO:<%s>: reply after %v, beyond calloutd's budget %v", tc.rcpt, d, requestTimeout)
			}
		}
		c.quit()
	})

	// Stopped calloutd: the snippets' default_action=DUNNO applies, after
	// Postfix's retry (smtpd_policy_service_try_limit 2, retry_delay 1s).
	t.Run("calloutd stopped", func(t *testing.T) {
		for _, w := range []struct {
			f        *instance
			d        *daemon
			endpoint string
		}{
			{inet, cdInet, inetAddr},
			{unix, cdUnix, "calloutd/policy.sock"},
		} {
			w.d.stop(t)
			c := dialSMTP(t, w.f.name, w.f.port)
			c.begin()
			if d := c.expect("RCPT TO:<nobody@example.test>", replyOK); d > 5*time.Second {
				t.Errorf("%s: reply after %v, want Postfix's default_action within 5s", w.f.name, d)
			}
			c.quit()
			// postlogd writes the maillog a moment after smtpd logs.
			want := "warning: connect to " + w.endpoint + ": "
			for deadline := time.Now().Add(3 * time.Second); !strings.Contains(w.f.maillog(), want); {
				if time.Now().After(deadline) {
					t.Errorf("%s: maillog has no %q", w.f.name, want)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	})

	t.Logf("suite ran for %v (before cleanup)", time.Since(began).Round(time.Millisecond))
}

// checkVerdicts checks the front's replies in one session: a known user, an
// unknown one twice (the second time from calloutd's cache), one the
// backend answers 4xx for, twice too, and a domain the front does not relay
// for.
func checkVerdicts(t *testing.T, f *instance) {
	c := dialSMTP(t, f.name, f.port)
	c.begin()
	c.expect("RCPT TO:<alice@example.test>", replyOK)
	c.expect("RCPT TO:<nobody@example.test>", replyUnknown)
	c.expect("RCPT TO:<nobody@example.test>", replyUnknownCached)
	c.expect("RCPT TO:<busy@example.test>", replyBusy)
	c.expect("RCPT TO:<busy@example.test>", replyBusyCached)
	c.expect("RCPT TO:<someone@elsewhere.test>", replyRelayDenied)
	c.quit()
}

// checkDelivery sends a message to a known user through the front with
// swaks and finds it in the user's Maildir on the backend.
func checkDelivery(t *testing.T, s *suite, f *instance, backend *instance) {
	token := fmt.Sprintf("%s-%d", f.name, time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.swaks,
		"--server", fmt.Sprintf("127.0.0.1:%d", f.port),
		"--helo", "client.e2e.test",
		"--from", "sender@client.e2e.test",
		"--to", "alice@example.test",
		"--header", "Subject: calloutd e2e "+token,
		"--body", "token "+token,
	).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: swaks: %v\n%s", f.name, err, out)
	}
	lines := strings.Split(string(out), "\n")
	for i, l := range lines {
		if strings.Contains(l, "RCPT TO:") || strings.Contains(l, "queued as") {
			t.Logf("%s: swaks: %s", f.name, strings.TrimSpace(l))
			if strings.Contains(l, "RCPT TO:") && i+1 < len(lines) {
				t.Logf("%s: swaks: %s", f.name, strings.TrimSpace(lines[i+1]))
			}
		}
	}

	newDir := backend.path("mail/example.test/alice/new")
	deadline := time.Now().Add(30 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(newDir, "*"))
		for _, p := range files {
			if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), token) {
				t.Logf("%s: delivered to the backend: %s", f.name, p)
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: message %s not in %s after 30s (%d files)", f.name, token, newDir, len(files))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// harmless are warnings about the machine, not about Postfix and calloutd:
// cleanup compares a new queue file's time with the clock, and a file
// system whose timestamps run a second ahead (seen on CI's VMs) makes it
// say so.
var harmless = []string{"file system clock is", "resetting file time stamps"}

// problems returns the warning, error and fatal lines of a maillog, less
// the harmless ones.
func problems(maillog string) string {
	var out []string
lines:
	for _, l := range strings.Split(maillog, "\n") {
		for _, h := range harmless {
			if strings.Contains(l, h) {
				continue lines
			}
		}
		for _, w := range []string{"warning:", "error:", "fatal:", "panic:"} {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
