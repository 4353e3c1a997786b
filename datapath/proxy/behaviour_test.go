package proxy

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/iptables/iptablestest"
)

// fate is what happens to the first packet of a connection on this node.
type fate struct {
	To     string // DNAT destination, "" when not DNATed
	Filter string // filter verdict
	Masq   bool   // masqueraded in POSTROUTING
}

func (f fate) String() string { return fmt.Sprintf("to=%q filter=%s masq=%v", f.To, f.Filter, f.Masq) }

// fates walks pkt through nat (PREROUTING, or OUTPUT when fromNode), filter
// (INPUT for a local destination, else FORWARD; OUTPUT first when fromNode)
// and nat POSTROUTING, over every random choice, and returns each fate
// with its probability.
func fates(t *testing.T, tr *iptablestest.Tracer, pkt iptablestest.Packet, fromNode bool) map[fate]float64 {
	t.Helper()
	natChain := "PREROUTING"
	if fromNode {
		natChain = "OUTPUT"
	}
	outs, err := tr.TraceAll(iptables.TableNAT, natChain, pkt)
	if err != nil {
		t.Fatal(err)
	}
	got := map[fate]float64{}
	for _, o := range outs {
		p := pkt
		p.Mark = o.Mark
		var f fate
		if o.Verdict == "DNAT" {
			f.To = o.ToDestination
			ap, err := netip.ParseAddrPort(f.To)
			if err != nil {
				t.Fatal(err)
			}
			p.Dst, p.DPort = ap.Addr(), ap.Port()
		} else if o.Verdict != "ACCEPT" {
			t.Fatalf("nat verdict %s via %v", o.Verdict, o.Hops())
		}
		chains := []string{"FORWARD"}
		if slices.Contains(tr.Local, p.Dst) {
			chains = []string{"INPUT"}
		}
		if fromNode {
			chains = append([]string{"OUTPUT"}, chains...)
		}
		f.Filter = "ACCEPT"
		for _, c := range chains {
			r, err := tr.Trace(iptables.TableFilter, c, p)
			if err != nil {
				t.Fatal(err)
			}
			if f.Filter = r.Verdict; f.Filter != "ACCEPT" {
				break
			}
		}
		if f.Filter == "ACCEPT" {
			r, err := tr.Trace(iptables.TableNAT, "POSTROUTING", p)
			if err != nil {
				t.Fatal(err)
			}
			f.Masq = r.Verdict == "MASQUERADE"
		}
		got[f] += o.Probability
	}
	return got
}

func tracerFor(f *iptablestest.Fake, fam iptables.Family, local ...netip.Addr) *iptablestest.Tracer {
	tr := iptablestest.NewTracer(f, fam)
	tr.Local = local
	return tr
}

// want checks that got holds exactly the fates of want, equally likely.
func wantFates(t *testing.T, name string, got map[fate]float64, want ...fate) {
	t.Helper()
	ok := len(got) == len(want)
	for _, w := range want {
		if !near(got[w], 1/float64(len(want))) {
			ok = false
		}
	}
	if !ok {
		var lines []string
		for f, p := range got {
			lines = append(lines, fmt.Sprintf("%.3f %v", p, f))
		}
		slices.Sort(lines)
		t.Errorf("%s: got\n  %s\nwant each of %v", name, strings.Join(lines, "\n  "), want)
	}
}

var (
	ep1     = fate{To: "10.244.1.5:8080", Filter: "ACCEPT"}
	ep2     = fate{To: "10.244.2.7:8080", Filter: "ACCEPT"}
	ep1Masq = fate{To: "10.244.1.5:8080", Filter: "ACCEPT", Masq: true}
	ep2Masq = fate{To: "10.244.2.7:8080", Filter: "ACCEPT", Masq: true}
)

func tcpTo(src, dst string, port uint16) iptablestest.Packet {
	return iptablestest.Packet{Src: a(src), Dst: a(dst), Proto: "tcp", SPort: 40000, DPort: port}
}

