package proxier

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nodenet/nodenet/datapath/proxy"
)

// memo keeps, per Service, the service ports and compiled pieces of the
// last sync of one family, keyed by the resource versions they came from.
// A sync then builds and compiles only the Services whose object or
// slices changed, and hands the Manager the very rule slices of the rest,
// which it recognises without hashing: at 10,000 Services that is what
// makes an endpoint change cost milliseconds instead of a second.
type memo struct {
	settings string // the compile settings the entries were made with
	entries  map[types.NamespacedName]memoEntry
	spare    map[types.NamespacedName]memoEntry // the previous entries' map, reused
	version  []byte                             // scratch for versionOf
}

type memoEntry struct {
	version string // Service and slice resource versions
	// kept are the ports Sync reads after programming (see keep); the
	// rest are dropped once compiled: at 10,000 Services their endpoint
	// lists were a sixth of the daemon's heap.
	kept    []proxy.ServicePort
	nports  int
	rules   []proxy.PortRules
	skipped int // node ports outside the configured range
}

// keep reports whether Sync needs p after compiling it: UDP ports for
// conntrack cleanup, health-checked ones for the health check server.
func keep(p *proxy.ServicePort) bool {
	return p.Protocol == proxy.UDP || (p.ExternalLocal && p.HealthCheckNodePort != 0)
}

// versionOf names the API state a Service's ports are built from,
// appended to b.
func versionOf(b []byte, svc *corev1.Service, ss []*discoveryv1.EndpointSlice) []byte {
	b = append(b, svc.UID...)
	b = append(b, '/')
	b = append(b, svc.ResourceVersion...)
	for _, s := range ss {
		b = append(b, ' ')
		b = append(b, s.Name...)
		b = append(b, '@')
		b = append(b, s.ResourceVersion...)
	}
	return b
}

// compiled is one family's result of a sync.
type compiled struct {
	kept    []proxy.ServicePort // the ports keep selects
	nports  int                 // all service ports
	rules   proxy.Ruleset
	skipped int
}

// compile builds and compiles every Service, reusing the memo's entries
// whose version is unchanged, and replaces the memo's entries.
func (c *Component) compile(m *memo, svcs []*corev1.Service, epSlices []*discoveryv1.EndpointSlice,
	bo proxy.Options, co proxy.CompileOptions) (compiled, error) {
	k, err := proxy.NewCompiler(co)
	if err != nil {
		return compiled{}, err
	}
	if settings := fmt.Sprintf("%+v %+v %v", bo, co, c.opts.NodePortRange); settings != m.settings {
		m.settings, m.entries = settings, nil
	}
	svcs = slices.Clone(svcs)
	slices.SortFunc(svcs, func(a, b *corev1.Service) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	bySvc := proxy.SlicesByService(epSlices, bo.Family)
	// The map of two syncs ago is refilled: an unchanged Service costs
	// neither a map entry nor a version string.
	next := m.spare
	if next == nil {
		next = make(map[types.NamespacedName]memoEntry, len(svcs))
	}
	clear(next)
	var out compiled
	parts := make([]proxy.PortRules, 0, len(svcs))
	for _, svc := range svcs {
		key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		ss := bySvc[key]
		m.version = versionOf(m.version[:0], svc, ss)
		e, ok := m.entries[key]
		if !ok || e.version != string(m.version) {
			ports, skipped := c.inRange(proxy.BuildService(svc, ss, bo))
			e = memoEntry{version: string(m.version), nports: len(ports), skipped: skipped, rules: make([]proxy.PortRules, len(ports))}
			for i := range ports {
				e.rules[i] = k.Port(&ports[i])
				if keep(&ports[i]) {
					e.kept = append(e.kept, ports[i])
				}
			}
		}
		next[key] = e
		out.kept = append(out.kept, e.kept...)
		out.nports += e.nports
		out.skipped += e.skipped
		parts = append(parts, e.rules...)
	}
	m.entries, m.spare = next, m.entries
	out.rules = k.Assemble(parts)
	return out, nil
}
