package proxier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// healthService is one externalTrafficPolicy: Local service's health check:
// load balancers ask every node and send traffic only to nodes that answer
// 200 (some local endpoint), as with kube-proxy.
type healthService struct {
	Namespace, Name string
	LocalEndpoints  int
}

// healthServer runs one listener per health check node port.
type healthServer struct {
	log *slog.Logger

	mu        sync.Mutex // guards listeners and state
	listeners map[int]*http.Server
	state     map[int]healthService
}

func newHealthServer(log *slog.Logger) *healthServer {
	return &healthServer{log: log, listeners: map[int]*http.Server{}, state: map[int]healthService{}}
}

// Sync opens listeners for new ports, closes the ones no longer wanted and
// updates every answer. Errors name the ports that could not be opened.
func (h *healthServer) Sync(want map[int]healthService) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for port, srv := range h.listeners {
		if _, ok := want[port]; !ok {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = srv.Shutdown(ctx)
			cancel()
			delete(h.listeners, port)
		}
	}
	h.state = want
	for port := range want {
		if _, ok := h.listeners[port]; ok {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(port)))
		if err != nil {
			errs = append(errs, fmt.Errorf("health check node port %d: %w", port, err))
			continue
		}
		srv := &http.Server{Handler: h.handler(port), ReadHeaderTimeout: 5 * time.Second}
		h.listeners[port] = srv
		go func() {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				h.log.Error("health check listener stopped", "port", port, "err", err)
			}
		}()
	}
	return errors.Join(errs...)
}

func (h *healthServer) handler(port int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.mu.Lock()
		s := h.state[port]
		h.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if s.LocalEndpoints == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		// The shape kube-proxy answers with.
		_ = json.NewEncoder(w).Encode(map[string]any{
			"service":             map[string]string{"namespace": s.Namespace, "name": s.Name},
			"localEndpoints":      s.LocalEndpoints,
			"serviceProxyHealthy": true,
		})
	})
}

// Close stops every listener.
func (h *healthServer) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for port, srv := range h.listeners {
		_ = srv.Close()
		delete(h.listeners, port)
	}
}
