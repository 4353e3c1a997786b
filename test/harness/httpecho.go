package harness

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HTTPEcho is a backend for ingress tests, run as goroutines of the test
// process on sockets opened inside a pod's namespace (the pod's IP, as a
// container would). It answers what a reverse proxy test needs to see:
//
//   - plain HTTP/1.1 and h2c (HTTP/2 with prior knowledge) on one port, and
//     HTTP/1.1 and h2 over TLS (a self-signed certificate) on another;
//   - an EchoReply as JSON: who answered, and the request as it arrived;
//   - a WebSocket upgrade: every data frame comes back as it was sent;
//   - gRPC over HTTP/2 (content-type application/grpc): every message comes
//     back as "<pod>:<message>", then grpc-status 0 as a trailer.
//
// Request headers shape the answer: X-Echo-Delay (a Go duration) waits
// before answering, X-Echo-Status sets the status code, X-Echo-Hold-Body (a
// duration) waits before reading the request body.
type HTTPEcho struct {
	Name string // the pod name in every answer

	small   bool
	servers []*http.Server
	wg      sync.WaitGroup // serving goroutines

	mu       sync.Mutex            // guards hijacked
	hijacked map[net.Conn]struct{} // WebSocket connections, which the servers no longer track
}

// HTTPEchoConfig says where an HTTPEcho listens.
type HTTPEchoConfig struct {
	Name     string // pod name in every answer
	HTTPAddr string // HTTP/1.1 + h2c, e.g. ":8080"; "" for none
	TLSAddr  string // HTTP/1.1 + h2 over TLS, e.g. ":8443"; "" for none
	// Small answers every plain request with "<name>\n" instead of JSON,
	// so a benchmark measures the proxy, not the backend.
	Small bool
}

// EchoReply is HTTPEcho's JSON answer.
type EchoReply struct {
	Pod       string      `json:"pod"`
	Method    string      `json:"method"`
	Host      string      `json:"host"`
	URI       string      `json:"uri"`   // the request target as the backend got it
	Proto     string      `json:"proto"` // HTTP/1.1, HTTP/2.0
	TLS       bool        `json:"tls"`
	Remote    string      `json:"remote"` // ip:port of the connection's peer
	Header    http.Header `json:"header"`
	BodyBytes int64       `json:"bodyBytes"`
}

// StartHTTPEcho listens inside ns and serves until Close.
func StartHTTPEcho(ns *NS, cfg HTTPEchoConfig) (*HTTPEcho, error) {
	e := &HTTPEcho{Name: cfg.Name, small: cfg.Small, hijacked: map[net.Conn]struct{}{}}
	if cfg.HTTPAddr != "" {
		l, err := ns.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("echo %s: listen %s in %s: %w", cfg.Name, cfg.HTTPAddr, ns.Name, err)
		}
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		e.serve(l, &http.Server{Protocols: &p})
	}
	if cfg.TLSAddr != "" {
		cert, err := selfSignedEchoCert()
		if err != nil {
			e.Close()
			return nil, err
		}
		l, err := ns.Listen("tcp", cfg.TLSAddr)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("echo %s: listen %s in %s: %w", cfg.Name, cfg.TLSAddr, ns.Name, err)
		}
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		srv := &http.Server{Protocols: &p, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}}
		e.serve(tls.NewListener(l, srv.TLSConfig), srv)
	}
	return e, nil
}

func (e *HTTPEcho) serve(l net.Listener, srv *http.Server) {
	srv.Handler = http.HandlerFunc(e.handle)
	srv.ReadHeaderTimeout = 10 * time.Second
	srv.ErrorLog = nil
	e.servers = append(e.servers, srv)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		_ = srv.Serve(l) // ErrServerClosed after Close
	}()
}

