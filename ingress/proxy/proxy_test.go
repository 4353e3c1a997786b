package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/nodenet/nodenet/ingress/routes"
)

func backendOf(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.Header.Get("X-Backend")
}

func TestRoundRobin(t *testing.T) {
	a, b, c := echo(t, "a"), echo(t, "b"), echo(t, "c")
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")},
		svc{"web", []string{addrOf(a), addrOf(b), addrOf(c)}}))
	counts := map[string]int{}
	for range 30 {
		counts[backendOf(t, do(h, "GET", "http://a.test/", nil))]++
	}
	if counts["a"] != 10 || counts["b"] != 10 || counts["c"] != 10 {
		t.Errorf("counts = %v, want 10 each", counts)
	}
}

func TestNotFoundAndNoEndpoints(t *testing.T) {
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/app", "web")}, svc{"web", nil}))
	if code := do(h, "GET", "http://a.test/other", nil).StatusCode; code != http.StatusNotFound {
		t.Errorf("unmatched path: %d, want 404", code)
	}
	if code := do(h, "GET", "http://b.test/app", nil).StatusCode; code != http.StatusNotFound {
		t.Errorf("unmatched host: %d, want 404", code)
	}
	if code := do(h, "GET", "http://a.test/app", nil).StatusCode; code != http.StatusServiceUnavailable {
		t.Errorf("no endpoints: %d, want 503", code)
	}
	if code := do(h, "CONNECT", "http://a.test/app", nil).StatusCode; code != http.StatusMethodNotAllowed {
		t.Errorf("CONNECT: %d, want 405", code)
	}
}

func TestLeastRequests(t *testing.T) {
	gate := make(chan struct{})
	arrived := make(chan string, 1)
	blocking := func(name string) *testServer {
		return newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Block") != "" {
				arrived <- name
				<-gate
			}
			echoHandler(name)(w, r)
		}))
	}
	a, b := blocking("a"), blocking("b")
	for _, lr := range []bool{true, false} {
		t.Run(fmt.Sprintf("least-requests=%v", lr), func(t *testing.T) {
			o := testOptions()
			o.LeastRequests = lr
			h := newHandler(t, o, build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{a.addr, b.addr}}))
			done := make(chan struct{})
			go func() { defer close(done); backendOf(t, do(h, "GET", "http://a.test/", nil, "X-Block", "1")) }()
			busy := <-arrived
			counts := map[string]int{}
			for range 6 {
				counts[backendOf(t, do(h, "GET", "http://a.test/", nil))]++
			}
			gate <- struct{}{}
			<-done
			if lr && counts[busy] != 0 {
				t.Errorf("least-requests sent %d of 6 requests to the busy endpoint %s: %v", counts[busy], busy, counts)
			}
			if !lr && counts[busy] != 3 {
				t.Errorf("round-robin sent %d of 6 requests to %s, want 3: %v", counts[busy], busy, counts)
			}
		})
	}
}

func TestRetryAndEjection(t *testing.T) {
	live := echo(t, "live")
	dead := deadAddr(t)
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")},
		svc{"web", []string{addrOf(live), dead}}))
	// Idempotent requests without a body retry on the live endpoint.
	for i := range 10 {
		if resp := do(h, "GET", "http://a.test/", nil); resp.StatusCode != 200 || backendOf(t, resp) != "live" {
			t.Fatalf("GET %d: %d", i, resp.StatusCode)
		}
	}
	// The dead endpoint is ejected now: a POST (never retried) reaches the
	// live one every time.
	for i := range 10 {
		if resp := do(h, "POST", "http://a.test/", strings.NewReader("x")); resp.StatusCode != 200 {
			t.Fatalf("POST %d after ejection: %d", i, resp.StatusCode)
		}
	}

	// Without ejection memory, a POST to the dead endpoint is not retried: 502.
	h2 := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{dead}}))
	if code := do(h2, "POST", "http://a.test/", strings.NewReader("x")).StatusCode; code != http.StatusBadGateway {
		t.Errorf("POST to a dead endpoint: %d, want 502", code)
	}
}

