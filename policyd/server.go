package policyd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Handler decides the action for one request. It must return within its
// own budget; ctx is cancelled when the server is forced to stop.
type Handler interface {
	HandlePolicy(ctx context.Context, r *Request) Action
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, r *Request) Action

// HandlePolicy calls f.
func (f HandlerFunc) HandlePolicy(ctx context.Context, r *Request) Action { return f(ctx, r) }

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("policyd: server closed")

// Server serves the policy protocol on any number of listeners. Set the
// fields before the first Serve and do not change them afterwards.
type Server struct {
	// Handler answers requests. Required.
	Handler Handler
	// Logger receives protocol warnings. Default slog.Default().
	Logger *slog.Logger
	// IdleTimeout is how long a connection may wait for its next request.
	// It must exceed Postfix's smtpd_policy_service_max_idle (300s), so
	// Postfix is the side that closes idle connections. Default 330s.
	IdleTimeout time.Duration
	// WriteTimeout bounds writing one answer. Default 10s.
	WriteTimeout time.Duration
	// ConnState, if set, is called with +1 when a connection opens and -1
	// when it closes (for a gauge of open connections).
	ConnState func(delta int)
	// Panicked, if set, is called after a handler's panic was recovered
	// and logged (for a counter). The request is answered DUNNO and the
	// connection goes on.
	Panicked func()

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	closing   atomic.Bool
	wg        sync.WaitGroup
	baseOnce  sync.Once
	base      context.Context
	cancel    context.CancelFunc
}

func (s *Server) init() {
	s.baseOnce.Do(func() {
		s.base, s.cancel = context.WithCancel(context.Background())
		s.listeners = make(map[net.Listener]struct{})
		s.conns = make(map[net.Conn]struct{})
	})
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// Serve accepts connections on l and serves each in its own goroutine until
// Shutdown. It closes l when it returns.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()

	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			// Out of descriptors or buffers, a connection aborted before
			// accept: all passing. Only a closed listener ends Serve;
			// the daemon must not stop taking Postfix's connections
			// because one accept failed.
			if !errors.Is(err, net.ErrClosed) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger().Warn("policy accept error, backing off", "err", err, "delay", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.untrack(c)
			s.serve(c)
		}()
	}
}

// ServeConn serves one connection (such as stdin/stdout under Postfix's
// spawn(8)) until the peer closes it, an error occurs or Shutdown.
func (s *Server) ServeConn(c net.Conn) {
	s.init()
	if !s.track(c) {
		c.Close()
		return
	}
	defer s.untrack(c)
	s.serve(c)
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	if s.ConnState != nil {
		s.ConnState(+1)
	}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	if s.ConnState != nil {
		s.ConnState(-1)
	}
	s.wg.Done()
}

func (s *Server) serve(c net.Conn) {
	defer c.Close()
	log := s.logger()
	br := bufio.NewReaderSize(c, MaxLineLength+2)
	idle, wt := s.IdleTimeout, s.WriteTimeout
	if idle <= 0 {
		idle = 330 * time.Second
	}
	if wt <= 0 {
		wt = 10 * time.Second
	}
	buf := make([]byte, 0, 256)
	for {
		_ = c.SetReadDeadline(time.Now().Add(idle))
		// Shutdown sets closing before it expires read deadlines, so
		// either we see it here or our deadline is overwritten.
		if s.closing.Load() {
			return
		}
		req, err := ReadRequest(br)
		if err != nil {
			switch {
			case errors.Is(err, ErrMalformed):
				log.Warn("closing policy connection on malformed request", "remote", remote(c), "err", err)
			case errors.Is(err, io.EOF), s.closing.Load():
			default:
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					log.Debug("closing idle policy connection", "remote", remote(c))
				} else {
					log.Warn("policy connection read error", "remote", remote(c), "err", err)
				}
			}
			return
		}
		action := s.handle(req, c)
		if action == "" || strings.ContainsAny(string(action), "\r\n\x00") {
			// One line per answer, whatever a handler did.
			log.Error("handler returned an unsafe action, answering DUNNO", "action", string(action))
			action = Dunno
		}
		buf = append(append(append(buf[:0], "action="...), action...), "\n\n"...)
		_ = c.SetWriteDeadline(time.Now().Add(wt))
		if _, err := c.Write(buf); err != nil {
			log.Warn("policy connection write error", "remote", remote(c), "err", err)
			return
		}
	}
}

// handle asks the handler, recovering a panic: one bad request must not
// take the daemon, its other connections and its memory cache down. The
// request gets DUNNO, the answer a policy server gives when it has none.
func (s *Server) handle(req *Request, c net.Conn) (action Action) {
	defer func() {
		if v := recover(); v != nil {
			s.logger().Error("panic while answering a policy request, answering DUNNO",
				"remote", remote(c), "recipient", req.Recipient, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			if s.Panicked != nil {
				s.Panicked()
			}
			action = Dunno
		}
	}()
	return s.Handler.HandlePolicy(s.base, req)
}

// remote names c's peer for the log. A net.Conn given to ServeConn (a pipe
// pair under spawn(8)) may have no address at all.
func remote(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return "unknown"
}

// Shutdown stops accepting, lets connections finish the request they are
// handling (an idle connection is closed at once), and waits until all are
// gone or ctx ends; then it cancels the handlers' context, closes what is
// left and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.closing.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		_ = c.SetReadDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}
