package internode

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/daemon/view"
	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/iptables/iptablestest"
	"github.com/nodenet/nodenet/datapath/routes"
	"github.com/nodenet/nodenet/datapath/routes/fake"
)

func node(name, ip, cidr string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
	if cidr != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = cidr, []string{cidr}
	}
	return n
}

// setup returns a component for node a over a view holding nodes.
func setup(t *testing.T, nodes ...*corev1.Node) (*Component, *fake.Netlink, *iptablestest.Fake, cache.Indexer) {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, n := range nodes {
		if err := idx.Add(n); err != nil {
			t.Fatal(err)
		}
	}
	v := &view.View{Nodes: corelisters.NewNodeLister(idx)}
	nl := fake.New()
	eth0 := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500, Flags: net.FlagUp}}
	_, underlay, _ := net.ParseCIDR("10.250.0.10/24")
	underlay.IP = net.ParseIP("10.250.0.10")
	if err := nl.LinkAdd(eth0); err != nil {
		t.Fatal(err)
	}
	if err := nl.AddrReplace(eth0, &netlink.Addr{IPNet: underlay}); err != nil {
		t.Fatal(err)
	}
	ipt := iptablestest.NewFake()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := New(v, Options{
		Node:         "a",
		Backend:      routes.HostGW,
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		IPTables:     map[iptables.Family]*iptables.Manager{iptables.IPv4: iptables.NewManager(ipt, iptables.IPv4, log)},
		Netlink:      nl,
		Log:          log,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, nl, ipt, idx
}

func TestSyncRoutesAndMasquerade(t *testing.T) {
	c, nl, ipt, idx := setup(t,
		node("a", "10.250.0.10", "10.244.0.0/24"),
		node("b", "10.250.0.11", "10.244.1.0/24"),
		node("c", "10.250.0.12", "10.244.2.0/24"),
		node("d", "10.250.0.13", ""), // no podCIDR yet: not routed, reported
	)
	if err := c.Sync(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	dump := nl.String()
	for _, want := range []string{"10.244.1.0/24 via 10.250.0.11", "10.244.2.0/24 via 10.250.0.12"} {
		if !strings.Contains(dump, want) {
			t.Errorf("no route %q in:\n%s", want, dump)
		}
	}
	if strings.Contains(dump, "10.244.0.0/24 via") {
		t.Errorf("a route to our own podCIDR:\n%s", dump)
	}
	if d := c.Details(); d["peers routed"] != "2" || !strings.Contains(d["not routed"], `"d"`) {
		t.Errorf("details: %v", d)
	}
	nat := ipt.DumpTable(iptables.IPv4, iptables.TableNAT)
	for _, want := range []string{"-A POSTROUTING", "-j NODENET-POSTROUTING", "-s 10.244.0.0/16", "MASQUERADE --random-fully"} {
		if !strings.Contains(nat, want) {
			t.Errorf("nat table lacks %q:\n%s", want, nat)
		}
	}

	// A node going away takes its route with it.
	if err := idx.Delete(node("c", "", "")); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if dump := nl.String(); strings.Contains(dump, "10.244.2.0/24") {
		t.Errorf("route to a deleted node remains:\n%s", dump)
	}
}

func TestSyncFailsWithoutSelf(t *testing.T) {
	c, _, _, _ := setup(t, node("b", "10.250.0.11", "10.244.1.0/24"))
	if err := c.Sync(context.Background(), true); err == nil || !strings.Contains(err.Error(), `"a" is not registered`) {
		t.Errorf("sync without our own node: %v", err)
	}
}

// TestAddressesApplyLive: a reload that changes node.addresses changes the
// address the vxlan device would use without a restart.
func TestAddressesApplyLive(t *testing.T) {
	c, _, _, _ := setup(t, node("a", "10.250.0.10", "10.244.0.0/24"), node("b", "10.250.0.11", "10.244.1.0/24"))
	cfg := config.Defaults()
	cfg.Node.Addresses = []string{"192.0.2.10"}
	if err := c.Reconfigure(&cfg); err != nil {
		t.Fatal(err)
	}
	c.opts.Backend = routes.VXLAN
	d, err := c.desired()
	if err != nil {
		t.Fatal(err)
	}
	if d.Device == nil || d.Device.Local.String() != "192.0.2.10" {
		t.Errorf("vxlan local address after reload: %+v", d.Device)
	}
}
