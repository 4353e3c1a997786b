package view

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// Health tracks whether the API server answers. nodenet keeps running on its
// last known state while it does not; this is what status and metrics show.
type Health struct {
	Server string

	mu          sync.Mutex // guards the fields below
	up          bool
	since       time.Time // when up last changed
	lastContact time.Time
	lastErr     string
	onChange    func(up bool)
}

// APIHealth is a snapshot of Health.
type APIHealth struct {
	Server      string    `json:"server"`
	Connected   bool      `json:"connected"`
	Since       time.Time `json:"since"`
	LastContact time.Time `json:"last_contact"`
	LastError   string    `json:"last_error,omitempty"`
}

// NewHealth starts out disconnected; onChange (may be nil) is called on every
// transition.
func NewHealth(server string, onChange func(up bool)) *Health {
	return &Health{Server: server, since: time.Now(), onChange: onChange}
}

// Contact records a successful exchange with the API server.
func (h *Health) Contact() {
	h.set(true, "")
}

// WatchFailed records a failed list or watch.
func (h *Health) WatchFailed(kind Kind, err error) {
	h.mu.Lock()
	h.lastErr = fmt.Sprintf("watch %s: %v", kind, err)
	h.mu.Unlock()
}

func (h *Health) set(up bool, errMsg string) {
	now := time.Now()
	h.mu.Lock()
	changed := up != h.up
	if changed {
		h.since = now
	}
	h.up = up
	if up {
		h.lastContact = now
	} else {
		h.lastErr = errMsg
	}
	cb := h.onChange
	h.mu.Unlock()
	if changed && cb != nil {
		cb(up)
	}
}

// Snapshot returns the current state.
func (h *Health) Snapshot() APIHealth {
	h.mu.Lock()
	defer h.mu.Unlock()
	return APIHealth{Server: h.Server, Connected: h.up, Since: h.since, LastContact: h.lastContact, LastError: h.lastErr}
}

// Probe asks the API server's /readyz every interval until ctx is done.
// Watches alone can't tell a quiet cluster from a dead server.
func (h *Health) Probe(ctx context.Context, rc rest.Interface, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, interval)
		_, err := rc.Get().AbsPath("/readyz").DoRaw(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			h.set(false, fmt.Sprintf("probe: %v", err))
		} else {
			h.set(true, "")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
