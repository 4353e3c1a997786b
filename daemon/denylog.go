package daemon

import (
	"context"

	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/policy/denylog"
)

// runDenyLog logs and counts the packets NetworkPolicy drops until ctx is
// done (policy.log_denied). A group that cannot be bound is logged, not a
// failed start: enforcement does not depend on it.
func (d *Daemon) runDenyLog(ctx context.Context, p config.Policy) {
	r, err := denylog.New(denylog.Options{Group: uint16(p.NFLOGGroup), Registry: d.metrics.Registry, Log: d.log,
		Resolve: denylog.ModelResolver(d.policy.Model)})
	if err != nil {
		d.log.Error("denied packets are not logged", "err", err)
		return
	}
	if err := r.Run(ctx); err != nil {
		d.log.Error("denied-packet logging stopped", "err", err)
	}
}
