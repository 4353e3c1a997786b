package proxier

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

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
	entries  map[string]memoEntry
}

type memoEntry struct {
	version string // Service and slice resource versions
	ports   []proxy.ServicePort
	rules   []proxy.PortRules
	skipped int // node ports outside the configured range
}

// versionOf names the API state a Service's ports are built from.
func versionOf(svc *corev1.Service, ss []*discoveryv1.EndpointSlice) string {
	var b strings.Builder
	b.WriteString(string(svc.UID))
	b.WriteByte('/')
	b.WriteString(svc.ResourceVersion)
	for _, s := range ss {
		b.WriteByte(' ')
		b.WriteString(s.Name)
		b.WriteByte('@')
		b.WriteString(s.ResourceVersion)
	}
	return b.String()
}

// compiled is one family's result of a sync.
type compiled struct {
	ports   []proxy.ServicePort
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
	next := make(map[string]memoEntry, len(svcs))
	var out compiled
	var parts []proxy.PortRules
	for _, svc := range svcs {
		key := svc.Namespace + "/" + svc.Name
		ss := bySvc[key]
		version := versionOf(svc, ss)
		e, ok := m.entries[key]
		if !ok || e.version != version {
			ports, skipped := c.inRange(proxy.BuildService(svc, ss, bo))
			e = memoEntry{version: version, ports: ports, skipped: skipped, rules: make([]proxy.PortRules, len(ports))}
			for i := range ports {
				e.rules[i] = k.Port(&ports[i])
			}
		}
		next[key] = e
		out.ports = append(out.ports, e.ports...)
		out.skipped += e.skipped
		parts = append(parts, e.rules...)
	}
	m.entries = next
	out.rules = k.Assemble(parts)
	return out, nil
}