func TestBehaviourClusterIP(t *testing.T) {
	ports := []ServicePort{tcpPort("default", "web", "http", "10.96.0.10", 80,
		readyEP("10.244.1.5", 8080, "node-a"), readyEP("10.244.2.7", 8080, "node-b"))}
	f, _, _ := apply(t, ports, defaultOptions())
	tr := tracerFor(f, iptables.IPv4, node)

	wantFates(t, "from a pod", fates(t, tr, tcpTo("10.244.1.9", "10.96.0.10", 80), false), ep1, ep2)
	wantFates(t, "from the node", fates(t, tr, tcpTo("192.168.0.10", "10.96.0.10", 80), true), ep1Masq, ep2Masq)
	wantFates(t, "from outside the cluster CIDRs", fates(t, tr, tcpTo("192.0.2.1", "10.96.0.10", 80), false), ep1Masq, ep2Masq)
	// Hairpin: the endpoint reaching itself through the service.
	hp := fates(t, tr, tcpTo("10.244.1.5", "10.96.0.10", 80), false)
	if len(hp) != 2 || !near(hp[ep1Masq], 0.5) || !near(hp[ep2], 0.5) {
		t.Errorf("hairpin: %v, want itself masqueraded, the other not", hp)
	}
	// Other ports and addresses are not touched.
	wantFates(t, "other port", fates(t, tr, tcpTo("10.244.1.9", "10.96.0.10", 81), false), fate{Filter: "ACCEPT"})
	wantFates(t, "udp", fates(t, tr, iptablestest.Packet{Src: a("10.244.1.9"), Dst: a("10.96.0.10"), Proto: "udp", DPort: 80}, false), fate{Filter: "ACCEPT"})
}

func near(x, w float64) bool { return math.Abs(x-w) < 1e-6 }

func TestBehaviourNodePort(t *testing.T) {
	sp := tcpPort("default", "web", "http", "10.96.0.10", 80,
		readyEP("10.244.1.5", 8080, "node-a"), readyEP("10.244.2.7", 8080, "node-b"))
	sp.NodePort = 30080
	local := sp
	local.ExternalLocal = true
	local.Name, local.NodePort, local.ClusterIP = "web-local", 30081, a("10.96.0.11")
	noLocal := local
	noLocal.Name, noLocal.NodePort, noLocal.ClusterIP = "web-remote", 30082, a("10.96.0.12")
	noLocal.Endpoints = []Endpoint{readyEP("10.244.2.7", 8080, "node-b")}
	f, _, _ := apply(t, []ServicePort{sp, local, noLocal}, defaultOptions())
	tr := tracerFor(f, iptables.IPv4, node, a("127.0.0.1"))

	wantFates(t, "cluster policy from outside", fates(t, tr, tcpTo("192.0.2.1", "192.168.0.10", 30080), false), ep1Masq, ep2Masq)
	wantFates(t, "node port on loopback is not served", fates(t, tr, tcpTo("127.0.0.1", "127.0.0.1", 30080), true), fate{Filter: "ACCEPT"})
	wantFates(t, "local policy from outside: local endpoint, client kept", fates(t, tr, tcpTo("192.0.2.1", "192.168.0.10", 30081), false), ep1)
	wantFates(t, "local policy from a pod: cluster-wide", fates(t, tr, tcpTo("10.244.3.3", "192.168.0.10", 30081), false), ep1, ep2)
	wantFates(t, "local policy from the node: cluster-wide, masqueraded", fates(t, tr, tcpTo("192.168.0.10", "192.168.0.10", 30081), true), ep1Masq, ep2Masq)
	wantFates(t, "local policy without local endpoint: dropped", fates(t, tr, tcpTo("192.0.2.1", "192.168.0.10", 30082), false), fate{Filter: "DROP"})
	wantFates(t, "... but pods still reach it", fates(t, tr, tcpTo("10.244.3.3", "192.168.0.10", 30082), false), ep2)
	wantFates(t, "unknown node port", fates(t, tr, tcpTo("192.0.2.1", "192.168.0.10", 30083), false), fate{Filter: "ACCEPT"})
}

