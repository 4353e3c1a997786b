// Package daemon is `nodenet run`: it loads the config, builds the cluster
// view, runs every component behind its coalescing runner, serves the admin
// listener and the control socket, reloads on SIGHUP and stops on SIGTERM,
// leaving the kernel datapath in place.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodenet/nodenet/daemon/admin"
	"github.com/nodenet/nodenet/daemon/buildinfo"
	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/daemon/control"
	"github.com/nodenet/nodenet/daemon/logging"
	"github.com/nodenet/nodenet/daemon/metrics"
	"github.com/nodenet/nodenet/daemon/nodeinfo"
	"github.com/nodenet/nodenet/daemon/view"
	"github.com/nodenet/nodenet/datapath/cni"
	"github.com/nodenet/nodenet/datapath/internode"
	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/pods"
	"github.com/nodenet/nodenet/datapath/proxier"
	"github.com/nodenet/nodenet/datapath/routes"
	"github.com/nodenet/nodenet/ingress/controller"
	"github.com/nodenet/nodenet/policy/enforcer"
)

const (
	// shutdownGrace bounds a graceful stop; systemd's TimeoutStopSec is longer.
	shutdownGrace = 10 * time.Second
	// apiProbeInterval is how often the API server's /readyz is asked.
	apiProbeInterval = 2 * time.Second
)

// Daemon is one running nodenet agent.
type Daemon struct {
	path    string
	start   time.Time
	log     *slog.Logger
	level   *slog.LevelVar
	metrics *metrics.Metrics
	health  *view.Health
	view    *view.View
	admin   *admin.Server
	comps   []*managed
	pods    *pods.Manager
	proxy   *proxier.Component
	policy  *enforcer.Component
	ingress *controller.Component
	client  kubernetes.Interface

	cachesSynced atomic.Bool
	readyOnce    sync.Once

	mu          sync.Mutex // guards the config fields below
	startCfg    *config.Config
	cfg         *config.Config
	generation  int
	loadedAt    time.Time
	reloadErr   string
	restartKeys []string
}

// Run runs the daemon until ctx is done or SIGTERM/SIGINT arrives.
func Run(ctx context.Context, path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	lvl, _ := logging.ParseLevel(cfg.Log.Level) // validated
	level.Set(lvl)
	log := logging.New(os.Stderr, cfg.Log.Format, level)
	slog.SetDefault(log)
	logging.RouteKlog(log)

	d := &Daemon{path: path, start: time.Now(), log: log, level: level, metrics: metrics.New(buildinfo.String()),
		startCfg: cfg, cfg: cfg, generation: 1, loadedAt: time.Now()}
	d.metrics.ConfigGeneration.Set(1)
	return d.run(ctx)
}