func TestForwardedHeaders(t *testing.T) {
	be := echo(t, "be")
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{addrOf(be)}}))
	resp := do(h, "GET", "http://a.test/x?q=1", nil, "X-Forwarded-For", "6.6.6.6", "Forwarded", "for=6.6.6.6")
	want := map[string]string{
		"X-Host":                 "a.test",
		"X-Path":                 "/x?q=1",
		"Echo-X-Forwarded-For":   "192.0.2.1", // the spoofed value is dropped
		"Echo-X-Forwarded-Proto": "http",
		"Echo-X-Forwarded-Host":  "a.test",
		"Echo-Forwarded":         `for=192.0.2.1;host="a.test";proto=http`,
		"Echo-X-Real-Ip":         "192.0.2.1",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestRewrite(t *testing.T) {
	be := echo(t, "be")
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{
		ingress("re", 0, "a.test", "/app(/|$)(.*)", "web", "use-regex", "true", "rewrite-target", "/$2"),
		ingress("plain", 1, "b.test", "/old", "web", "rewrite-target", "/new"),
	}, svc{"web", []string{addrOf(be)}}))
	for in, want := range map[string]string{
		"http://a.test/app/users/7?x=1": "/users/7?x=1",
		"http://a.test/app":             "/",
		"http://b.test/old/deep":        "/new",
	} {
		if got := do(h, "GET", in, nil).Header.Get("X-Path"); got != want {
			t.Errorf("GET %s reached %q, want %q", in, got, want)
		}
	}
}

func TestCanary(t *testing.T) {
	main, canary := echo(t, "main"), echo(t, "canary")
	svcs := []svc{{"main", []string{addrOf(main)}}, {"canary", []string{addrOf(canary)}}}
	t.Run("weight", func(t *testing.T) {
		h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{
			ingress("main", 0, "a.test", "/", "main"),
			ingress("canary", 1, "a.test", "/", "canary", "canary", "true", "canary-weight", "30"),
		}, svcs...))
		n := 0
		for range 1000 {
			if backendOf(t, do(h, "GET", "http://a.test/", nil)) == "canary" {
				n++
			}
		}
		// 30% of 1000: the binomial standard deviation is 14.5; 6 of them.
		if n < 213 || n > 387 {
			t.Errorf("canary got %d of 1000, want about 300", n)
		}
	})
	t.Run("header", func(t *testing.T) {
		h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{
			ingress("main", 0, "a.test", "/", "main"),
			ingress("canary", 1, "a.test", "/", "canary", "canary", "true", "canary-by-header", "X-Canary"),
			ingress("main-b", 2, "b.test", "/", "main"),
			ingress("canary-b", 3, "b.test", "/", "canary", "canary", "true", "canary-by-header", "X-Canary", "canary-by-header-value", "blue", "canary-weight", "0"),
		}, svcs...))
		for _, tt := range []struct{ host, value, want string }{
			{"a.test", "always", "canary"}, {"a.test", "never", "main"}, {"a.test", "", "main"},
			{"b.test", "blue", "canary"}, {"b.test", "green", "main"}, {"b.test", "always", "main"},
		} {
			for range 5 {
				if got := backendOf(t, do(h, "GET", "http://"+tt.host+"/", nil, "X-Canary", tt.value)); got != tt.want {
					t.Errorf("%s X-Canary=%q reached %s, want %s", tt.host, tt.value, got, tt.want)
				}
			}
		}
	})
}

