package proxy

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/iptables/iptablestest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

var (
	a    = netip.MustParseAddr
	pfx  = netip.MustParsePrefix
	pod  = pfx("10.244.0.0/16")
	node = a("192.168.0.10")
)

// readyEP is a ready endpoint; local when on "node-a", this node.
func readyEP(ip string, port int, nodeName string) Endpoint {
	return Endpoint{IP: a(ip), Port: port, Ready: true, Serving: true, Node: nodeName, Local: nodeName == "node-a"}
}

func tcpPort(ns, name, portName, cip string, port int, eps ...Endpoint) ServicePort {
	return ServicePort{Namespace: ns, Name: name, PortName: portName, Protocol: TCP, ClusterIP: a(cip), Port: port, Endpoints: eps}
}

func defaultOptions() CompileOptions {
	return CompileOptions{Family: iptables.IPv4, ClusterCIDRs: []netip.Prefix{pod}}
}

// apply compiles ports and syncs them into a fresh Fake through a Manager,
// as the proxy component will.
func apply(t testing.TB, ports []ServicePort, o CompileOptions) (*iptablestest.Fake, *iptables.Manager, Ruleset) {
	t.Helper()
	rs, err := Compile(ports, o)
	if err != nil {
		t.Fatal(err)
	}
	f := iptablestest.NewFake()
	m := iptables.NewManager(f, o.Family, nil)
	if err := m.Register(Owner, Prefixes()...); err != nil {
		t.Fatal(err)
	}
	if err := m.Sync(t.Context(), Owner, rs.Chains(), true); err != nil {
		t.Fatal(err)
	}
	return f, m, rs
}

// golden compares got with testdata/name.golden, rewriting it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

type (
	netipAddr   = netip.Addr
	netipPrefix = netip.Prefix
)

// cmpAddrs compares netip values by value.
var cmpAddrs = cmp.Options{
	cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
	cmp.Comparer(func(x, y netip.Prefix) bool { return x == y }),
}
