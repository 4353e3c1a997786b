package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/daemon/view"
)

// The Lease that elects the one node writing Ingress status.
const (
	LeaseNamespace = "kube-system"
	LeaseName      = "nodenet-ingress-status"
)

// statusResync rewrites statuses that something else changed.
const statusResync = time.Minute

// statusWriter writes status.loadBalancer.ingress of the served Ingresses
// while this node holds the Lease.
type statusWriter struct {
	view   *view.View
	client kubernetes.Interface
	node   string
	log    *slog.Logger
	events *events
	dirty  chan struct{}
	reconf chan struct{} // the config changed (enabled may have)

	mu      sync.Mutex // guards the fields below
	cfg     config.Ingress
	served  []string
	leading bool
	leader  string
	lastErr string
	// stopElection leaves the election (ingress disabled).
	stopElection context.CancelFunc
}

func newStatusWriter(v *view.View, client kubernetes.Interface, node string, log *slog.Logger) *statusWriter {
	return &statusWriter{view: v, client: client, node: node, log: log, dirty: make(chan struct{}, 1), reconf: make(chan struct{}, 1)}
}

func (s *statusWriter) setConfig(cfg config.Ingress) {
	s.mu.Lock()
	s.cfg = cfg
	stop := s.stopElection
	s.mu.Unlock()
	if !cfg.Enabled && stop != nil {
		stop() // a node that serves nothing must not hold the Lease
	}
	select {
	case s.reconf <- struct{}{}:
	default:
	}
	s.signal()
}

func (s *statusWriter) enabled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Enabled
}

// kick records the served Ingresses and asks for a status pass.
func (s *statusWriter) kick(served []string) {
	s.mu.Lock()
	s.served = served
	s.mu.Unlock()
	s.signal()
}

func (s *statusWriter) signal() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

func (s *statusWriter) describe() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.client == nil:
		return "not written (no API client)"
	case !s.cfg.Enabled:
		return "not electing (ingress disabled)"
	case s.leading:
		if s.lastErr != "" {
			return "leader, writing status: " + s.lastErr
		}
		return "leader, writes Ingress status"
	case s.leader != "":
		return "follower; " + s.leader + " writes Ingress status"
	}
	return "electing"
}

// run takes part in the election until ctx ends, writing status while leading.
func (s *statusWriter) run(ctx context.Context) {
	if s.client == nil {
		return
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: LeaseNamespace, Name: LeaseName},
		Client:     s.client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: s.node},
	}
	for ctx.Err() == nil {
		if !s.enabled() {
			select {
			case <-ctx.Done():
			case <-s.reconf:
			}
			continue
		}
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   15 * time.Second,
			RenewDeadline:   10 * time.Second,
			RetryPeriod:     2 * time.Second,
			ReleaseOnCancel: true,
			Name:            LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: s.lead,
				OnStoppedLeading: func() { s.setLeading(false) },
				OnNewLeader: func(id string) {
					s.mu.Lock()
					s.leader = id
					s.mu.Unlock()
				},
			},
		})
		if err != nil {
			s.log.Error("ingress status leader election", "err", err)
			return
		}
		ectx, cancel := context.WithCancel(ctx)
		s.mu.Lock()
		s.stopElection = cancel
		s.mu.Unlock()
		le.Run(ectx) // returns when leadership is lost, ingress is disabled or ctx ends
		cancel()
	}
}

func (s *statusWriter) setLeading(on bool) {
	s.mu.Lock()
	s.leading = on
	s.mu.Unlock()
	if s.events != nil {
		s.events.setLeader(on)
	}
	s.log.Info("ingress status leadership", "leading", on)
}

// lead writes status on every change and periodically until ctx ends.
func (s *statusWriter) lead(ctx context.Context) {
	s.setLeading(true)
	t := time.NewTicker(statusResync)
	defer t.Stop()
	for {
		err := s.writeAll(ctx)
		s.mu.Lock()
		s.lastErr = ""
		if err != nil {
			s.lastErr = err.Error()
		}
		s.mu.Unlock()
		if err != nil {
			s.log.Warn("ingress status", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.dirty:
		case <-t.C:
		}
	}
}

func (s *statusWriter) writeAll(ctx context.Context) error {
	s.mu.Lock()
	cfg, served := s.cfg, s.served
	s.mu.Unlock()
	if !cfg.Enabled {
		return nil
	}
	want, err := s.addresses(cfg)
	if err != nil {
		return err
	}
	var errs []error
	for _, key := range served {
		ns, name, _ := strings.Cut(key, "/")
		ing, err := s.view.Ingresses.Ingresses(ns).Get(name)
		if err != nil {
			continue // deleted since
		}
		if statusEqual(ing.Status.LoadBalancer.Ingress, want) {
			continue
		}
		up := ing.DeepCopy()
		up.Status.LoadBalancer.Ingress = want
		if _, err := s.client.NetworkingV1().Ingresses(ns).UpdateStatus(ctx, up, metav1.UpdateOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("update status of Ingress %s: %w", key, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d Ingresses: %w", len(errs), len(served), errs[0])
	}
	return nil
}

// addresses are status_addresses, else the InternalIPs of every Ready node
// (a node is Ready only with a working CNI, and nodenet is the CNI).
func (s *statusWriter) addresses(cfg config.Ingress) ([]networkingv1.IngressLoadBalancerIngress, error) {
	ips := slices.Clone(cfg.StatusAddresses)
	if len(ips) == 0 {
		nodes, err := s.view.Nodes.List(labels.Everything())
		if err != nil {
			return nil, err
		}
		ips = ReadyNodeIPs(nodes)
	}
	out := make([]networkingv1.IngressLoadBalancerIngress, 0, len(ips))
	for _, ip := range ips {
		out = append(out, networkingv1.IngressLoadBalancerIngress{IP: ip})
	}
	return out, nil
}

// ReadyNodeIPs returns the sorted InternalIPs of the Ready nodes.
func ReadyNodeIPs(nodes []*corev1.Node) []string {
	var addrs []netip.Addr
	for _, n := range nodes {
		ready := false
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			continue
		}
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil && a.Type == corev1.NodeInternalIP {
				addrs = append(addrs, ip)
			}
		}
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	addrs = slices.Compact(addrs)
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

func statusEqual(have, want []networkingv1.IngressLoadBalancerIngress) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range have {
		if have[i].IP != want[i].IP || have[i].Hostname != "" || len(have[i].Ports) > 0 {
			return false
		}
	}
	return true
}