func TestBehaviourNoEndpoints(t *testing.T) {
	sp := tcpPort("default", "empty", "", "10.96.0.99", 80)
	sp.NodePort = 30099
	sp.ExternalIPs = []netip.Addr{a("203.0.113.9")}
	terminating := tcpPort("default", "draining", "", "10.96.0.98", 80,
		Endpoint{IP: a("10.244.1.5"), Port: 8080, Serving: true, Terminating: true, Node: "node-a", Local: true},
		Endpoint{IP: a("10.244.2.7"), Port: 8080, Terminating: true, Node: "node-b"})
	itpLocal := tcpPort("default", "itp", "", "10.96.0.97", 80, readyEP("10.244.2.7", 8080, "node-b"))
	itpLocal.InternalLocal = true
	f, _, _ := apply(t, []ServicePort{sp, terminating, itpLocal}, defaultOptions())
	tr := tracerFor(f, iptables.IPv4, node)
	reject := fate{Filter: "REJECT"}
	wantFates(t, "cluster IP", fates(t, tr, tcpTo("10.244.1.9", "10.96.0.99", 80), false), reject)
	wantFates(t, "cluster IP from the node", fates(t, tr, tcpTo("192.168.0.10", "10.96.0.99", 80), true), reject)
	wantFates(t, "node port", fates(t, tr, tcpTo("192.0.2.1", "192.168.0.10", 30099), false), reject)
	wantFates(t, "external IP", fates(t, tr, tcpTo("192.0.2.1", "203.0.113.9", 80), false), reject)
	wantFates(t, "serving terminating endpoint when none is ready", fates(t, tr, tcpTo("10.244.1.9", "10.96.0.98", 80), false), ep1)
	wantFates(t, "internal policy local without local endpoint", fates(t, tr, tcpTo("10.244.1.9", "10.96.0.97", 80), false), fate{Filter: "DROP"})
}

func TestBehaviourLoadBalancer(t *testing.T) {
	sp := tcpPort("default", "web", "http", "10.96.0.10", 80,
		readyEP("10.244.1.5", 8080, "node-a"), readyEP("10.244.2.7", 8080, "node-b"))
	sp.NodePort = 30080
	sp.LoadBalancerIPs = []netip.Addr{a("203.0.113.5")}
	sp.SourceRanges = []netip.Prefix{pfx("198.51.100.0/24")}
	ext := tcpPort("default", "ext", "", "10.96.0.20", 443, readyEP("10.244.2.7", 8443, "node-b"))
	ext.ExternalIPs = []netip.Addr{a("203.0.113.9")}
	o := defaultOptions()
	o.NodeIPs = []netip.Addr{node}
	f, _, _ := apply(t, []ServicePort{sp, ext}, o)
	tr := tracerFor(f, iptables.IPv4, node)
	wantFates(t, "LB from an allowed source", fates(t, tr, tcpTo("198.51.100.7", "203.0.113.5", 80), false), ep1Masq, ep2Masq)
	wantFates(t, "LB from a source outside the ranges", fates(t, tr, tcpTo("192.0.2.1", "203.0.113.5", 80), false), fate{Filter: "DROP"})
	wantFates(t, "node port is not behind the ranges", fates(t, tr, tcpTo("192.0.2.1", "192.168.0.10", 30080), false), ep1Masq, ep2Masq)
	wantFates(t, "node ports only on NodeIPs", fates(t, tr, tcpTo("192.0.2.1", "192.168.0.11", 30080), false), fate{Filter: "ACCEPT"})
	wantFates(t, "external IP", fates(t, tr, tcpTo("192.0.2.1", "203.0.113.9", 443), false), fate{To: "10.244.2.7:8443", Filter: "ACCEPT", Masq: true})
}

func TestBehaviourAffinity(t *testing.T) {
	sp := tcpPort("default", "web", "http", "10.96.0.10", 80,
		readyEP("10.244.1.5", 8080, "node-a"), readyEP("10.244.2.7", 8080, "node-b"))
	sp.Affinity, sp.AffinityTimeout = true, 600
	f, _, _ := apply(t, []ServicePort{sp}, defaultOptions())
	tr := tracerFor(f, iptables.IPv4, node)
	client := tcpTo("10.244.3.3", "10.96.0.10", 80)
	wantFates(t, "first connection", fates(t, tr, client, false), ep1, ep2)
	// The dice pick ep2 once; from then on the client sticks to it.
	tr.Random = func(float64) bool { return false }
	r, err := tr.Trace(iptables.TableNAT, "PREROUTING", client)
	if err != nil || r.ToDestination != "10.244.2.7:8080" {
		t.Fatalf("first: %v %v", r.ToDestination, err)
	}
	wantFates(t, "sticky", fates(t, tr, client, false), ep2)
	other := client
	other.Src = a("10.244.3.4")
	wantFates(t, "another client", fates(t, tr, other, false), ep1, ep2)
}
