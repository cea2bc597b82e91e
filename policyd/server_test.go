package policyd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// wait bounds every blocking step of these tests. It is generous on
// purpose: it only turns a hang into a failure, it never measures speed.
const wait = 10 * time.Second

// checkGoroutines fails t if goroutines started during the test outlive it.
// Call it first, so that its cleanup runs after the server's.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines: got %d after the test, want at most %d as before it:\n%s", n, before, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// syncBuffer collects the server's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// closeListener records that the server closed its listener: proof it
// stopped accepting that does not depend on what else binds the port next.
type closeListener struct {
	net.Listener
	closed atomic.Bool
}

func (l *closeListener) Close() error {
	l.closed.Store(true)
	return l.Listener.Close()
}

type testServer struct {
	*Server
	addr   string
	l      *closeListener
	log    *syncBuffer
	served chan struct{} // closed when Serve returned
	err    error         // what Serve returned
}

// startServer serves h on a loopback listener ("tcp" on 127.0.0.1:0, or a
// unix socket in t.TempDir()) and shuts it down at the end of the test.
func startServer(t *testing.T, network string, h Handler, set ...func(*Server)) *testServer {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = "unix:" + filepath.Join(t.TempDir(), "policy.sock")
	}
	l, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{
		Server: &Server{Handler: h},
		addr:   l.Addr().String(),
		l:      &closeListener{Listener: l},
		log:    new(syncBuffer),
		served: make(chan struct{}),
	}
	ts.Logger = slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, f := range set {
		f(ts.Server)
	}
	go func() {
		defer close(ts.served)
		ts.err = ts.Serve(ts.l)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: got %v, want nil", err)
		}
		if err := ts.serveErr(t); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: got %v, want ErrServerClosed", err)
		}
	})
	return ts
}

func (ts *testServer) serveErr(t *testing.T) error {
	t.Helper()
	select {
	case <-ts.served:
		return ts.err
	case <-time.After(wait):
		t.Fatal("Serve did not return")
		return nil
	}
}

type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, network, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout(network, addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(wait)) // a hang fails instead
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatalf("writing request: %v", err)
	}
}

// answer reads one answer: lines up to and including the empty line.
func (c *client) answer() string {
	c.t.Helper()
	var b strings.Builder
	for {
		line, err := c.br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			c.t.Fatalf("reading answer: got %q and %v", b.String(), err)
		}
		if line == "\n" {
			return b.String()
		}
	}
}

// rest reads until the server closes the connection and returns what it
// wrote. A reset counts as a close: the server may close with a client's
// octets still unread.
func (c *client) rest() string {
	c.t.Helper()
	b, err := io.ReadAll(c.br)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("waiting for close: got %q and %v, want the connection closed", b, err)
	}
	return string(b)
}

// closeWrite tells the server that no more requests come.
func (c *client) closeWrite() {
	c.t.Helper()
	if err := c.c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		c.t.Fatal(err)
	}
}

var dunno = HandlerFunc(func(context.Context, *Request) Action { return Dunno })

// byRecipient rejects recipients whose local part is "nobody" and is
// indifferent to others, so that answers show which request they are for.
var byRecipient = HandlerFunc(func(_ context.Context, r *Request) Action {
	if strings.HasPrefix(r.Recipient, "nobody@") {
		return Reject(550, "5.1.1", StatusBadMailbox, "User unknown")
	}
	return Dunno
})

