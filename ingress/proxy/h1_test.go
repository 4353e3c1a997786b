package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
)

// countingBackend is a backend that counts the connections it accepted.
func countingBackend(t *testing.T, h http.Handler) (addr string, conns *atomic.Int64, srv *httptest.Server) {
	conns = new(atomic.Int64)
	srv = httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return addrOf(srv), conns, srv
}

func TestH1ConnectionReuse(t *testing.T) {
	addr, conns, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head", "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/notmodified":
			w.WriteHeader(http.StatusNotModified)
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			w.Write([]byte("part1"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
			w.Header().Set("X-Sum", "42")
		default:
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, "ok")
		}
	}))
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{addr}}))
	srv := front(t, h)
	for i := range 20 {
		for _, p := range []string{"/", "/empty", "/notmodified", "/chunked"} {
			method := "GET"
			if p == "/" && i%2 == 1 {
				method = "POST"
			}
			req, _ := http.NewRequest(method, srv.URL+p, strings.NewReader("body"))
			req.Host = "a.test"
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if p == "/chunked" && (string(b) != "part1part2" || resp.Trailer.Get("X-Sum") != "42") {
				t.Fatalf("chunked: %q trailer %v", b, resp.Trailer)
			}
		}
		resp := do(h, "HEAD", "http://a.test/head", nil)
		resp.Body.Close()
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d upstream connections for 100 sequential requests, want 1 kept alive", n)
	}
}

func TestH1StaleConnection(t *testing.T) {
	addr, conns, srv := countingBackend(t, echoHandler("be"))
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{addr}}))
	if code := do(h, "GET", "http://a.test/", nil).StatusCode; code != 200 {
		t.Fatal(code)
	}
	// The backend drops its idle connections; the pooled one is stale.
	srv.CloseClientConnections()
	for i := range 3 {
		if code := do(h, "GET", "http://a.test/", nil).StatusCode; code != 200 {
			t.Fatalf("request %d after the backend closed idle connections: %d", i, code)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the stale one replaced once)", n)
	}
}

func TestH1ConnectionClose(t *testing.T) {
	addr, conns, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	}))
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{addr}}))
	for range 3 {
		if code := do(h, "GET", "http://a.test/", nil).StatusCode; code != 200 {
			t.Fatal(code)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3: the backend said close", n)
	}
}

func TestH1ClientGoneMidResponse(t *testing.T) {
	release := make(chan struct{})
	addr, conns, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.Write([]byte("first"))
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "ok")
	}))
	defer close(release)
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{addr}}))
	srv := front(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/stream", nil)
	req.Host = "a.test"
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("read %q %v", buf, err)
	}
	cancel()
	resp.Body.Close()
	// The half-read upstream connection must never go back to the pool:
	// the next request gets a fresh one and a clean answer.
	r := do(h, "GET", "http://a.test/next", nil)
	if b, _ := io.ReadAll(r.Body); r.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("next request: %d %q", r.StatusCode, b)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestAlive(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if !alive(client) {
		t.Error("open idle connection reported dead")
	}
	server.Write([]byte("x"))
	if alive(client) {
		t.Error("connection with unexpected data reported usable")
	}
	client2, _ := net.Dial("tcp", l.Addr().String())
	defer client2.Close()
	server2, _ := l.Accept()
	server2.Close()
	// The FIN arrives asynchronously; loopback delivers it at once, but poll briefly.
	for range 100 {
		if !alive(client2) {
			return
		}
		runtime.Gosched()
	}
	t.Error("connection closed by the peer reported alive")
}

func TestWithin(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, tt := range []struct {
		left, d time.Duration
		want    bool
	}{
		{60 * time.Second, 60 * time.Second, true},
		{60*time.Second - 10*time.Millisecond, 60 * time.Second, true},
		{60*time.Second - 60*time.Millisecond, 60 * time.Second, false}, // more than 50ms early
		{59 * time.Second, time.Second, false},                          // a longer timeout's deadline
		{time.Second - 40*time.Millisecond, time.Second, true},
		{time.Second - 60*time.Millisecond, time.Second, false},
		{-time.Second, time.Second, false},
	} {
		if got := within(now.Add(tt.left), now, tt.d); got != tt.want {
			t.Errorf("within(now+%s, %s) = %v, want %v", tt.left, tt.d, got, tt.want)
		}
	}
}

// TestTimeoutPerRouteOnSharedConnection: a kept-alive connection that
// served a route with the default 60s read timeout still times out after
// 200ms for a route that says so.
func TestTimeoutPerRouteOnSharedConnection(t *testing.T) {
	addr, conns, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{
		ingress("long", 0, "a.test", "/", "web"),
		ingress("short", 1, "b.test", "/", "web", "proxy-read-timeout", "200ms"),
	}, svc{"web", []string{addr}}))
	if code := do(h, "GET", "http://a.test/fast", nil).StatusCode; code != 200 {
		t.Fatal(code)
	}
	start := time.Now()
	if code := do(h, "GET", "http://b.test/slow", nil).StatusCode; code != http.StatusGatewayTimeout {
		t.Errorf("slow answer on the short route: %d, want 504", code)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s, want about 200ms", d)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections: the short route did not reuse the kept-alive one", n)
	}
}
