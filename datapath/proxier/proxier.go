// Package proxier is the Service proxy component: on any change of
// Services, EndpointSlices or Nodes it builds the service ports of each
// family (datapath/proxy), compiles them to iptables chains, applies them
// through the shared iptables Manager (only changed chains are rewritten;
// the periodic full sync repairs anything changed behind nodenet's back),
// deletes the conntrack entries of UDP endpoints that went away, and serves
// the health check node ports of externalTrafficPolicy: Local services.
package proxier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/daemon/view"
	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/proxy"
)

// Owner is the iptables Manager owner of the proxy's chains.
const Owner = "proxy"

// masqMark marks packets POSTROUTING masquerades (kube-proxy's bit).
const masqMark = "0x4000/0x4000"

// Options configure the proxy.
type Options struct {
	Node              string
	ClusterCIDRs      []netip.Prefix
	NodePortAddresses []netip.Prefix // empty: every local address
	NodePortRange     [2]int
	MasqueradeAll     bool
	IPTables          map[iptables.Family]*iptables.Manager
	Conntrack         Conntrack // nil: the kernel's
	Registry          prometheus.Registerer
	Log               *slog.Logger
}

// Component is the Service proxy.
type Component struct {
	opts   Options
	view   *view.View
	log    *slog.Logger
	health *healthServer
	rules  *prometheus.GaugeVec

	memos map[iptables.Family]*memo // used by Sync only

	mu      sync.Mutex // guards udp and ports
	udp     udpBackends
	ports   int
	skipped int
}

// New registers the proxy's chains with every manager.
func New(v *view.View, o Options) (*Component, error) {
	for fam, m := range o.IPTables {
		if err := m.Register(Owner, proxy.Prefixes()...); err != nil {
			return nil, fmt.Errorf("proxy: iptables %v: %w", fam, err)
		}
	}
	if o.Conntrack == nil {
		o.Conntrack = kernelConntrack{}
	}
	log := o.Log.With("component", "proxy")
	c := &Component{opts: o, view: v, log: log, health: newHealthServer(log), memos: map[iptables.Family]*memo{},
		rules: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nodenet_proxy_rules",
			Help: "iptables rules the Service proxy programs, by family and table."}, []string{"family", "table"})}
	if o.Registry != nil {
		o.Registry.MustRegister(c.rules)
	}
	return c, nil
}

// Name implements the daemon's Component.
func (c *Component) Name() string { return "proxy" }

// Watches implements the daemon's Component.
func (c *Component) Watches() []view.Kind {
	return []view.Kind{view.Services, view.EndpointSlices, view.Nodes}
}

// LiveKeys implements the daemon's Component.
func (c *Component) LiveKeys() []string { return nil }

// Reconfigure implements the daemon's Component.
func (c *Component) Reconfigure(*config.Config) error { return nil }

// Sync programs every family; any failure fails the whole sync, and the
// Manager then rewrites everything on the next one.
func (c *Component) Sync(ctx context.Context, full bool) error {
	if err := bridgeNetfilter(); err != nil {
		return err
	}
	svcs, err := c.view.Services.List(labels.Everything())
	if err != nil {
		return err
	}
	slices, err := c.view.EndpointSlices.List(labels.Everything())
	if err != nil {
		return err
	}
	nodeIPs, err := c.nodePortIPs()
	if err != nil {
		return err
	}
	var errs []error
	udp := udpBackends{}
	health := map[int]healthService{}
	healthLocal := map[int]map[netip.Addr]bool{}
	total, skipped := 0, 0
	for fam, m := range c.opts.IPTables {
		if c.memos[fam] == nil || full {
			c.memos[fam] = &memo{} // a full sync trusts nothing cached
		}
		out, err := c.compile(c.memos[fam], svcs, slices, proxy.Options{Node: c.opts.Node, Family: fam}, proxy.CompileOptions{
			Family: fam, ClusterCIDRs: c.opts.ClusterCIDRs, NodeIPs: familyAddrs(nodeIPs, fam),
			MasqueradeAll: c.opts.MasqueradeAll, MasqMark: masqMark,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("compile %v: %w", fam, err))
			continue
		}
		rs := out.rules
		skipped += out.skipped
		total += out.nports
		chains := append(append([]iptables.Chain{}, rs.NAT...), rs.Filter...)
		if err := m.Sync(ctx, Owner, chains, full); err != nil {
			errs = append(errs, fmt.Errorf("program %v: %w", fam, err))
			continue
		}
		c.countRules(fam, rs)
		collectUDP(out.kept, nodeIPs, udp)
		collectHealth(out.kept, health, healthLocal)
	}
	errs = append(errs, c.health.Sync(health))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	c.mu.Lock()
	stale := staleUDP(c.udp, udp)
	c.udp, c.ports, c.skipped = udp, total, skipped
	c.mu.Unlock()
	for flow, eps := range stale {
		for _, ep := range eps {
			if n, err := c.opts.Conntrack.DeleteUDP(flow.Dst, flow.Port, ep); err != nil {
				errs = append(errs, err)
			} else if n > 0 {
				c.log.Debug("deleted conntrack entries of a gone UDP endpoint", "dst", flow.Dst, "port", flow.Port, "endpoint", ep, "entries", n)
			}
		}
	}
	return errors.Join(errs...)
}