// Close stops listening, closes every connection (upgraded ones too) and
// waits for the serving goroutines. Close it before its namespace goes:
// open sockets would keep the namespace alive, unnamed.
func (e *HTTPEcho) Close() {
	for _, s := range e.servers {
		_ = s.Close()
	}
	e.mu.Lock()
	for c := range e.hijacked {
		_ = c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// Shutdown stops listening and waits until the requests in flight are
// answered, as a server that exits gracefully on SIGTERM; upgraded
// connections are closed. Close still has to be called.
func (e *HTTPEcho) Shutdown(ctx context.Context) error {
	var errs []error
	for _, s := range e.servers {
		errs = append(errs, s.Shutdown(ctx))
	}
	e.mu.Lock()
	for c := range e.hijacked {
		_ = c.Close()
	}
	e.mu.Unlock()
	return errors.Join(errs...)
}

func (e *HTTPEcho) handle(w http.ResponseWriter, r *http.Request) {
	if d := r.Header.Get("X-Echo-Hold-Body"); d != "" {
		if !sleepCtx(r, d) {
			return
		}
	}
	switch {
	case strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
		e.webSocket(w, r)
		return
	case strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc"):
		e.grpc(w, r)
		return
	}
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if d := r.Header.Get("X-Echo-Delay"); d != "" {
		if !sleepCtx(r, d) {
			return
		}
	}
	code := http.StatusOK
	if s := r.Header.Get("X-Echo-Status"); s != "" {
		if c, err := strconv.Atoi(s); err == nil && c >= 200 && c < 600 {
			code = c
		}
	}
	w.Header().Set("X-Pod-Name", e.Name)
	if e.small {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, e.Name+"\n")
		return
	}
	body, _ := json.Marshal(EchoReply{
		Pod: e.Name, Method: r.Method, Host: r.Host, URI: r.RequestURI, Proto: r.Proto,
		TLS: r.TLS != nil, Remote: r.RemoteAddr, Header: r.Header, BodyBytes: n,
	})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// sleepCtx waits for the duration d names; false if the request went away
// or d is no duration.
func sleepCtx(r *http.Request, d string) bool {
	dur, err := time.ParseDuration(d)
	if err != nil {
		return false
	}
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// webSocket completes the RFC 6455 handshake and echoes data frames until
// the client closes.
func (e *HTTPEcho) webSocket(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if key == "" || !headerHasToken(r.Header, "Connection", "upgrade") {
		http.Error(w, "bad websocket handshake", http.StatusBadRequest)
		return
	}
	rc := http.NewResponseController(w)
	conn, brw, err := rc.Hijack()
	if err != nil {
		http.Error(w, "hijack: "+err.Error(), http.StatusInternalServerError)
		return
	}
	e.mu.Lock()
	e.hijacked[conn] = struct{}{}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.hijacked, conn)
		e.mu.Unlock()
		conn.Close()
	}()
	_ = conn.SetDeadline(time.Time{})
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Pod-Name: %s\r\n\r\n", WSAccept(key), e.Name)
	if err := brw.Flush(); err != nil {
		return
	}
	for {
		f, err := ReadWSFrame(brw.Reader)
		if err != nil {
			return
		}
		switch f.Opcode {
		case WSClose:
			_ = WriteWSFrame(brw.Writer, WSFrame{Opcode: WSClose, Payload: f.Payload}, false)
			_ = brw.Flush()
			return
		case WSPing:
			f.Opcode = WSPong
		}
		if err := WriteWSFrame(brw.Writer, f, false); err != nil {
			return
		}
		if err := brw.Flush(); err != nil {
			return
		}
	}
}

// grpc answers a gRPC call over HTTP/2 (any method): each request message
// comes back as "<pod>:<message>", then the status trailers.
func (e *HTTPEcho) grpc(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 {
		http.Error(w, "gRPC needs HTTP/2, got "+r.Proto, http.StatusHTTPVersionNotSupported)
		return
	}
	msgs, err := ReadGRPCMessages(r.Body)
	if err != nil {
		http.Error(w, "read gRPC request: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("X-Pod-Name", e.Name)
	w.Header().Set("X-Echo-Proto", r.Proto)
	w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
	w.WriteHeader(http.StatusOK)
	for _, m := range msgs {
		_, _ = w.Write(GRPCFrame([]byte(e.Name + ":" + string(m))))
	}
	w.Header().Set("Grpc-Status", "0")
	w.Header().Set("Grpc-Message", "")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

var (
	echoCertOnce sync.Once
	echoCert     tls.Certificate
	echoCertErr  error
)

// selfSignedEchoCert is the backends' TLS certificate: one per process,
// self-signed, as an in-cluster backend's usually is.
func selfSignedEchoCert() (tls.Certificate, error) {
	echoCertOnce.Do(func() {
		ca, err := NewTestCA("echo-backend")
		if err != nil {
			echoCertErr = err
			return
		}
		certPEM, keyPEM, err := ca.Issue("echo.backend.test")
		if err != nil {
			echoCertErr = err
			return
		}
		echoCert, echoCertErr = tls.X509KeyPair(certPEM, keyPEM)
	})
	if echoCertErr != nil {
		return tls.Certificate{}, errors.Join(errors.New("echo backend certificate"), echoCertErr)
	}
	return echoCert, nil
}
