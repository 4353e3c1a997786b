package daemon

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/daemon/control"
	"github.com/nodenet/nodenet/daemon/metrics"
	"github.com/nodenet/nodenet/daemon/runner"
	"github.com/nodenet/nodenet/daemon/view"
)

// Component is one level-triggered reconciler: on any change of the kinds it
// watches it recomputes its whole desired state from the view and applies it.
type Component interface {
	Name() string
	// Watches lists the kinds whose changes make the component sync.
	Watches() []view.Kind
	// Sync computes the desired state and applies it. full: trust nothing
	// cached from an earlier sync (first sync, after an error, periodic).
	Sync(ctx context.Context, full bool) error
	// LiveKeys are the config key prefixes the component applies on reload
	// through Reconfigure; every other key it reads needs a restart.
	LiveKeys() []string
	Reconfigure(cfg *config.Config) error
	// Details are extra lines for `nodenet status`.
	Details() map[string]string
}

// managed wraps a component with its runner and its status record.
type managed struct {
	c       Component
	r       *runner.Runner
	metrics *metrics.Metrics
	onSync  func() // called after every successful sync

	mu sync.Mutex // guards st
	st control.ComponentStatus
}

func newManaged(c Component, rc config.Reconcile, m *metrics.Metrics, log *slog.Logger, onSync func()) *managed {
	mc := &managed{c: c, metrics: m, onSync: onSync, st: control.ComponentStatus{Name: c.Name()}}
	mc.r = runner.New(c.Name(), mc.sync, runner.Options{
		MinInterval:   rc.MinInterval,
		RetryInterval: rc.RetryInterval,
		MaxInterval:   rc.MaxInterval,
		Logger:        log,
	})
	return mc
}

func (mc *managed) sync(ctx context.Context, full bool) error {
	start := time.Now()
	err := mc.c.Sync(ctx, full)
	elapsed := time.Since(start)
	kind := "partial"
	if full {
		kind = "full"
	}
	mc.metrics.ReconcileDuration.WithLabelValues(mc.c.Name(), kind).Observe(elapsed.Seconds())
	mc.mu.Lock()
	mc.st.Syncs++
	mc.st.LastSync = start
	mc.st.LastDuration = elapsed
	if err != nil {
		mc.st.Errors++
		mc.st.LastError = err.Error()
	} else {
		mc.st.LastSuccess = start
		mc.st.LastError = ""
	}
	mc.mu.Unlock()
	// The runner logs every sync and every failure with its retry delay.
	if err != nil {
		mc.metrics.ReconcileErrors.WithLabelValues(mc.c.Name()).Inc()
		return err
	}
	mc.metrics.LastSuccess.WithLabelValues(mc.c.Name()).SetToCurrentTime()
	mc.onSync()
	return nil
}

func (mc *managed) status() control.ComponentStatus {
	mc.mu.Lock()
	st := mc.st
	mc.mu.Unlock()
	st.Details = mc.c.Details()
	return st
}

func (mc *managed) synced() bool {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return !mc.st.LastSuccess.IsZero()
}

// matchesKey reports whether key falls under one of prefixes.
func matchesKey(key string, prefixes []string) bool {
	for _, p := range prefixes {
		if key == p || strings.HasPrefix(key, p+".") {
			return true
		}
	}
	return false
}
