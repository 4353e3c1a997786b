package proxy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/iptables/iptablestest"
)

// syntheticPorts returns n service ports with distinct random ClusterIPs
// in 10.96.0.0/12, two endpoints each; every 4th has a node port, every
// 50th has no endpoints.
func syntheticPorts(n int) []ServicePort {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	seen := map[netip.Addr]bool{}
	ports := make([]ServicePort, 0, n)
	for i := range n {
		var ip netip.Addr
		for !ip.IsValid() || seen[ip] {
			v := rng.Uint32() & 0xfffff // 20 host bits
			ip = netip.AddrFrom4([4]byte{10, 96 | byte(v>>16), byte(v >> 8), byte(v)})
		}
		seen[ip] = true
		sp := ServicePort{Namespace: "ns", Name: fmt.Sprintf("svc-%05d", i), PortName: "p", Protocol: TCP, ClusterIP: ip, Port: 80 + i%3}
		if i%50 != 49 {
			sp.Endpoints = []Endpoint{
				readyEP(fmt.Sprintf("10.244.%d.%d", i%200, 1+i%250), 8080, "node-b"),
				readyEP(fmt.Sprintf("10.245.%d.%d", i%200, 1+i%250), 8080, "node-c"),
			}
		}
		if i%4 == 0 {
			sp.NodePort = 30000 + i/4
		}
		ports = append(ports, sp)
	}
	return ports
}

// connectionCost is the expected number of rules a new connection's first
// packet is evaluated against, in nat PREROUTING, filter FORWARD (or INPUT
// for a local destination) and nat POSTROUTING, averaged over the random
// endpoint choice (Result.Evaluated, weighted by TraceAll's probabilities).
func connectionCost(t testing.TB, tr *iptablestest.Tracer, pkt iptablestest.Packet) float64 {
	t.Helper()
	outs, err := tr.TraceAll(iptables.TableNAT, "PREROUTING", pkt)
	if err != nil {
		t.Fatal(err)
	}
	cost := 0.0
	for _, o := range outs {
		p := pkt
		p.Mark = o.Mark
		if o.Verdict == "DNAT" {
			ap := netip.MustParseAddrPort(o.ToDestination)
			p.Dst, p.DPort = ap.Addr(), ap.Port()
		}
		n := o.Evaluated
		fc := "FORWARD"
		if p.Dst == node {
			fc = "INPUT"
		}
		for _, c := range []struct {
			tbl   iptables.Table
			chain string
		}{{iptables.TableFilter, fc}, {iptables.TableNAT, "POSTROUTING"}} {
			r, err := tr.Trace(c.tbl, c.chain, p)
			if err != nil {
				t.Fatal(err)
			}
			n += r.Evaluated
		}
		cost += o.Probability * float64(n)
	}
	return cost
}

type costStats struct{ mean, max float64 }

// measure returns the cost of connecting to every service port (at most
// 200 sampled) by ClusterIP from a pod and by node port from outside, plus
// a miss (a service address on a port it does not serve).
func measure(t testing.TB, n int) (cluster, nodePort costStats, miss float64) {
	ports := syntheticPorts(n)
	f, _, _ := apply(t, ports, defaultOptions())
	tr := tracerFor(f, iptables.IPv4, node)
	step := max(1, n/200)
	var cn, nn int
	for i := 0; i < n; i += step {
		sp := ports[i]
		c := connectionCost(t, tr, iptablestest.Packet{Src: a("10.244.7.7"), Dst: sp.ClusterIP, Proto: "tcp", SPort: 40000, DPort: uint16(sp.Port)})
		cluster.mean += c
		cluster.max = max(cluster.max, c)
		cn++
		if sp.NodePort != 0 {
			c := connectionCost(t, tr, iptablestest.Packet{Src: a("192.0.2.1"), Dst: node, Proto: "tcp", SPort: 40000, DPort: uint16(sp.NodePort)})
			nodePort.mean += c
			nodePort.max = max(nodePort.max, c)
			nn++
		}
	}
	cluster.mean /= float64(cn)
	nodePort.mean /= float64(nn)
	miss = connectionCost(t, tr, iptablestest.Packet{Src: a("10.244.7.7"), Dst: ports[0].ClusterIP, Proto: "tcp", SPort: 40000, DPort: 9})
	return cluster, nodePort, miss
}

// TestDispatchScales: the cost of a new connection grows with log N, not
// N: below 60 rules at 10,000 services, and within a small factor of the
// cost at 10.
func TestDispatchScales(t *testing.T) {
	sizes := []int{10, 1000, 10000}
	if testing.Short() {
		sizes = []int{10, 1000}
	}
	type row struct {
		cluster, nodePort costStats
		miss              float64
	}
	res := map[int]row{}
	for _, n := range sizes {
		c, np, miss := measure(t, n)
		res[n] = row{c, np, miss}
		t.Logf("%6d services: ClusterIP mean %.1f max %.1f; NodePort mean %.1f max %.1f; miss %.1f rules",
			n, c.mean, c.max, np.mean, np.max, miss)
		for what, v := range map[string]float64{"ClusterIP max": c.max, "NodePort max": np.max, "miss": miss} {
			if v >= 60 {
				t.Errorf("%d services: %s cost %.1f rules, want < 60", n, what, v)
			}
		}
	}
	big := sizes[len(sizes)-1]
	for what, pair := range map[string][2]float64{
		"ClusterIP": {res[10].cluster.mean, res[big].cluster.mean},
		"NodePort":  {res[10].nodePort.mean, res[big].nodePort.mean},
	} {
		if pair[1] > 4*pair[0] {
			t.Errorf("%s: mean cost %.1f at %d services vs %.1f at 10: more than 4x", what, pair[1], big, pair[0])
		}
	}
}
