package controller

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"
)

// serveForTest serves h on a loopback port with limits and returns its address.
func serveForTest(t *testing.T, limits ServerLimits, h http.Handler) string {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	s, err := Serve(ctx, limits, Endpoint{Name: "test", Address: "127.0.0.1:0", Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s.Addr(0).String()
}

func TestServeRefusesBusyAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Serve(context.Background(), DefaultServerLimits(), Endpoint{Name: "health", Address: ln.Addr().String(), Handler: http.NotFoundHandler()})
	if err == nil || !strings.Contains(err.Error(), `health endpoint: listen on "`+ln.Addr().String()+`"`) {
		t.Fatalf("error %v, want one naming the endpoint and the address", err)
	}
}

// sendGet sends one GET on conn, reads the response and returns its status code and whether the
// server closes the connection after it.
func sendGet(t *testing.T, conn net.Conn, br *bufio.Reader, path string) (code int, closing bool) {
	t.Helper()
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Close
}

// closedWithin reports whether the server closes conn within d (a read returns EOF or a reset).
func closedWithin(conn net.Conn, br *bufio.Reader, d time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	_, err := br.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func TestIdleKeepAliveConnectionClosed(t *testing.T) {
	limits := DefaultServerLimits()
	limits.IdleTimeout = 300 * time.Millisecond
	addr := serveForTest(t, limits, HealthHandler(func() bool { return true }))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	if code, closing := sendGet(t, conn, br, "/healthz"); code != http.StatusOK || closing {
		t.Fatalf("first request: %d, close %v; want 200 on a kept-alive connection", code, closing)
	}
	start := time.Now()
	if !closedWithin(conn, br, 5*time.Second) {
		t.Fatal("the idle keep-alive connection is still open after 5 s (idle timeout 300 ms)")
	}
	if waited := time.Since(start); waited < limits.IdleTimeout/2 {
		t.Fatalf("closed after %v, before the idle timeout %v", waited, limits.IdleTimeout)
	}
}

func TestConnectionCapClosesOldestNotInHandler(t *testing.T) {
	limits := DefaultServerLimits()
	limits.MaxConnections = 3
	release := make(chan struct{})
	var inHandler sync.WaitGroup
	mux := http.NewServeMux()
	mux.Handle("/", HealthHandler(func() bool { return true }))
	mux.HandleFunc("/block", func(w http.ResponseWriter, _ *http.Request) { inHandler.Done(); <-release })
	addr := serveForTest(t, limits, mux)
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}

	// Silent, half-sent and idle keep-alive connections fill the cap; each new connection closes
	// the oldest of them, and /readyz answers every time.
	silent, silentR := dial()
	partial, partialR := dial()
	if _, err := io.WriteString(partial, "GET /readyz HTTP/1.1\r\nHost: te"); err != nil {
		t.Fatal(err)
	}
	idle, idleR := dial()
	sendGet(t, idle, idleR, "/healthz")
	for i, victim := range []struct {
		name string
		conn net.Conn
		r    *bufio.Reader
	}{{"silent", silent, silentR}, {"half-sent request", partial, partialR}, {"idle keep-alive", idle, idleR}} {
		c, r := dial()
		if code, _ := sendGet(t, c, r, "/readyz"); code != http.StatusOK {
			t.Fatalf("/readyz at the cap (%d): %d", i, code)
		}
		if !closedWithin(victim.conn, victim.r, 2*time.Second) {
			t.Fatalf("the %s connection was not closed for a new one at the cap", victim.name)
		}
	}

	// Connections inside a handler are never closed for a new one: at the cap with all of them
	// busy, the new connection is the one closed.
	closeAll := sync.OnceFunc(func() { close(release) })
	t.Cleanup(closeAll)
	var busy []net.Conn
	inHandler.Add(limits.MaxConnections)
	for range limits.MaxConnections {
		c, _ := dial()
		if _, err := io.WriteString(c, "GET /block HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		busy = append(busy, c)
	}
	inHandler.Wait()
	extra, extraR := dial()
	if !closedWithin(extra, extraR, 2*time.Second) {
		t.Fatal("a connection past the cap stayed open while every other one was inside a handler")
	}
	closeAll()
	for i, c := range busy {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("busy connection %d: %v, want its request answered", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("busy connection %d: %d, want 200", i, resp.StatusCode)
		}
	}
}
