package controller

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// ServerLimits bound what one client can hold of an HTTP server of the controller (the metrics and
// health endpoints; docs/install.md, "Hardened install").
type ServerLimits struct {
	// ReadHeaderTimeout bounds the TLS handshake and the request headers; ReadTimeout the whole
	// request; WriteTimeout the handler and the response; IdleTimeout a keep-alive connection
	// between requests.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxConnections caps the open connections. At the cap a new connection closes the oldest one
	// that is not inside a handler (idle, in its TLS handshake or still sending its request), so
	// idle or slow clients cannot keep a probe out; when every connection is inside a handler
	// (each bounded by WriteTimeout), the new one is closed.
	MaxConnections int
	// MaxHeaderBytes caps the request headers (a bearer token is about 1 KiB).
	MaxHeaderBytes int
}

// DefaultServerLimits: a Prometheus scrape and the kubelet's probes need one connection each and
// answer in milliseconds; a metrics request may wait up to reviewTimeout for the API server.
func DefaultServerLimits() ServerLimits {
	return ServerLimits{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      reviewTimeout + 10*time.Second,
		IdleTimeout:       90 * time.Second, // longer than the usual 30-60 s scrape interval
		MaxConnections:    64,
		MaxHeaderBytes:    16 << 10,
	}
}

// Endpoint is one HTTP server of the controller.
type Endpoint struct {
	Name    string // in errors and logs: metrics, health
	Address string // host:port
	Handler http.Handler
	TLS     *tls.Config // nil: plain HTTP
}

// Servers are the running endpoints.
type Servers struct {
	servers []*http.Server
	addrs   []net.Addr
	ctx     context.Context
}

// Serve listens on every endpoint's address first (so a busy port fails the start) and serves them
// in the background, each within limits. HTTP/2 is off: one request at a time per connection is
// what the connection cap accounts for.
func Serve(ctx context.Context, limits ServerLimits, eps ...Endpoint) (*Servers, error) {
	s := &Servers{ctx: ctx}
	for _, ep := range eps {
		ln, err := net.Listen("tcp", ep.Address)
		if err != nil {
			s.Shutdown()
			return nil, fmt.Errorf("%s endpoint: listen on %q: %w", ep.Name, ep.Address, err)
		}
		if ep.TLS != nil {
			ln = tls.NewListener(ln, ep.TLS)
		}
		cl := newConnLimiter(limits.MaxConnections)
		srv := &http.Server{
			Handler:           cl.track(ep.Handler),
			ReadHeaderTimeout: limits.ReadHeaderTimeout,
			ReadTimeout:       limits.ReadTimeout,
			WriteTimeout:      limits.WriteTimeout,
			IdleTimeout:       limits.IdleTimeout,
			MaxHeaderBytes:    limits.MaxHeaderBytes,
			ConnState:         cl.connState,
			ConnContext:       cl.connContext,
			TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){}, // no HTTP/2
			// Handshake errors of closed or scanning clients: debug, not one error line each.
			ErrorLog: log.New(klogWriter{klog.FromContext(ctx).V(4).WithValues("endpoint", ep.Name)}, "", 0),
		}
		s.servers = append(s.servers, srv)
		s.addrs = append(s.addrs, ln.Addr())
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				klog.FromContext(ctx).Error(err, "HTTP server stopped", "endpoint", ep.Name, "address", ep.Address)
			}
		}()
	}
	return s, nil
}

// Addr returns the address endpoint i listens on (the port chosen for ":0", in tests).
func (s *Servers) Addr(i int) net.Addr { return s.addrs[i] }

// Shutdown stops the servers, waiting up to 5 s for requests in flight.
func (s *Servers) Shutdown() {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 5*time.Second)
	defer cancel()
	for _, srv := range s.servers {
		_ = srv.Shutdown(sctx)
	}
}

// connLimiter keeps at most max connections, tracked with http.Server.ConnState.
type connLimiter struct {
	max   int
	mu    sync.Mutex
	order *list.List // of *trackedConn, oldest first
	conns map[net.Conn]*list.Element
}

type trackedConn struct {
	conn net.Conn
	busy bool // inside a handler
}

type connKey struct{}

func newConnLimiter(limit int) *connLimiter {
	return &connLimiter{max: limit, order: list.New(), conns: map[net.Conn]*list.Element{}}
}

func (l *connLimiter) connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

func (l *connLimiter) connState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		if victim := l.add(c); victim != nil {
			closeRaw(victim)
		}
	case http.StateHijacked, http.StateClosed:
		l.mu.Lock()
		if e, ok := l.conns[c]; ok {
			l.order.Remove(e)
			delete(l.conns, c)
		}
		l.mu.Unlock()
	}
}

// add tracks c and, past the cap, returns the connection to close: the oldest one not inside a
// handler, or c itself when every other one is.
func (l *connLimiter) add(c net.Conn) net.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.order.Len() < l.max {
		l.conns[c] = l.order.PushBack(&trackedConn{conn: c})
		return nil
	}
	for e := l.order.Front(); e != nil; e = e.Next() {
		if tc := e.Value.(*trackedConn); !tc.busy {
			l.order.Remove(e)
			delete(l.conns, tc.conn)
			l.conns[c] = l.order.PushBack(&trackedConn{conn: c})
			return tc.conn
		}
	}
	return c
}

// track marks the connection busy while h serves a request on it.
func (l *connLimiter) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(connKey{}).(net.Conn)
		l.setBusy(c, true)
		defer l.setBusy(c, false)
		h.ServeHTTP(w, r)
	})
}

func (l *connLimiter) setBusy(c net.Conn, busy bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.conns[c]; ok {
		e.Value.(*trackedConn).busy = busy
	}
}

// closeRaw closes the socket under c without a TLS close_notify (which could block on a client
// that does not read).
func closeRaw(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	_ = c.Close()
}

// klogWriter sends the lines of a log.Logger to logger.
type klogWriter struct{ logger klog.Logger }

func (w klogWriter) Write(p []byte) (int, error) {
	w.logger.Info(strings.TrimSpace(string(p)))
	return len(p), nil
}
