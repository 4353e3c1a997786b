// Package server runs the ingress listeners: plain HTTP (HTTP/1.1 and h2c
// with prior knowledge) and TLS (HTTP/1.1 and HTTP/2), with read-header and
// idle timeouts and a header size limit. Apply changes them live: a new
// address is bound before the old listener closes, and new timeouts take
// effect through a fresh http.Server that takes over the same listening
// socket, while the old one finishes its connections gracefully.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Options are the listener settings.
type Options struct {
	HTTPListen        string // "" = none
	HTTPSListen       string // "" = none
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
}

// drainTimeout bounds how long a replaced http.Server may finish its
// requests before its connections are closed.
const drainTimeout = 30 * time.Second

// Server owns the two listeners.
type Server struct {
	handler   http.Handler
	tls       *tls.Config
	connState func(net.Conn, http.ConnState)
	log       *slog.Logger

	mu    sync.Mutex // guards the fields below and serializes Apply/Shutdown
	opts  Options
	http  *endpoint
	https *endpoint
	errs  map[string]string // "http"/"https" -> why it is not listening
	wg    sync.WaitGroup    // draining old servers
}

// New returns a server; nothing listens before Apply.
func New(h http.Handler, tlsCfg *tls.Config, connState func(net.Conn, http.ConnState), log *slog.Logger) *Server {
	return &Server{handler: h, tls: tlsCfg, connState: connState, log: log, errs: map[string]string{}}
}

// Apply brings the listeners in line with o. Each listener is handled on
// its own: one failing to bind (say, the port is taken) leaves the other
// serving and is reported in the error and in Status.
func (s *Server) Apply(o Options) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	var err error
	s.http, err = s.apply("http", s.http, o.HTTPListen, o, false)
	errs = append(errs, err)
	s.https, err = s.apply("https", s.https, o.HTTPSListen, o, true)
	errs = append(errs, err)
	s.opts = o
	return errors.Join(errs...)
}

func (s *Server) apply(name string, cur *endpoint, addr string, o Options, isTLS bool) (*endpoint, error) {
	switch {
	case addr == "":
		if cur != nil {
			s.retire(cur)
		}
		delete(s.errs, name)
		return nil, nil
	case cur != nil && cur.addr == addr:
		if s.opts.ReadHeaderTimeout != o.ReadHeaderTimeout || s.opts.IdleTimeout != o.IdleTimeout || s.opts.MaxHeaderBytes != o.MaxHeaderBytes {
			s.handOver(cur, o, isTLS)
		}
		return cur, nil
	}
	ln, err := listen(addr)
	if err != nil && cur != nil && errors.Is(err, syscall.EADDRINUSE) && samePort(cur.ln.Addr(), addr) {
		// Say ":80" became "0.0.0.0:80": the old socket holds the port,
		// so it must go first (new connections are refused briefly).
		s.retire(cur)
		cur = nil
		ln, err = listen(addr)
	}
	if err != nil {
		err = fmt.Errorf("ingress: %s listener %s: %w", name, addr, err)
		s.errs[name] = err.Error()
		// Keep serving on the old address rather than on none.
		return cur, err
	}
	delete(s.errs, name)
	ep := &endpoint{addr: addr, ln: ln}
	ep.start(s, o, isTLS)
	go ep.acceptLoop(s.log)
	if cur != nil {
		s.retire(cur)
	}
	s.log.Info("ingress listening", "listener", name, "addr", ln.Addr().String())
	return ep, nil
}

// listen opens a listening socket. Accepted connections get no TCP
// keepalive (four setsockopt calls per connection otherwise, as nginx
// does not either): idle clients are dropped by idle_timeout.
func listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(context.Background(), "tcp", addr)
}

func samePort(a net.Addr, addr string) bool {
	_, p, err := net.SplitHostPort(addr)
	ta, ok := a.(*net.TCPAddr)
	return err == nil && ok && p == strconv.Itoa(ta.Port)
}

// handOver starts a server with the new settings on ep's socket and lets
// the old one drain.
func (s *Server) handOver(ep *endpoint, o Options, isTLS bool) {
	old := ep.cur.Load()
	ep.start(s, o, isTLS)
	s.drain(old)
}

func (s *Server) retire(ep *endpoint) {
	ep.retired.Store(true)
	ep.ln.Close() // the accept loop ends; no new connection reaches it
	s.drain(ep.cur.Load())
}

// drain retires a generation without dropping a request: no new
// connection reaches it, each of its connections closes after its current
// response, and once they are gone (or a new connection has had the
// read-header timeout to send its request) Shutdown finishes the rest,
// HTTP/2 ones with GOAWAY. Shutdown right away would drop requests on
// connections accepted but not yet read: net/http closes those unanswered.
func (s *Server) drain(g *generation) {
	g.ln.close()
	g.srv.SetKeepAlivesEnabled(false)
	g.draining()
	s.wg.Go(func() {
		t := time.NewTimer(g.srv.ReadHeaderTimeout)
		defer t.Stop()
		select {
		case <-g.idle:
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		if err := g.srv.Shutdown(ctx); err != nil {
			g.srv.Close()
		}
	})
}

// Addrs returns the bound addresses ("" when not listening), e.g. for
// Details and tests that listen on port 0.
func (s *Server) Addrs() (httpAddr, httpsAddr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.http != nil {
		httpAddr = s.http.ln.Addr().String()
	}
	if s.https != nil {
		httpsAddr = s.https.ln.Addr().String()
	}
	return httpAddr, httpsAddr
}

// Errors returns why a configured listener is not (or not on its
// configured address) listening, by "http"/"https".
func (s *Server) Errors() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.errs))
	for k, v := range s.errs {
		out[k] = v
	}
	return out
}

// Shutdown stops accepting and waits for requests in flight, until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	for _, ep := range []*endpoint{s.http, s.https} {
		if ep != nil {
			s.retire(ep)
		}
	}
	s.http, s.https = nil, nil
	s.mu.Unlock()
	var errs []error
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}