// inRange drops NodePorts outside the configured range (the port itself
// keeps its ClusterIP rules), counting how many it dropped.
func (c *Component) inRange(ports []proxy.ServicePort) ([]proxy.ServicePort, int) {
	first, last := c.opts.NodePortRange[0], c.opts.NodePortRange[1]
	n := 0
	for i := range ports {
		if p := ports[i].NodePort; p != 0 && (p < first || p > last) {
			ports[i].NodePort = 0
			n++
		}
	}
	return ports, n
}

// nodePortIPs are the local addresses that accept NodePorts; nil means all
// (the rules then match --dst-type LOCAL).
func (c *Component) nodePortIPs() ([]netip.Addr, error) {
	if len(c.opts.NodePortAddresses) == 0 {
		return nil, nil
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("proxy: list local addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		for _, p := range c.opts.NodePortAddresses {
			if p.Contains(ip) {
				out = append(out, ip)
				break
			}
		}
	}
	return out, nil
}

func familyAddrs(addrs []netip.Addr, fam iptables.Family) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if a.Is4() == (fam == iptables.IPv4) {
			out = append(out, a)
		}
	}
	return out
}

// collectUDP records, for every way a UDP service port is addressed, the
// endpoints traffic may reach.
func collectUDP(ports []proxy.ServicePort, nodeIPs []netip.Addr, out udpBackends) {
	for _, p := range ports {
		if p.Protocol != proxy.UDP {
			continue
		}
		var eps []netip.Addr
		for _, e := range p.Endpoints {
			eps = append(eps, e.IP)
		}
		dsts := append(append([]netip.Addr{p.ClusterIP}, p.ExternalIPs...), p.LoadBalancerIPs...)
		for _, d := range dsts {
			out[udpFlow{d, p.Port}] = eps
		}
	}
}

// collectHealth counts, per health check node port, the distinct local
// endpoints of its service across all of the service's ports and families.
func collectHealth(ports []proxy.ServicePort, out map[int]healthService, local map[int]map[netip.Addr]bool) {
	for _, p := range ports {
		if !p.ExternalLocal || p.HealthCheckNodePort == 0 {
			continue
		}
		if local[p.HealthCheckNodePort] == nil {
			local[p.HealthCheckNodePort] = map[netip.Addr]bool{}
		}
		for _, ep := range proxy.Categorize(p.Endpoints).Local {
			local[p.HealthCheckNodePort][ep.IP] = true
		}
		out[p.HealthCheckNodePort] = healthService{Namespace: p.Namespace, Name: p.Name,
			LocalEndpoints: len(local[p.HealthCheckNodePort])}
	}
}

func (c *Component) countRules(fam iptables.Family, rs proxy.Ruleset) {
	count := func(chains []iptables.Chain) int {
		n := 0
		for _, ch := range chains {
			n += len(ch.Rules)
		}
		return n
	}
	c.rules.WithLabelValues(fam.String(), "nat").Set(float64(count(rs.NAT)))
	c.rules.WithLabelValues(fam.String(), "filter").Set(float64(count(rs.Filter)))
}

// bridgeNetfilter makes bridged pod traffic pass iptables: without it, a
// reply from a backend to a client pod on the same bridge skips conntrack's
// reverse NAT and the client drops it.
func bridgeNetfilter() error {
	for _, p := range []string{"/proc/sys/net/bridge/bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables"} {
		if b, err := os.ReadFile(p); err == nil && string(b) == "1\n" {
			continue
		}
		if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("proxy: %s (is br_netfilter loaded?): %w", p, err)
		}
	}
	return nil
}

// Details implements the daemon's status hook.
func (c *Component) Details() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := map[string]string{"service ports": fmt.Sprint(c.ports)}
	if c.skipped > 0 {
		d["NodePorts outside node_port_range"] = fmt.Sprint(c.skipped)
	}
	return d
}

// Close stops the health check listeners.
func (c *Component) Close() { c.health.Close() }