// TestServerTranscripts writes a client's octets at once, half-closes, and
// compares everything the server wrote back before it closed.
func TestServerTranscripts(t *testing.T) {
	checkGoroutines(t)
	ts := startServer(t, "tcp", byRecipient)
	postfix := string(realRequest(t))
	longLine := "request=smtpd_access_policy\nsender=" + strings.Repeat("x", MaxLineLength-len("sender=")+1) + "\n"

	tests := []struct {
		name string
		in   string
		want string
	}{
		{"one request", rcpt("alice@example.com"), "action=DUNNO\n\n"},
		{"Postfix 3.7 request", postfix, "action=550 5.1.1 User unknown\n\n"},
		{"CRLF request", strings.ReplaceAll(rcpt("alice@example.com"), "\n", "\r\n"), "action=DUNNO\n\n"},
		{
			"pipelined requests answered in order",
			rcpt("alice@example.com") + rcpt("nobody@example.com") + rcpt("bob@example.com"),
			"action=DUNNO\n\naction=550 5.1.1 User unknown\n\naction=DUNNO\n\n",
		},
		{"no request", "", ""},
		{"line without '='", "request=smtpd_access_policy\nrecipient\n\n", ""},
		{"request=other", "request=junk\nrecipient=a@example.com\n\n", ""},
		{"empty request", "\n", ""},
		{"request cut short", "request=smtpd_access_policy\nrecipient=a@example.com\n", ""},
		{"over-long line", longLine, ""},
		{"good then malformed", rcpt("nobody@example.com") + "junk\n\n" + rcpt("alice@example.com"), "action=550 5.1.1 User unknown\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, "tcp", ts.addr)
			c.send(tt.in)
			c.closeWrite()
			if got := c.rest(); got != tt.want {
				t.Errorf("server wrote:\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
	if !strings.Contains(ts.log.String(), "malformed") {
		t.Errorf("log: got %q, want a warning about the malformed requests", ts.log.String())
	}
}

// One connection carries many requests, each answered before the next is
// written, as Postfix uses it.
func TestServerSequentialRequests(t *testing.T) {
	checkGoroutines(t)
	ts := startServer(t, "tcp", byRecipient)
	c := dial(t, "tcp", ts.addr)
	for _, tt := range []struct{ rcpt, want string }{
		{"alice@example.com", "action=DUNNO\n\n"},
		{"nobody@example.com", "action=550 5.1.1 User unknown\n\n"},
		{"bob@example.com", "action=DUNNO\n\n"},
	} {
		c.send(rcpt(tt.rcpt))
		if got := c.answer(); got != tt.want {
			t.Errorf("answer for %s: got %q, want %q", tt.rcpt, got, tt.want)
		}
	}
	c.closeWrite()
	if got := c.rest(); got != "" {
		t.Errorf("after the last answer: got %q, want nothing", got)
	}
}

func TestServerMalformedClosesOnlyItsConnection(t *testing.T) {
	checkGoroutines(t)
	ts := startServer(t, "tcp", dunno)
	good := dial(t, "tcp", ts.addr)
	good.send(rcpt("alice@example.com"))
	if got, want := good.answer(), "action=DUNNO\n\n"; got != want {
		t.Fatalf("good connection: got %q, want %q", got, want)
	}

	bad := dial(t, "tcp", ts.addr)
	bad.send("request=smtpd_access_policy\nthis line has no equals sign\n\n")
	if got := bad.rest(); got != "" {
		t.Errorf("malformed connection: got %q, want closed with nothing written", got)
	}

	good.send(rcpt("bob@example.com"))
	if got, want := good.answer(), "action=DUNNO\n\n"; got != want {
		t.Errorf("good connection after the other's malformed request: got %q, want %q", got, want)
	}
}

func TestServerHandlerGetsRequest(t *testing.T) {
	checkGoroutines(t)
	got := make(chan Request, 1)
	ts := startServer(t, "tcp", HandlerFunc(func(ctx context.Context, r *Request) Action {
		if ctx == nil || ctx.Err() != nil {
			t.Errorf("handler context: got %v, want a live context", ctx)
		}
		got <- *r
		return Dunno
	}))
	c := dial(t, "tcp", ts.addr)
	c.send(string(realRequest(t)))
	c.answer()
	if r := <-got; !reflect.DeepEqual(r, realParsed) {
		t.Errorf("handler got:\n%+v\nwant\n%+v", r, realParsed)
	}
}

func TestListenUnix(t *testing.T) {
	checkGoroutines(t)
	ts := startServer(t, "unix", dunno)
	path := strings.TrimPrefix(ts.addr, "unix:")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		t.Errorf("%s: got type %v, want a socket", path, fi.Mode().Type())
	}
	if got, want := fi.Mode().Perm(), fs.FileMode(0o660); got != want {
		t.Errorf("%s: got mode %v, want %v", path, got, want)
	}
	c := dial(t, "unix", path)
	c.send(rcpt("alice@example.com") + rcpt("bob@example.com"))
	c.closeWrite()
	if got, want := c.rest(), "action=DUNNO\n\naction=DUNNO\n\n"; got != want {
		t.Errorf("over the unix socket: got %q, want %q", got, want)
	}
}

func TestListenUnixExistingPath(t *testing.T) {
	checkGoroutines(t)
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		wantErr string // "" for success
	}{
		{
			name:    "nothing there",
			prepare: func(*testing.T, string) {},
		},
		{
			name: "stale socket of a dead process is removed",
			prepare: func(t *testing.T, path string) {
				l, err := net.Listen("unix", path)
				if err != nil {
					t.Fatal(err)
				}
				l.(*net.UnixListener).SetUnlinkOnClose(false)
				l.Close()
			},
		},
		{
			name: "socket a live listener serves is refused",
			prepare: func(t *testing.T, path string) {
				l, err := Listen("unix:" + path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
			},
			wantErr: "another process is listening on it",
		},
		{
			name: "regular file is refused",
			prepare: func(t *testing.T, path string) {
				if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: "exists and is not a socket",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "policy.sock")
			tt.prepare(t, path)
			before, _ := os.Lstat(path)
			l, err := Listen("unix:" + path)
			if tt.wantErr != "" {
				if err == nil {
					l.Close()
					t.Fatalf("Listen: got a listener, want an error containing %q", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Listen: got %q, want an error containing %q", err, tt.wantErr)
				}
				if after, _ := os.Lstat(path); after == nil || !os.SameFile(before, after) {
					t.Errorf("%s was replaced or removed; want it left alone", path)
				}
				return
			}
			if err != nil {
				t.Fatalf("Listen: got %v, want a listener", err)
			}
			defer l.Close()
			go func() {
				if c, err := l.Accept(); err == nil {
					c.Close()
				}
			}()
			c, err := net.DialTimeout("unix", path, wait)
			if err != nil {
				t.Fatalf("dialling the new socket: %v", err)
			}
			c.Close()
		})
	}
}

func TestListenTCP(t *testing.T) {
	l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.Addr().Network(); got != "tcp" {
		t.Errorf("network: got %q, want tcp", got)
	}
}

func TestShutdownGraceful(t *testing.T) {
	checkGoroutines(t)
	entered, release := make(chan struct{}), make(chan struct{})
	ts := startServer(t, "tcp", HandlerFunc(func(_ context.Context, r *Request) Action {
		if r.Recipient == "slow@example.com" {
			close(entered)
			<-release
		}
		return Dunno
	}))

	idle := dial(t, "tcp", ts.addr)
	idle.send(rcpt("alice@example.com"))
	idle.answer() // the server has it now

	busy := dial(t, "tcp", ts.addr)
	busy.send(rcpt("slow@example.com"))
	<-entered

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		shut <- ts.Shutdown(ctx)
	}()

	// It stops accepting...
	if err := ts.serveErr(t); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: got %v, want ErrServerClosed", err)
	}
	if !ts.l.closed.Load() {
		t.Errorf("listener: got open after Serve returned, want closed")
	}
	// ...closes the idle connection at once, not after the busy one...
	if got := idle.rest(); got != "" {
		t.Errorf("idle connection: got %q, want closed with nothing written", got)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	// ...and lets the request in flight have its answer.
	close(release)
	if got, want := busy.rest(), "action=DUNNO\n\n"; got != want {
		t.Errorf("connection with a request in flight: got %q, want %q then close", got, want)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: got %v, want nil", err)
		}
	case <-time.After(wait):
		t.Fatal("Shutdown did not return after the last request")
	}
}

func TestShutdownForced(t *testing.T) {
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
		{"deadline passed", func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), time.Unix(1, 0))
		}, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			entered := make(chan struct{})
			handlerErr := make(chan error, 1)
			ts := startServer(t, "tcp", HandlerFunc(func(ctx context.Context, _ *Request) Action {
				close(entered)
				<-ctx.Done() // a handler that honours its context
				handlerErr <- ctx.Err()
				return Dunno
			}))
			c := dial(t, "tcp", ts.addr)
			c.send(rcpt("alice@example.com"))
			<-entered

			ctx, cancel := tt.ctx()
			defer cancel()
			if err := ts.Shutdown(ctx); !errors.Is(err, tt.want) {
				t.Errorf("Shutdown: got %v, want %v", err, tt.want)
			}
			if err := <-handlerErr; !errors.Is(err, context.Canceled) {
				t.Errorf("handler's context: got %v, want context.Canceled", err)
			}
			c.rest() // closed; whether the answer made it first is a race
			if err := ts.serveErr(t); !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve: got %v, want ErrServerClosed", err)
			}
		})
	}
}

