package daemon

import (
	"errors"
	"slices"
	"time"

	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/daemon/logging"
)

// daemonLiveKeys are the keys the daemon itself applies on reload.
var daemonLiveKeys = []string{"log.level", "reconcile", "admin.listen", "admin.pprof"}

// reload re-reads the config file (SIGHUP). An invalid file changes nothing:
// every problem is logged with its key path and the old config stays. A valid
// one is applied key by key: live where the owner can, otherwise it is
// reported as needing a restart.
func (d *Daemon) reload() {
	log := d.log.With("config", d.path)
	next, err := config.Load(d.path)
	if err != nil {
		d.metrics.ConfigReloads.WithLabelValues("failure").Inc()
		var cerrs *config.Errors
		if errors.As(err, &cerrs) {
			for _, p := range cerrs.Problems {
				log.Error("config reload rejected; keeping the running config", "key", p.Key, "line", p.Line, "column", p.Column, "problem", p.Msg)
			}
		} else {
			log.Error("config reload rejected; keeping the running config", "err", err)
		}
		d.mu.Lock()
		d.reloadErr = err.Error()
		d.mu.Unlock()
		return
	}

	d.mu.Lock()
	prev, start := d.cfg, d.startCfg
	d.mu.Unlock()
	changed := config.Diff(prev, next)
	var errs []error
	for _, key := range changed {
		switch {
		case matchesKey(key, daemonLiveKeys):
			errs = append(errs, d.applyDaemonKey(key, next))
			log.Info("config reload: applied live", "key", key)
		case d.componentLive(key):
			log.Info("config reload: applied live", "key", key)
		default:
			log.Warn("config reload: changed key takes effect only after a restart", "key", key)
		}
	}
	for _, mc := range d.comps {
		if slices.ContainsFunc(changed, func(k string) bool { return matchesKey(k, mc.c.LiveKeys()) }) {
			errs = append(errs, mc.c.Reconfigure(next))
		}
	}
	// Keys that differ from the config the process started with and that
	// nobody applies live are pending until a restart.
	var pending []string
	for _, key := range config.Diff(start, next) {
		if !matchesKey(key, daemonLiveKeys) && !d.componentLive(key) {
			pending = append(pending, key)
		}
	}

	err = errors.Join(errs...)
	d.mu.Lock()
	d.cfg = next
	d.generation++
	d.loadedAt = time.Now()
	d.restartKeys = pending
	d.reloadErr = ""
	if err != nil {
		d.reloadErr = err.Error()
	}
	gen := d.generation
	d.mu.Unlock()
	d.metrics.ConfigGeneration.Set(float64(gen))
	if err != nil {
		d.metrics.ConfigReloads.WithLabelValues("failure").Inc()
		log.Error("config reload applied with errors", "generation", gen, "err", err)
	} else {
		d.metrics.ConfigReloads.WithLabelValues("success").Inc()
		log.Info("config reloaded", "generation", gen, "changed", len(changed), "restart_required", pending)
	}
	for _, mc := range d.comps {
		mc.r.Run()
	}
}

func (d *Daemon) componentLive(key string) bool {
	for _, mc := range d.comps {
		if matchesKey(key, mc.c.LiveKeys()) {
			return true
		}
	}
	return false
}

func (d *Daemon) applyDaemonKey(key string, cfg *config.Config) error {
	switch {
	case key == "log.level":
		lvl, err := logging.ParseLevel(cfg.Log.Level)
		if err != nil {
			return err
		}
		d.level.Set(lvl)
	case key == "admin.listen":
		return d.admin.SetListen(cfg.Admin.Listen)
	case key == "admin.pprof":
		d.admin.SetPprof(cfg.Admin.Pprof)
	case matchesKey(key, []string{"reconcile"}):
		rc := cfg.Reconcile
		for _, mc := range d.comps {
			mc.r.SetIntervals(rc.MinInterval, rc.RetryInterval, rc.MaxInterval)
		}
	}
	return nil
}