func TestAffinityCookie(t *testing.T) {
	a, b, c := echo(t, "a"), echo(t, "b"), echo(t, "c")
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{
		ingress("web", 0, "a.test", "/", "web", "affinity", "cookie", "session-cookie-name", "route")},
		svc{"web", []string{addrOf(a), addrOf(b), addrOf(c)}}))
	first := do(h, "GET", "http://a.test/", nil)
	var cookie *http.Cookie
	for _, ck := range first.Cookies() {
		if ck.Name == "route" {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly || strings.Contains(cookie.Value, "127.0.0.1") {
		t.Fatalf("Set-Cookie = %v, want an opaque HttpOnly route cookie", first.Header["Set-Cookie"])
	}
	want := backendOf(t, first)
	for range 20 {
		resp := do(h, "GET", "http://a.test/", nil, "Cookie", "route="+cookie.Value)
		if got := backendOf(t, resp); got != want {
			t.Fatalf("with cookie reached %s, want %s", got, want)
		}
		if len(resp.Cookies()) != 0 {
			t.Fatalf("a valid cookie was replaced: %v", resp.Cookies())
		}
	}
	// An unknown cookie value gets a fresh pick and a new cookie.
	if resp := do(h, "GET", "http://a.test/", nil, "Cookie", "route=bogus"); len(resp.Cookies()) != 1 {
		t.Errorf("stale cookie not replaced: %v", resp.Header["Set-Cookie"])
	}
}

func TestBodyLimit(t *testing.T) {
	be := echo(t, "be")
	o := testOptions()
	o.MaxBodySize = 50
	h := newHandler(t, o, build(t, []*networkingv1.Ingress{
		ingress("small", 0, "a.test", "/", "web", "proxy-body-size", "10"),
		ingress("default", 1, "b.test", "/", "web"),
		ingress("unlimited", 2, "c.test", "/", "web", "proxy-body-size", "0"),
	}, svc{"web", []string{addrOf(be)}}))
	body := strings.Repeat("x", 100)
	tests := []struct {
		host    string
		chunked bool
		want    int
	}{
		{"a.test", false, 413}, {"a.test", true, 413},
		{"b.test", false, 413}, {"b.test", true, 413},
		{"c.test", false, 200}, {"c.test", true, 200},
	}
	srv := front(t, h)
	for _, tt := range tests {
		var r io.Reader = strings.NewReader(body)
		if tt.chunked {
			r = io.MultiReader(r) // unknown length: sent chunked
		}
		req, _ := http.NewRequest("POST", srv.URL+"/", r)
		req.Host = tt.host
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s chunked=%v: %d, want %d", tt.host, tt.chunked, resp.StatusCode, tt.want)
		}
	}
	// A large body the client keeps sending: the 413 still reaches it
	// (no reset while it writes), with or without a declared length.
	for _, chunked := range []bool{false, true} {
		var r io.Reader = strings.NewReader(strings.Repeat("x", 4<<20))
		if chunked {
			r = io.MultiReader(r)
		}
		req, _ := http.NewRequest("POST", srv.URL+"/", r)
		req.Host = "a.test"
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("4 MiB body (chunked %v): %v, want a 413 answer", chunked, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Errorf("4 MiB body (chunked %v): %d, want 413", chunked, resp.StatusCode)
		}
	}
	if code := do(h, "POST", "http://a.test/", strings.NewReader("short")).StatusCode; code != 200 {
		t.Errorf("small body: %d", code)
	}
}

func TestSourceRange(t *testing.T) {
	be := echo(t, "be")
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{
		ingress("deny", 0, "a.test", "/", "web", "whitelist-source-range", "10.0.0.0/8"),
		ingress("allow", 1, "b.test", "/", "web", "allowlist-source-range", "10.0.0.0/8, 192.0.2.0/24"),
	}, svc{"web", []string{addrOf(be)}}))
	if code := do(h, "GET", "http://a.test/", nil).StatusCode; code != 403 {
		t.Errorf("outside range: %d, want 403", code)
	}
	if code := do(h, "GET", "http://b.test/", nil).StatusCode; code != 200 {
		t.Errorf("inside range: %d, want 200", code)
	}
}