func TestServeAfterShutdown(t *testing.T) {
	checkGoroutines(t)
	s := &Server{Handler: dunno}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown of an unused server: got %v, want nil", err)
	}
	l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &closeListener{Listener: l}
	if err := s.Serve(cl); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown: got %v, want ErrServerClosed", err)
	}
	if !cl.closed.Load() {
		l.Close()
		t.Errorf("Serve after Shutdown: listener left open, want it closed")
	}
}

func TestConnState(t *testing.T) {
	checkGoroutines(t)
	deltas := make(chan int, 10)
	ts := startServer(t, "tcp", dunno, func(s *Server) {
		s.ConnState = func(d int) { deltas <- d }
	})
	next := func() int {
		select {
		case d := <-deltas:
			return d
		case <-time.After(wait):
			t.Fatal("ConnState not called")
			return 0
		}
	}
	c := dial(t, "tcp", ts.addr)
	if got := next(); got != +1 {
		t.Errorf("on connect: got %+d, want +1", got)
	}
	c.send(rcpt("alice@example.com"))
	c.answer()
	c.c.Close()
	if got := next(); got != -1 {
		t.Errorf("on close: got %+d, want -1", got)
	}
}

func TestIdleTimeout(t *testing.T) {
	checkGoroutines(t)
	ts := startServer(t, "tcp", dunno, func(s *Server) {
		s.IdleTimeout = 100 * time.Millisecond
	})
	c := dial(t, "tcp", ts.addr)
	c.send(rcpt("alice@example.com"))
	if got, want := c.answer(), "action=DUNNO\n\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	// Then nothing: the server closes the connection (well within the
	// client's deadline of wait) and says nothing more.
	if got := c.rest(); got != "" {
		t.Errorf("idle connection: got %q, want closed with nothing written", got)
	}
}

