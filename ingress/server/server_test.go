package server

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodenet/nodenet/ingress/tlsstore"
)

func newTestServer(t *testing.T) *Server {
	t.Helper()
	store := tlsstore.New()
	if err := store.SetDefault("", ""); err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })
	s := New(h, store.TLSConfig(), nil, slog.New(slog.DiscardHandler))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s
}

func opts(httpAddr, httpsAddr string) Options {
	return Options{HTTPListen: httpAddr, HTTPSListen: httpsAddr, ReadHeaderTimeout: time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 8192}
}

var client = &http.Client{Transport: &http.Transport{
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}, Timeout: 5 * time.Second}

func get(t *testing.T, url string) (string, error) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestListeners(t *testing.T) {
	s := newTestServer(t)
	if err := s.Apply(opts("127.0.0.1:0", "127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	h, hs := s.Addrs()
	if got, err := get(t, "http://"+h+"/"); err != nil || got != "HTTP/1.1" {
		t.Errorf("http: %q %v", got, err)
	}
	if got, err := get(t, "https://"+hs+"/"); err != nil || got != "HTTP/2.0" {
		t.Errorf("https: %q %v, want HTTP/2.0", got, err)
	}
	// TLS 1.1 is refused.
	conn, err := tls.Dial("tcp", hs, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err == nil {
		conn.Close()
		t.Error("TLS 1.1 handshake succeeded")
	}
	// Headers larger than the limit get 431.
	req, _ := http.NewRequest("GET", "http://"+h+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("x", 64<<10))
	if resp, err := client.Do(req); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("big header: %v %v, want 431", resp, err)
	}
}

func TestSlowlorisClosed(t *testing.T) {
	s := newTestServer(t)
	if err := s.Apply(opts("127.0.0.1:0", "")); err != nil {
		t.Fatal(err)
	}
	h, _ := s.Addrs()
	conn, err := net.Dial("tcp", h)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n") // never finishes the headers
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	b, _ := io.ReadAll(conn)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("connection held %s past the 1s read-header timeout", d)
	}
	if len(b) > 0 && !strings.Contains(string(b), "408") {
		t.Errorf("answer %q, want nothing or 408", b)
	}
}

func TestPortInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	s := newTestServer(t)
	err = s.Apply(opts(taken.Addr().String(), "127.0.0.1:0"))
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Apply = %v, want address in use", err)
	}
	if s.Errors()["http"] == "" {
		t.Error("Errors() does not report the http listener")
	}
	_, hs := s.Addrs()
	if _, err := get(t, "https://"+hs+"/"); err != nil {
		t.Errorf("https must serve while http cannot: %v", err)
	}
	// Once the port is free, the next Apply binds it.
	addr := taken.Addr().String()
	taken.Close()
	if err := s.Apply(opts(addr, "127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	if len(s.Errors()) != 0 {
		t.Errorf("Errors() = %v", s.Errors())
	}
	if _, err := get(t, "http://"+addr+"/"); err != nil {
		t.Error(err)
	}
}

// TestLiveChanges: new timeouts and a new address apply while requests
// flow, without a failed request.
func TestLiveChanges(t *testing.T) {
	s := newTestServer(t)
	if err := s.Apply(opts("127.0.0.1:0", "")); err != nil {
		t.Fatal(err)
	}
	h, _ := s.Addrs()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for range 4 {
		wg.Go(func() {
			// A fresh connection per request, so the accept path is exercised.
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
			for ctx.Err() == nil {
				resp, err := c.Get("http://" + h + "/")
				if err != nil {
					failed.Add(1)
					t.Log(err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				ok.Add(1)
			}
		})
	}
	for i := range 20 {
		o := opts("127.0.0.1:0", "") // the same configured address: a hand-over
		o.IdleTimeout = time.Duration(i+1) * time.Second
		if err := s.Apply(o); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if failed.Load() > 0 || ok.Load() == 0 {
		t.Errorf("%d failed, %d ok across 20 hand-overs", failed.Load(), ok.Load())
	}

	// A new address: the new one serves, the old one is closed.
	if err := s.Apply(opts("127.0.0.2:0", "")); err != nil {
		t.Fatal(err)
	}
	h2, _ := s.Addrs()
	if h2 == h {
		t.Fatalf("address unchanged: %s", h2)
	}
	if _, err := get(t, "http://"+h2+"/"); err != nil {
		t.Error(err)
	}
	if c, err := net.DialTimeout("tcp", h, time.Second); err == nil {
		c.Close()
		t.Errorf("old address %s still accepts", h)
	}
	// "" closes the listener.
	if err := s.Apply(opts("", "")); err != nil {
		t.Fatal(err)
	}
	if a, b := s.Addrs(); a != "" || b != "" {
		t.Errorf("Addrs = %q %q after disabling", a, b)
	}
}
