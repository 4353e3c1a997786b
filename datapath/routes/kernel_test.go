package routes_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vishvananda/netlink"

	"github.com/nodenet/nodenet/datapath/routes"
)

// kNode is one node of the real-kernel topology: a namespace with eth0 on
// the shared segment 192.168.50.0/24 and a bridge pods0 holding the podCIDR
// gateway 10.244.N.1 and "the pod" 10.244.N.10.
type kNode struct {
	ns   string
	node routes.Node
	pod  netip.Addr
	pod6 netip.Addr // with dualStack only: fd00:10:244:N::10 in fd00:10:244:N::/64
}

// newTopology builds N node namespaces joined by a bridge in a switch
// namespace. Nothing is created in the test's own (root) namespace.
func newTopology(t *testing.T, n int, dualStack bool) []kNode {
	t.Helper()
	sw := addNS(t, "sw")
	ipIn(t, sw, "link", "add", "br0", "type", "bridge")
	ipIn(t, sw, "link", "set", "br0", "up")
	var nodes []kNode
	for i := 1; i <= n; i++ {
		k := kNode{
			ns: addNS(t, string(rune('a'+i-1))),
			node: node(fmt.Sprintf("node-%c", 'a'+i-1), fmt.Sprintf("192.168.50.%d", i),
				fmt.Sprintf("10.244.%d.0/24", i)),
			pod: netip.MustParseAddr(fmt.Sprintf("10.244.%d.10", i)),
		}
		port := fmt.Sprintf("port%d", i)
		ipIn(t, sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", k.ns)
		ipIn(t, sw, "link", "set", port, "master", "br0", "up")
		ipIn(t, k.ns, "link", "set", "lo", "up")
		ipIn(t, k.ns, "addr", "add", k.node.IP.String()+"/24", "dev", "eth0")
		ipIn(t, k.ns, "link", "set", "eth0", "up")
		ipIn(t, k.ns, "link", "add", "pods0", "type", "bridge")
		ipIn(t, k.ns, "addr", "add", fmt.Sprintf("10.244.%d.1/24", i), "dev", "pods0")
		ipIn(t, k.ns, "addr", "add", k.pod.String()+"/24", "dev", "pods0")
		if dualStack {
			cidr := netip.MustParsePrefix(fmt.Sprintf("fd00:10:244:%d::/64", i))
			k.node.PodCIDRs = append(k.node.PodCIDRs, cidr)
			k.pod6 = netip.MustParseAddr(fmt.Sprintf("fd00:10:244:%d::10", i))
			ipIn(t, k.ns, "addr", "add", fmt.Sprintf("fd00:10:244:%d::1/64", i), "dev", "pods0", "nodad")
			ipIn(t, k.ns, "addr", "add", k.pod6.String()+"/64", "dev", "pods0", "nodad")
		}
		ipIn(t, k.ns, "link", "set", "pods0", "up")
		err := inNS(k.ns, func() error {
			err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
			if dualStack && err == nil {
				err = os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1\n"), 0o644)
			}
			return err
		})
		must(t, err)
		nodes = append(nodes, k)
	}
	return nodes
}

// countingNetlink counts the calls that can change kernel state.
type countingNetlink struct {
	routes.Netlink
	changes int
}

func (c *countingNetlink) LinkAdd(l netlink.Link) error { c.changes++; return c.Netlink.LinkAdd(l) }
func (c *countingNetlink) LinkDel(l netlink.Link) error { c.changes++; return c.Netlink.LinkDel(l) }
func (c *countingNetlink) LinkSetUp(l netlink.Link) error {
	c.changes++
	return c.Netlink.LinkSetUp(l)
}
func (c *countingNetlink) LinkSetMTU(l netlink.Link, mtu int) error {
	c.changes++
	return c.Netlink.LinkSetMTU(l, mtu)
}
func (c *countingNetlink) AddrReplace(l netlink.Link, a *netlink.Addr) error {
	c.changes++
	return c.Netlink.AddrReplace(l, a)
}
func (c *countingNetlink) AddrDel(l netlink.Link, a *netlink.Addr) error {
	c.changes++
	return c.Netlink.AddrDel(l, a)
}
func (c *countingNetlink) RouteReplace(r *netlink.Route) error {
	c.changes++
	return c.Netlink.RouteReplace(r)
}
func (c *countingNetlink) RouteDel(r *netlink.Route) error { c.changes++; return c.Netlink.RouteDel(r) }
func (c *countingNetlink) NeighSet(n *netlink.Neigh) error { c.changes++; return c.Netlink.NeighSet(n) }
func (c *countingNetlink) NeighDel(n *netlink.Neigh) error { c.changes++; return c.Netlink.NeighDel(n) }

// applyIn computes k's desired state and applies it inside k's namespace
// with the real netlink, twice: the second Apply must change nothing.
func applyIn(t *testing.T, k kNode, backend routes.Backend, peers ...kNode) routes.Desired {
	t.Helper()
	var nodes []routes.Node
	for _, p := range peers {
		nodes = append(nodes, p.node)
	}
	d := compute(t, opts(backend, k.node), nodes...)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
	nl := &countingNetlink{Netlink: routes.RealNetlink()}
	a := routes.NewApplier(nl, log)
	must(t, inNS(k.ns, func() error { return a.Apply(d) }))
	nl.changes = 0
	must(t, inNS(k.ns, func() error { return a.Apply(d) }))
	if nl.changes != 0 {
		t.Errorf("%s: second Apply made %d changes, want 0", k.node.Name, nl.changes)
	}
	return d
}

type ipLink struct {
	Name string `json:"ifname"`
	MTU  int    `json:"mtu"`
	MAC  string `json:"address"`
}

type ipRoute struct {
	Dst      string   `json:"dst"`
	Gateway  string   `json:"gateway"`
	Dev      string   `json:"dev"`
	Protocol string   `json:"protocol"`
	Flags    []string `json:"flags"`
}

func jsonIn[T any](t *testing.T, ns string, args ...string) []T {
	t.Helper()
	var out []T
	if err := json.Unmarshal([]byte(ipIn(t, ns, args...)), &out); err != nil {
		t.Fatalf("parse %v output: %v", args, err)
	}
	return out
}

// checkKernel compares what `ip -j` and `bridge -j` show in k's namespace
// with d: our routes, and the vxlan device's neighbour and FDB entries.
func checkKernel(t *testing.T, k kNode, d routes.Desired) {
	t.Helper()
	var want []ipRoute
	for _, r := range d.Routes {
		w := ipRoute{Dst: r.Dst.String(), Gateway: r.Gw.String(), Dev: r.Dev, Protocol: "78"}
		if w.Dev == "" {
			w.Dev = "eth0"
		}
		if r.OnLink {
			w.Flags = []string{"onlink"}
		}
		want = append(want, w)
	}
	got := slices.Concat(jsonIn[ipRoute](t, k.ns, "-j", "-4", "route", "show", "proto", "78"),
		jsonIn[ipRoute](t, k.ns, "-j", "-6", "route", "show", "proto", "78"))
	for i := range got {
		got[i].Protocol = "78" // "ip route show proto 78" already filtered
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("%s: routes with proto 78 (-want +got):\n%s", k.node.Name, diff)
	}

	links := jsonIn[ipLink](t, k.ns, "-j", "link", "show")
	i := slices.IndexFunc(links, func(l ipLink) bool { return l.Name == routes.DefaultVXLANName })
	if d.Device == nil {
		if i >= 0 {
			t.Errorf("%s: vxlan device %s still present after switching to %s", k.node.Name, routes.DefaultVXLANName, d.Backend)
		}
		return
	}
	if i < 0 {
		t.Fatalf("%s: vxlan device %s missing", k.node.Name, routes.DefaultVXLANName)
	}
	if links[i].MTU != 1450 || links[i].MAC != d.Device.MAC.String() {
		t.Errorf("%s: vxlan device mtu %d mac %s, want 1450 %s", k.node.Name, links[i].MTU, links[i].MAC, d.Device.MAC)
	}
	type neigh struct{ Dst, LLAddr string }
	var wantN, gotN []neigh
	for _, n := range d.Neighbors {
		wantN = append(wantN, neigh{n.IP.String(), n.MAC.String()})
	}
	for _, n := range jsonIn[struct {
		Dst    string `json:"dst"`
		LLAddr string `json:"lladdr"`
	}](t, k.ns, "-j", "neigh", "show", "dev", d.Device.Name, "nud", "permanent") {
		gotN = append(gotN, neigh{n.Dst, n.LLAddr})
	}
	slices.SortFunc(gotN, func(a, b neigh) int {
		return netip.MustParseAddr(a.Dst).Compare(netip.MustParseAddr(b.Dst))
	})
	if diff := cmp.Diff(wantN, gotN, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("%s: permanent neighbours (-want +got):\n%s", k.node.Name, diff)
	}
	type fdb struct{ MAC, Dst, State string }
	var wantF, gotF []fdb
	for _, f := range d.FDB {
		wantF = append(wantF, fdb{f.MAC.String(), f.Dst.String(), "permanent"})
	}
	for _, f := range jsonIn[struct {
		MAC   string `json:"mac"`
		Dst   string `json:"dst"`
		State string `json:"state"`
	}](t, k.ns, "bridge", "-j", "fdb", "show", "dev", d.Device.Name) {
		gotF = append(gotF, fdb{f.MAC, f.Dst, f.State})
	}
	slices.SortFunc(gotF, func(a, b fdb) int { return strings.Compare(a.MAC, b.MAC) })
	if diff := cmp.Diff(wantF, gotF, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("%s: fdb (-want +got):\n%s", k.node.Name, diff)
	}
}

// checkTCP connects from the pod address of from to the pod address of to
// (the client socket bound to its pod IP, as a pod's would be) and checks
// that the receiver sees the sender's pod IP: no NAT on the way.
func checkTCP(t *testing.T, from, to kNode) {
	t.Helper()
	checkTCPAddr(t, from.ns, from.pod, to.ns, to.pod)
}

func checkTCPAddr(t *testing.T, fromNS string, src netip.Addr, toNS string, dst netip.Addr) {
	t.Helper()
	var ln net.Listener
	must(t, inNS(toNS, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(dst, 0).String())
		return err
	}))
	defer ln.Close()
	seen := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			seen <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "ping\n" {
			seen <- fmt.Sprintf("read %q: %v", line, err)
			return
		}
		if _, err := c.Write([]byte("pong\n")); err != nil {
			seen <- "write: " + err.Error()
			return
		}
		seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
	}()
	conn, err := dialFrom(fromNS, src, ln.Addr().String())
	if err != nil {
		t.Fatalf("%s -> %s: %v", src, dst, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		t.Fatalf("%s -> %s: write: %v", src, dst, err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "pong\n" {
		t.Fatalf("%s -> %s: read %q: %v", src, dst, line, err)
	}
	if got := <-seen; got != src.String() {
		t.Errorf("%s -> %s: receiver saw the peer as %s, want the sender's pod IP %s", src, dst, got, src)
	}
}

func vxlanPackets(t *testing.T, k kNode) (tx, rx int) {
	t.Helper()
	type counters struct {
		Packets int `json:"packets"`
	}
	links := jsonIn[struct {
		Stats struct{ RX, TX counters } `json:"stats64"`
	}](t, k.ns, "-j", "-s", "link", "show", routes.DefaultVXLANName)
	if len(links) != 1 {
		t.Fatalf("%s: %d links named %s", k.node.Name, len(links), routes.DefaultVXLANName)
	}
	return links[0].Stats.TX.Packets, links[0].Stats.RX.Packets
}

func dialFrom(ns string, src netip.Addr, addr string) (net.Conn, error) {
	var conn net.Conn
	err := inNS(ns, func() (err error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 3 * time.Second}
		conn, err = d.Dial("tcp", addr)
		return err
	})
	return conn, err
}

// TestKernel runs Apply against the real kernel in throwaway namespaces:
// three nodes, both backends, a peer leaving, backend switches, stale routes
// of ours and foreign routes next to them.
func TestKernel(t *testing.T) {
	requireKernel(t)
	rootForward, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	must(t, err)
	n := newTopology(t, 3, false)
	a, b, c := n[0], n[1], n[2]

	// Before nodenet: no route between pods.
	if conn, err := dialFrom(a.ns, a.pod, netip.AddrPortFrom(b.pod, 9).String()); err == nil {
		conn.Close()
		t.Fatal("pods reach each other before any Apply: the topology leaks")
	}
	// On node a: foreign routes (static, boot) that must survive everything,
	// and a stale route of ours that must go.
	ipIn(t, a.ns, "route", "add", "10.99.0.0/24", "via", "192.168.50.3", "proto", "static")
	ipIn(t, a.ns, "route", "add", "10.98.0.0/24", "via", "192.168.50.2")
	ipIn(t, a.ns, "route", "add", "10.244.2.0/24", "via", "192.168.50.3", "proto", "static", "metric", "100")
	ipIn(t, a.ns, "route", "add", "10.244.77.0/24", "via", "192.168.50.2", "proto", "78")
	foreign := func() string {
		return ipIn(t, a.ns, "route", "show", "table", "all", "proto", "static") + ipIn(t, a.ns, "route", "show", "proto", "boot")
	}
	foreignBefore := foreign()

	for _, backend := range []routes.Backend{routes.HostGW, routes.VXLAN} {
		t.Run(string(backend), func(t *testing.T) {
			for _, k := range n {
				d := applyIn(t, k, backend, a, b, c)
				checkKernel(t, k, d)
			}
			checkTCP(t, a, b)
			checkTCP(t, c, a)
			checkTCP(t, b, c)
			if backend == routes.VXLAN {
				// The traffic really went through the tunnel.
				for _, k := range n {
					if tx, rx := vxlanPackets(t, k); tx == 0 || rx == 0 {
						t.Errorf("%s: %s sent %d and received %d packets", k.node.Name, routes.DefaultVXLANName, tx, rx)
					}
				}
			}
		})
	}

	t.Run("node-c leaves", func(t *testing.T) {
		d := applyIn(t, a, routes.VXLAN, a, b)
		checkKernel(t, a, d)
		if out := ipIn(t, a.ns, "route", "show", "10.244.3.0/24"); out != "" {
			t.Errorf("route to node-c's podCIDR still on node-a: %s", out)
		}
		checkTCP(t, a, b)
	})

	t.Run("back to host-gw", func(t *testing.T) {
		for _, k := range []kNode{a, b} {
			d := applyIn(t, k, routes.HostGW, a, b)
			checkKernel(t, k, d) // also checks that the vxlan device is gone
		}
		checkTCP(t, a, b)
		checkTCP(t, b, a)
	})

	if diff := cmp.Diff(foreignBefore, foreign()); diff != "" {
		t.Errorf("foreign routes on node-a changed (-before +after):\n%s", diff)
	}
	if got, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err != nil || string(got) != string(rootForward) {
		t.Errorf("root namespace ip_forward changed: %q -> %q (%v)", rootForward, got, err)
	}
	if _, err := netlink.LinkByName(routes.DefaultVXLANName); err == nil {
		t.Errorf("a %s device appeared in the root namespace", routes.DefaultVXLANName)
	}
}

// TestKernelDualStackVXLAN carries IPv6 pod traffic over the IPv4 underlay:
// /128 device addresses, IPv6 onlink routes and permanent NDP entries.
func TestKernelDualStackVXLAN(t *testing.T) {
	requireKernel(t)
	n := newTopology(t, 2, true)
	a, b := n[0], n[1]
	for _, k := range n {
		d := applyIn(t, k, routes.VXLAN, a, b)
		checkKernel(t, k, d)
	}
	checkTCPAddr(t, a.ns, a.pod6, b.ns, b.pod6)
	checkTCPAddr(t, b.ns, b.pod, a.ns, a.pod)
	for _, k := range n {
		d := applyIn(t, k, routes.HostGW, a, b) // IPv6 podCIDRs skipped: IPv4 underlay
		checkKernel(t, k, d)
		if len(d.Skipped) != 1 {
			t.Errorf("%s: skipped %q, want the peer's IPv6 podCIDR", k.node.Name, d.Skipped)
		}
	}
	checkTCPAddr(t, a.ns, a.pod, b.ns, b.pod)
}