// ServeConn serves a connection the caller already has, such as a pipe pair
// under spawn(8).
func TestServeConn(t *testing.T) {
	checkGoroutines(t)
	s := &Server{Handler: byRecipient, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	srv, cli := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(srv)
	}()
	c := &client{t: t, c: cli, br: bufio.NewReader(cli)}
	_ = cli.SetDeadline(time.Now().Add(wait))
	go io.WriteString(cli, rcpt("nobody@example.com")) // net.Pipe is unbuffered
	if got, want := c.answer(), "action=550 5.1.1 User unknown\n\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	cli.Close()
	<-done
}

// noAddrConn has no peer address, as a net.Conn given to ServeConn may not.
type noAddrConn struct{ net.Conn }

func (noAddrConn) RemoteAddr() net.Addr { return nil }

func TestServeConnWithoutRemoteAddr(t *testing.T) {
	checkGoroutines(t)
	log := new(syncBuffer)
	s := &Server{Handler: dunno, Logger: slog.New(slog.NewTextHandler(log, nil))}
	srv, cli := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(noAddrConn{srv}) // must not panic on logging the peer
	}()
	_ = cli.SetDeadline(time.Now().Add(wait))
	go io.WriteString(cli, "malformed\n\n")
	if b, _ := io.ReadAll(cli); len(b) != 0 {
		t.Errorf("got %q, want closed with nothing written", b)
	}
	<-done
	cli.Close()
	if !strings.Contains(log.String(), "malformed") {
		t.Errorf("log: got %q, want a warning about the malformed request", log.String())
	}
}

func BenchmarkServerRoundTrip(b *testing.B) {
	l, err := Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Handler: dunno, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	go s.Serve(l)
	defer s.Shutdown(context.Background())
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := realRequest(b)
	want := []byte("action=DUNNO\n\n")
	got := make([]byte, len(want))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			b.Fatalf("got %q, want %q", got, want)
		}
	}
}

// A handler that panics costs its request a DUNNO, not the daemon: the
// panic is logged with its stack and reported, the connection and every
// other connection go on.
func TestServerRecoversHandlerPanic(t *testing.T) {
	checkGoroutines(t)
	var panics atomic.Int32
	h := HandlerFunc(func(ctx context.Context, r *Request) Action {
		if strings.HasPrefix(r.Recipient, "boom@") {
			panic("handler bug: " + r.Recipient)
		}
		return byRecipient(ctx, r)
	})
	ts := startServer(t, "tcp", h, func(s *Server) { s.Panicked = func() { panics.Add(1) } })
	first := dial(t, "tcp", ts.addr)
	first.send(rcpt("boom@example.com"))
	if got, want := first.answer(), "action=DUNNO\n\n"; got != want {
		t.Errorf("panicking request: got %q, want %q", got, want)
	}
	second := dial(t, "tcp", ts.addr)
	second.send(rcpt("nobody@example.com"))
	if got, want := second.answer(), "action=550 5.1.1 User unknown\n\n"; got != want {
		t.Errorf("another connection after the panic: got %q, want %q", got, want)
	}
	first.send(rcpt("nobody@example.com"))
	if got, want := first.answer(), "action=550 5.1.1 User unknown\n\n"; got != want {
		t.Errorf("the same connection after the panic: got %q, want %q", got, want)
	}
	if n := panics.Load(); n != 1 {
		t.Errorf("Panicked called %d times, want 1", n)
	}
	log := ts.log.String()
	for _, want := range []string{"level=ERROR", "handler bug: boom@example.com", "recipient=boom@example.com", "TestServerRecoversHandlerPanic"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}