func (d *Daemon) run(ctx context.Context) error {
	cfg := d.cfg
	log := d.log
	log.Info("starting nodenet", "version", buildinfo.String(), "node", cfg.Node.Name, "config", d.path, "pid", os.Getpid())

	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.Kubernetes.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", cfg.Kubernetes.Kubeconfig, err)
	}
	restCfg.QPS = float32(cfg.Kubernetes.QPS)
	restCfg.Burst = cfg.Kubernetes.Burst
	restCfg.UserAgent = "nodenet/" + buildinfo.String() + " (" + cfg.Node.Name + ")"
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	d.health = view.NewHealth(restCfg.Host, func(up bool) {
		if up {
			d.metrics.APIUp.Set(1)
			log.Info("API server reachable", "server", restCfg.Host)
		} else {
			d.metrics.APIUp.Set(0)
			log.Warn("API server unreachable; running on the last known state", "server", restCfg.Host, "err", d.health.Snapshot().LastError)
		}
	})
	d.client = client
	d.view = view.New(client, cfg.Kubernetes.ResyncPeriod, d.health, log)
	d.metrics.Registry.MustRegister(newViewCollector(d.view))

	comps, err := d.components(ctx, cfg)
	if err != nil {
		return err
	}
	for _, c := range comps {
		mc := newManaged(c, cfg.Reconcile, d.metrics, log, d.checkReady)
		d.view.Subscribe(mc.r.Run, c.Watches()...)
		if c == Component(d.policy) {
			d.policy.SetTrigger(mc.r.Run)
		}
		d.comps = append(d.comps, mc)
	}

	ctl, err := control.Listen(cfg.Admin.ControlSocket)
	if err != nil {
		return err
	}
	ctlSrv := control.NewServer(d.Status)
	ctlSrv.Mux.Handle("POST "+cni.Route, cni.NewHandler(d.pods, d.metrics.Registry, log))
	ctlSrv.Mux.HandleFunc("GET "+control.ExplainPath, d.policy.ServeExplain)
	go func() {
		if err := ctlSrv.Serve(ctl); err != nil {
			log.Error("control socket stopped", "err", err)
		}
	}()
	d.admin = admin.New(d.metrics.Registry, d.ready, log)
	d.admin.SetPprof(cfg.Admin.Pprof)
	if err := d.admin.SetListen(cfg.Admin.Listen); err != nil {
		ctl.Close()
		return err
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { d.health.Probe(runCtx, client.Discovery().RESTClient(), apiProbeInterval) })
	wg.Go(func() { d.ingress.Run(runCtx) })
	if cfg.Policy.LogDenied {
		wg.Go(func() { d.runDenyLog(runCtx, cfg.Policy) })
	}
	d.view.Start(runCtx)
	wg.Go(func() {
		if !d.view.WaitForSync(runCtx) {
			return
		}
		d.cachesSynced.Store(true)
		log.Info("caches synced", "elapsed", time.Since(d.start).Round(time.Millisecond))
		for _, mc := range d.comps {
			wg.Go(func() { mc.r.Loop(runCtx) })
			mc.r.Run()
		}
	})

	var watchdog <-chan time.Time
	if interval, err := sddaemon.SdWatchdogEnabled(false); err == nil && interval > 0 {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		watchdog = t.C
	}

	for {
		select {
		case <-ctx.Done():
			return d.shutdown(cancel, &wg, ctlSrv)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.reload()
				continue
			}
			log.Info("stopping; the datapath stays in place", "signal", sig.String())
			return d.shutdown(cancel, &wg, ctlSrv)
		case <-watchdog:
			// Pings come from this loop, so a wedged daemon stops pinging
			// and systemd restarts it.
			_, _ = sddaemon.SdNotify(false, sddaemon.SdNotifyWatchdog)
		}
	}
}

// components builds every reconciler. Later capabilities add theirs here.
func (d *Daemon) components(ctx context.Context, cfg *config.Config) ([]Component, error) {
	mode, err := iptables.DetectMode(ctx)
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	d.log.Info("iptables backend", "mode", mode)
	runner := iptables.NewExecRunner(mode)
	clusterCIDRs := prefixes(cfg.Network.ClusterCIDRs)
	// One manager per family the cluster uses: every chain of that family,
	// whoever owns it, goes through it.
	ipt := map[iptables.Family]*iptables.Manager{}
	for _, p := range append(prefixes(cfg.Network.ServiceCIDRs), clusterCIDRs...) {
		fam := iptables.IPv4
		if p.Addr().Is6() {
			fam = iptables.IPv6
		}
		if ipt[fam] == nil {
			ipt[fam] = iptables.NewManager(runner, fam, d.log)
		}
	}
	backend := routes.Backend(cfg.Network.Backend)
	d.pods = pods.New(d.view, pods.Options{
		Node:        cfg.Node.Name,
		Bridge:      cfg.CNI.Bridge,
		StateDir:    cfg.CNI.StateDir,
		ConfPath:    filepath.Join(cfg.CNI.ConfDir, cfg.CNI.ConfFile),
		NetworkName: cfg.CNI.NetworkName,
		Socket:      cfg.Admin.ControlSocket,
		Chain:       cfg.CNI.Chain,
		PodCIDRs:    prefixes(cfg.CNI.PodCIDRs),
		MTU:         cfg.Network.MTU,
		Overhead:    func(v6 bool) int { return routes.Overhead(backend, v6) },
		GCGrace:     cfg.CNI.LeakGrace,
		Log:         d.log,
	})
	d.metrics.Registry.MustRegister(newIPAMCollector(d.pods))
	inter, err := internode.New(d.view, internode.Options{
		Node:         cfg.Node.Name,
		Addresses:    addrs(cfg.Node.Addresses),
		Backend:      backend,
		VNI:          cfg.Network.VXLANVNI,
		Port:         cfg.Network.VXLANPort,
		ClusterCIDRs: clusterCIDRs,
		IPTables:     ipt,
		Netlink:      routes.RealNetlink(),
		Log:          d.log,
	})
	if err != nil {
		return nil, err
	}
	first, last, _ := config.ParsePortRange(cfg.Proxy.NodePortRange) // validated
	d.proxy, err = proxier.New(d.view, proxier.Options{
		Node:              cfg.Node.Name,
		ClusterCIDRs:      clusterCIDRs,
		NodePortAddresses: prefixes(cfg.Proxy.NodePortAddresses),
		NodePortRange:     [2]int{first, last},
		MasqueradeAll:     cfg.Proxy.MasqueradeAll,
		IPTables:          ipt,
		Registry:          d.metrics.Registry,
		Log:               d.log,
	})
	if err != nil {
		return nil, err
	}
	d.policy, err = enforcer.New(d.view, enforcer.Options{Node: cfg.Node.Name, IPTables: ipt,
		LocalAddrs: d.pods.PodAddrs, Log: d.log, LogDenied: cfg.Policy.LogDenied, LogRate: cfg.Policy.LogRate,
		SaveCounters: func(ctx context.Context, fam iptables.Family) ([]byte, error) {
			return runner.SaveCounters(ctx, fam, iptables.TableFilter)
		},
		LogBurst: cfg.Policy.LogBurst, NFLOGGroup: uint16(cfg.Policy.NFLOGGroup)})
	if err != nil {
		return nil, err
	}
	d.metrics.Registry.MustRegister(d.policy.Collector())
	// Fail-closed: an ADD answers only once the pod's policies are in
	// the kernel.
	d.pods.SetAdmit(d.policy.Admit)
	d.ingress, err = controller.New(d.view, controller.Options{Node: cfg.Node.Name, Config: cfg.Ingress,
		Client: d.client, Registry: d.metrics.Registry, Log: d.log,
		NewLogger: func(w io.Writer) *slog.Logger { return logging.New(w, cfg.Log.Format, d.level) }})
	if err != nil {
		return nil, err
	}
	return []Component{nodeinfo.New(d.view, cfg), d.pods, inter, d.proxy, d.policy, d.ingress}, nil
}