func TestRedirects(t *testing.T) {
	be := echo(t, "be")
	withTLS := func(i *networkingv1.Ingress) *networkingv1.Ingress {
		i.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{i.Spec.Rules[0].Host}}}
		return i
	}
	o := testOptions()
	h := newHandler(t, o, build(t, []*networkingv1.Ingress{
		withTLS(ingress("tls", 0, "a.test", "/", "web")),
		withTLS(ingress("tls-off", 1, "b.test", "/", "web", "ssl-redirect", "false")),
		ingress("force", 2, "c.test", "/", "web", "force-ssl-redirect", "true"),
		ingress("plain", 3, "d.test", "/", "web"),
	}, svc{"web", []string{addrOf(be)}}))
	tests := []struct{ url, wantLoc string }{
		{"http://a.test/p?q=1", "https://a.test/p?q=1"},
		{"http://a.test:8080/p", "https://a.test/p"},
		{"http://b.test/p", ""},
		{"http://c.test/p", "https://c.test/p"},
		{"http://d.test/p", ""},
	}
	for _, tt := range tests {
		resp := do(h, "GET", tt.url, nil)
		if tt.wantLoc == "" {
			if resp.StatusCode != 200 {
				t.Errorf("%s: %d, want 200", tt.url, resp.StatusCode)
			}
			continue
		}
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != tt.wantLoc {
			t.Errorf("%s: %d %q, want 308 %q", tt.url, resp.StatusCode, resp.Header.Get("Location"), tt.wantLoc)
		}
	}
	// Over TLS there is nothing to redirect.
	r := httptestTLSRequest("http://a.test/p")
	w := newRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Errorf("HTTPS request: %d, want 200", w.Code)
	}
	// A non-standard HTTPS port is named in the redirect.
	o.HTTPSPort = 8443
	h.SetOptions(o)
	if loc := do(h, "GET", "http://a.test/p", nil).Header.Get("Location"); loc != "https://a.test:8443/p" {
		t.Errorf("Location = %q, want port 8443", loc)
	}
}

func TestReadTimeout(t *testing.T) {
	slow := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{
		ingress("web", 0, "a.test", "/", "web", "proxy-read-timeout", "200ms")}, svc{"web", []string{slow.addr}}))
	start := time.Now()
	if code := do(h, "GET", "http://a.test/", nil).StatusCode; code != http.StatusGatewayTimeout {
		t.Errorf("slow upstream: %d, want 504", code)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("timeout took %s", d)
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	be := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "no upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw) // echo
	}))
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{ingress("ws", 0, "a.test", "/", "web")}, svc{"web", []string{be.addr}}))
	srv := front(t, h)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(conn, "GET /chat HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	for _, msg := range []string{"ping\n", "second message\n"} {
		fmt.Fprint(conn, msg)
		got, err := br.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo = %q, %v; want %q", got, err, msg)
		}
	}
}

func TestGRPCOverH2C(t *testing.T) {
	var proto atomic.Value
	be := newServerH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto.Store(r.Proto)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
		w.Header().Set("Grpc-Status", "0")
	}))
	h := newHandler(t, testOptions(), build(t, []*networkingv1.Ingress{
		ingress("grpc", 0, "a.test", "/", "web", "backend-protocol", "GRPC")}, svc{"web", []string{be.addr}}))
	srv := front(t, h)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &p}}
	req, _ := http.NewRequest("POST", srv.URL+"/echo.Echo/Say", strings.NewReader("\x00\x00\x00\x00\x05hello"))
	req.Host = "a.test"
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "\x00\x00\x00\x00\x05hello" || resp.Trailer.Get("Grpc-Status") != "0" || resp.ProtoMajor != 2 {
		t.Errorf("response %s body %q trailer %v", resp.Proto, body, resp.Trailer)
	}
	if got := proto.Load(); got != "HTTP/2.0" {
		t.Errorf("backend saw %v, want HTTP/2.0 (h2c)", got)
	}
}

// TestSwapUnderLoad: 50 table swaps while requests flow; none fails.
func TestSwapUnderLoad(t *testing.T) {
	a, b := echo(t, "a"), echo(t, "b")
	tables := []*routes.Table{
		build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{addrOf(a)}}),
		build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web"), ingress("x", 1, "x.test", "/x", "web")}, svc{"web", []string{addrOf(a), addrOf(b)}}),
	}
	h := newHandler(t, testOptions(), tables[0])
	srv := front(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequest("GET", srv.URL+"/", nil)
				req.Host = "a.test"
				resp, err := srv.Client().Do(req)
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
				if resp != nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	for i := range 50 {
		h.Swap(tables[i%2])
		time.Sleep(2 * time.Millisecond) // let requests run on each table
	}
	cancel()
	wg.Wait()
	if failed.Load() != 0 || ok.Load() < 50 {
		t.Errorf("%d failed, %d ok", failed.Load(), ok.Load())
	}
}
