package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodenet/nodenet/daemon/logging"
	"github.com/nodenet/nodenet/ingress/server"
	"github.com/nodenet/nodenet/ingress/tlsstore"
)

// The full-path benchmarks measure what one proxied request costs the
// daemon: listener (server package), handler, h1 upstream transport,
// metrics and the access log as the daemon sets it up. Client and backend
// are raw sockets with fixed bytes, so that little of the CPU measured is
// theirs.

// rawBackend answers every request with a fixed small response.
func rawBackend(b *testing.B) string {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n")
	return rawServer(b, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			// Requests through the proxy carry no body.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 {
					break
				}
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
}

// rawServer accepts loopback connections until the test ends and hands
// each to serve on its own goroutine (closing it after); it returns the
// address.
func rawServer(tb testing.TB, serve func(net.Conn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// readRawResponse reads one Content-Length framed response.
func readRawResponse(br *bufio.Reader) error {
	n := -1
	first := true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if first {
			if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
				return io.ErrUnexpectedEOF
			}
			first = false
			continue
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if n < 0 {
		return io.ErrUnexpectedEOF
	}
	_, err := br.Discard(n)
	return err
}

// fullSetup starts a server with the handler as the daemon runs them.
func fullSetup(b *testing.B) (httpAddr, httpsAddr string) {
	be := rawBackend(b)
	tb := build(b, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{be}})
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	o := testOptions()
	o.AccessLog = true
	log := slog.New(slog.DiscardHandler)
	h := New(o, m, log)
	h.Swap(tb)
	lb := &LineBuffer{W: io.Discard}
	h.UseAccessLogger(logging.New(lb, "text", new(slog.LevelVar)).With("component", "ingress"), lb.Flush)
	b.Cleanup(h.Close)
	store := tlsstore.New()
	if err := store.SetDefault("", ""); err != nil {
		b.Fatal(err)
	}
	s := server.New(h, store.TLSConfig(), nil, log)
	if err := s.Apply(server.Options{HTTPListen: "127.0.0.1:0", HTTPSListen: "127.0.0.1:0", ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s.Addrs()
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds the CPU time per request (client and backend included):
// on a busy machine a steadier measure than ns/op.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

var rawRequest = []byte("GET /x HTTP/1.1\r\nHost: a.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")

func benchKeepAlive(b *testing.B, conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	b.ReportAllocs()
	start := cpuTime()
	defer func() { reportCPU(b, start) }()
	for b.Loop() {
		if _, err := conn.Write(rawRequest); err != nil {
			b.Fatal(err)
		}
		if err := readRawResponse(br); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFullHTTP: one keep-alive HTTP/1.1 client connection.
func BenchmarkFullHTTP(b *testing.B) {
	addr, _ := fullSetup(b)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	benchKeepAlive(b, conn)
}

// BenchmarkFullHTTPS: one keep-alive HTTP/1.1 over TLS client connection.
func BenchmarkFullHTTPS(b *testing.B) {
	_, addr := fullSetup(b)
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}, ServerName: "a.test"}) //nolint:gosec // test
	if err != nil {
		b.Fatal(err)
	}
	benchKeepAlive(b, conn)
}

// BenchmarkFullHTTPNewConn: a new client connection per request.
func BenchmarkFullHTTPNewConn(b *testing.B) {
	addr, _ := fullSetup(b)
	req := []byte("GET /x HTTP/1.1\r\nHost: a.test\r\nUser-Agent: bench\r\nAccept: */*\r\nConnection: close\r\n\r\n")
	b.ReportAllocs()
	start := cpuTime()
	defer func() { reportCPU(b, start) }()
	for b.Loop() {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		if err := readRawResponse(bufio.NewReader(conn)); err != nil {
			b.Fatal(err)
		}
		conn.Close()
	}
}
