// Package admin is the daemon's HTTP listener for operators and probes:
// /metrics (Prometheus), /healthz (the process is alive), /readyz (caches
// synced and every component programmed once) and, when switched on,
// /debug/pprof/ (Go's profiles, for finding where CPU and memory go).
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server serves the admin endpoints on an address that can change live.
type Server struct {
	log     *slog.Logger
	handler http.Handler
	pprof   atomic.Bool // serve /debug/pprof/; off by default (profiles cost CPU and expose internals)

	mu   sync.Mutex // guards addr and srv
	addr string
	srv  *http.Server
}

// New builds the handler; ready returns whether the daemon is ready and, if
// not, why.
func New(reg *prometheus.Registry, ready func() (bool, string), log *slog.Logger) *Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := ready()
		if !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	s := &Server{log: log, handler: mux}
	profiles := http.NewServeMux()
	profiles.HandleFunc("/debug/pprof/", pprof.Index)
	profiles.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	profiles.HandleFunc("/debug/pprof/profile", pprof.Profile)
	profiles.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	profiles.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		if !s.pprof.Load() {
			http.Error(w, "profiling is off (admin.pprof)", http.StatusNotFound)
			return
		}
		profiles.ServeHTTP(w, r)
	})
	return s
}

// SetPprof switches /debug/pprof/ on or off; applied live.
func (s *Server) SetPprof(on bool) { s.pprof.Store(on) }

// Handler is the admin mux, for tests.
func (s *Server) Handler() http.Handler { return s.handler }

// SetListen (re)binds the listener to addr; "" turns it off. On a bind error
// the old listener keeps serving.
func (s *Server) SetListen(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if addr == s.addr && (s.srv != nil || addr == "") {
		return nil
	}
	var l net.Listener
	if addr != "" {
		var err error
		if l, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
	}
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.srv.Shutdown(ctx)
		cancel()
		s.srv = nil
	}
	s.addr = addr
	if l == nil {
		return nil
	}
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	s.srv = srv
	s.log.Info("admin listener", "address", l.Addr().String())
	go func() {
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener stopped", "address", addr, "err", err)
		}
	}()
	return nil
}

// Shutdown stops the listener.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	s.srv = nil
	return err
}