// prefixes parses validated CIDRs.
func prefixes(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// addrs parses validated addresses.
func addrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func (d *Daemon) shutdown(cancel context.CancelFunc, wg *sync.WaitGroup, ctl *control.Server) error {
	_, _ = sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
	cancel()
	ctx, stop := context.WithTimeout(context.Background(), shutdownGrace)
	defer stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var errs []error
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("components did not stop within %s", shutdownGrace))
	}
	d.proxy.Close()
	errs = append(errs, d.ingress.Close(ctx), ctl.Shutdown(ctx), d.admin.Shutdown(ctx))
	err := errors.Join(errs...)
	if err != nil {
		d.log.Error("shutdown", "err", err)
	} else {
		d.log.Info("stopped")
	}
	return err
}

// ready reports whether caches synced and every component synced once.
func (d *Daemon) ready() (bool, string) {
	if !d.cachesSynced.Load() {
		return false, "informer caches not synced"
	}
	for _, mc := range d.comps {
		if !mc.synced() {
			return false, "component " + mc.c.Name() + " has not synced yet"
		}
	}
	return true, ""
}

// checkReady tells systemd once the daemon first becomes ready.
func (d *Daemon) checkReady() {
	if ok, _ := d.ready(); !ok {
		return
	}
	d.readyOnce.Do(func() {
		d.metrics.Ready.Set(1)
		d.log.Info("ready", "elapsed", time.Since(d.start).Round(time.Millisecond))
		if _, err := sddaemon.SdNotify(false, sddaemon.SdNotifyReady); err != nil {
			d.log.Warn("sd_notify READY", "err", err)
		}
		// The first syncs made the most garbage this process holds at
		// once, and the heap goal they left is twice what was live in the
		// middle of them (at 10,000 Services, 300 MB for a steady 110 MB).
		// Collecting now resets the goal to twice the steady heap, so
		// later partial syncs' garbage does not climb back to that peak.
		go debug.FreeOSMemory()
	})
}

// Status assembles what `nodenet status` shows.
func (d *Daemon) Status() *control.Status {
	ok, why := d.ready()
	d.mu.Lock()
	cs := control.ConfigStatus{File: d.path, Generation: d.generation, LoadedAt: d.loadedAt,
		LastReloadError: d.reloadErr, RestartRequired: d.restartKeys}
	node := d.cfg.Node.Name
	d.mu.Unlock()
	st := &control.Status{
		Version: buildinfo.String(), Node: node, Pid: os.Getpid(), StartTime: d.start, Now: time.Now(),
		Ready: ok, ReadyReason: why, Config: cs, API: d.health.Snapshot(), Informers: d.view.State(),
	}
	for _, mc := range d.comps {
		st.Components = append(st.Components, mc.status())
	}
	return st
}
