package proxy

import (
	"slices"
	"strings"
	"testing"

	"github.com/nodenet/nodenet/datapath/iptables"
)

func chainMap(rs Ruleset) map[string]string {
	m := map[string]string{}
	for _, c := range rs.Chains() {
		var b strings.Builder
		for _, r := range c.Rules {
			b.WriteString(string(r) + "\n")
		}
		m[string(c.Table)+"/"+c.Name] = b.String()
	}
	return m
}

// changed lists the chains added, removed or rewritten between a and b.
func changed(a, b Ruleset) []string {
	ma, mb := chainMap(a), chainMap(b)
	var out []string
	for k, v := range ma {
		if w, ok := mb[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	for k := range mb {
		if _, ok := ma[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// TestEndpointChurnIsLocal: changing the endpoints of one service port
// (while it keeps some) changes only its SVC/SVL chains, plus the hairpin
// rules when its local endpoints change, never the dispatch trees or other
// services' chains, and a partial Sync writes exactly those.
func TestEndpointChurnIsLocal(t *testing.T) {
	ports := syntheticPorts(300)
	ports[7].ExternalLocal = true // with a node port: SVC, SVL and EXT chains
	o := defaultOptions()
	_, m, before := apply(t, ports, o)

	for _, tt := range []struct {
		name   string
		mutate func(sp *ServicePort)
	}{
		{"endpoint added", func(sp *ServicePort) {
			sp.Endpoints = append(sp.Endpoints, readyEP("10.246.0.1", 8080, "node-a"))
		}},
		{"endpoint removed", func(sp *ServicePort) { sp.Endpoints = sp.Endpoints[:1] }},
		{"endpoint terminating", func(sp *ServicePort) {
			sp.Endpoints[0].Ready, sp.Endpoints[0].Terminating = false, true
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			next := slices.Clone(ports)
			sp := &next[7]
			sp.Endpoints = slices.Clone(sp.Endpoints)
			tt.mutate(sp)
			after, err := Compile(next, o)
			if err != nil {
				t.Fatal(err)
			}
			diff := changed(before, after)
			if len(diff) == 0 {
				t.Fatal("nothing changed")
			}
			locals := func(eps []Endpoint) (ips []string) {
				for _, e := range eps {
					if e.Local && (e.Ready || e.Serving) {
						ips = append(ips, e.IP.String())
					}
				}
				slices.Sort(ips)
				return ips
			}
			hairpinChanged := !slices.Equal(locals(ports[7].Endpoints), locals(sp.Endpoints))
			own := func(name string) bool {
				return name == "nat/"+sp.chainSVC() || name == "nat/"+sp.chainSVL() ||
					hairpinChanged && name == "nat/"+ChainPost
			}
			for _, name := range diff {
				if !own(name) {
					t.Errorf("chain %s changed, not one of %s's", name, sp)
				}
			}
			// The Manager rewrites only those (payload declares each once).
			if err := m.Sync(t.Context(), Owner, before.Chains(), false); err != nil {
				t.Fatal(err)
			}
			if err := m.Sync(t.Context(), Owner, after.Chains(), false); err != nil {
				t.Fatal(err)
			}
			// Written and removed chains are each declared once.
			var decl []string
			for _, l := range strings.Split(m.Rendered(Owner)[iptables.TableNAT], "\n") {
				if strings.HasPrefix(l, ":") {
					decl = append(decl, l)
				}
			}
			if len(decl) != len(diff) {
				t.Errorf("partial sync declared %d chains, want the %d changed:\n%s", len(decl), len(diff), strings.Join(decl, "\n"))
			}
			if f := m.Rendered(Owner)[iptables.TableFilter]; f != "" {
				t.Errorf("filter rewritten:\n%s", f)
			}
		})
	}
}
