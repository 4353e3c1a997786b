package routes_test

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nodenet/nodenet/datapath/routes"
	"github.com/nodenet/nodenet/datapath/routes/fake"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ipnet(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

// newFake is node-a's kernel before nodenet: eth0 with 192.168.0.1/24, a
// default route (proto boot) and a static route, both foreign.
func newFake(t *testing.T) *fake.Netlink {
	t.Helper()
	f := fake.New()
	eth0 := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500, Flags: net.FlagUp}}
	must(t, f.LinkAdd(eth0))
	must(t, f.AddrReplace(eth0, &netlink.Addr{IPNet: ipnet("192.168.0.1/24")}))
	must(t, f.RouteReplace(&netlink.Route{Gw: net.ParseIP("192.168.0.254"), Protocol: unix.RTPROT_BOOT}))
	must(t, f.RouteReplace(&netlink.Route{Dst: ipnet("10.99.0.0/24"), Gw: net.ParseIP("192.168.0.3"), Protocol: unix.RTPROT_STATIC}))
	f.ResetCalls()
	return f
}

var baseDump = []string{
	"link eth0 device mtu 1500 up",
	"addr 192.168.0.1/24 dev eth0",
	"route 10.99.0.0/24 via 192.168.0.3 dev eth0 proto 4",
	"route 192.168.0.0/24 dev eth0 proto 2 scope link",
	"route default via 192.168.0.254 dev eth0 proto 3",
}

// expect renders lines in the fake's dump order: links, addresses, routes,
// neighbours, FDB entries, each group sorted.
func expect(groups ...[]string) string {
	rank := map[string]int{"link": 0, "addr": 1, "route": 2, "neigh": 3, "fdb": 4}
	all := slices.Concat(groups...)
	slices.SortFunc(all, func(a, b string) int {
		ra, rb := rank[strings.Fields(a)[0]], rank[strings.Fields(b)[0]]
		if ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	return strings.Join(all, "\n") + "\n"
}

var (
	hostGWABC = []string{
		"route 10.244.2.0/24 via 192.168.0.2 dev eth0 proto 78",
		"route 10.244.3.0/24 via 192.168.0.3 dev eth0 proto 78",
	}
	vxlanABC = []string{
		"link nodenet.vx vxlan mtu 1450 up vni 1 port 8472 local 192.168.0.1 dev eth0 mac 0e:6e:c0:a8:00:01",
		"addr 10.244.1.0/32 dev nodenet.vx",
		"route 10.244.2.0/24 via 10.244.2.0 dev nodenet.vx proto 78 onlink",
		"route 10.244.3.0/24 via 10.244.3.0 dev nodenet.vx proto 78 onlink",
		"neigh 10.244.2.0 lladdr 0e:6e:c0:a8:00:02 dev nodenet.vx permanent",
		"neigh 10.244.3.0 lladdr 0e:6e:c0:a8:00:03 dev nodenet.vx permanent",
		"fdb 0e:6e:c0:a8:00:02 dev nodenet.vx dst 192.168.0.2 self permanent",
		"fdb 0e:6e:c0:a8:00:03 dev nodenet.vx dst 192.168.0.3 self permanent",
	}
)

func compute(t *testing.T, o routes.Options, peers ...routes.Node) routes.Desired {
	t.Helper()
	d, err := routes.Compute(o, peers)
	must(t, err)
	return d
}

func checkDump(t *testing.T, f *fake.Netlink, want string) {
	t.Helper()
	if diff := cmp.Diff(want, f.String()); diff != "" {
		t.Errorf("fake state (-want +got):\n%s", diff)
	}
}

func TestApplyFromEmpty(t *testing.T) {
	for _, tc := range []struct {
		backend routes.Backend
		want    string
	}{{routes.HostGW, expect(baseDump, hostGWABC)}, {routes.VXLAN, expect(baseDump, vxlanABC)}} {
		t.Run(string(tc.backend), func(t *testing.T) {
			f := newFake(t)
			err := routes.NewApplier(f, nil).Apply(compute(t, opts(tc.backend, nodeA), nodeA, nodeB, nodeC))
			must(t, err)
			checkDump(t, f, tc.want)
		})
	}
}

func TestApplyIdempotent(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    routes.Desired
	}{
		{"host-gw", compute(t, opts(routes.HostGW, nodeA), nodeA, nodeB, nodeC)},
		{"vxlan", compute(t, opts(routes.VXLAN, nodeA), nodeA, nodeB, nodeC)},
		{"vxlan dual-stack", compute(t, opts(routes.VXLAN, nodeADS), nodeADS, nodeBDS, nodeCDS)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			a := routes.NewApplier(f, nil)
			must(t, a.Apply(tc.d))
			before := f.String()
			f.ResetCalls()
			must(t, a.Apply(tc.d))
			if n := f.Mutations(); n != 0 {
				t.Errorf("second Apply made %d changes, want 0; calls: %v", n, f.Calls())
			}
			checkDump(t, f, before)
		})
	}
}

// foreignRoutes lists every route whose protocol is not ours.
func foreignRoutes(t *testing.T, nl routes.Netlink) []string {
	t.Helper()
	all, err := nl.RouteListFiltered(netlink.FAMILY_ALL, nil, 0)
	must(t, err)
	var out []string
	for _, r := range all {
		if r.Protocol != routes.ProtoNodenet {
			out = append(out, r.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestApplyStaleAndForeign(t *testing.T) {
	f := newFake(t)
	add := func(dst, gw string, proto netlink.RouteProtocol, metric int) {
		must(t, f.RouteReplace(&netlink.Route{Dst: ipnet(dst), Gw: net.ParseIP(gw), Protocol: proto, Priority: metric}))
	}
	add("10.244.9.0/24", "192.168.0.9", routes.ProtoNodenet, 0)   // a node that left
	add("10.244.2.0/24", "192.168.0.7", routes.ProtoNodenet, 0)   // a node that moved
	add("10.244.3.0/24", "192.168.0.3", routes.ProtoNodenet, 100) // an older metric
	add("10.98.0.0/24", "192.168.0.2", unix.RTPROT_BOOT, 0)
	add("10.244.2.0/24", "192.168.0.50", unix.RTPROT_STATIC, 100) // same dst, other metric: coexists
	foreign := foreignRoutes(t, f)

	a := routes.NewApplier(f, nil)
	must(t, a.Apply(compute(t, opts(routes.HostGW, nodeA), nodeA, nodeB, nodeC)))
	checkDump(t, f, expect(baseDump, hostGWABC, []string{
		"route 10.98.0.0/24 via 192.168.0.2 dev eth0 proto 3",
		"route 10.244.2.0/24 via 192.168.0.50 dev eth0 proto 4 metric 100",
	}))
	// Through a backend switch and back to no peers at all, the foreign
	// routes stay exactly as they were.
	for _, d := range []routes.Desired{
		compute(t, opts(routes.VXLAN, nodeA), nodeB, nodeC),
		compute(t, opts(routes.HostGW, nodeA)),
	} {
		must(t, a.Apply(d))
		if diff := cmp.Diff(foreign, foreignRoutes(t, f)); diff != "" {
			t.Errorf("foreign routes changed (-before +after):\n%s", diff)
		}
	}
}

func TestApplyForeignConflict(t *testing.T) {
	for _, backend := range []routes.Backend{routes.HostGW, routes.VXLAN} {
		t.Run(string(backend), func(t *testing.T) {
			f := newFake(t)
			must(t, f.RouteReplace(&netlink.Route{Dst: ipnet("10.244.3.0/24"), Gw: net.ParseIP("192.168.0.50"), Protocol: unix.RTPROT_STATIC}))
			foreign := foreignRoutes(t, f)
			err := routes.NewApplier(f, nil).Apply(compute(t, opts(backend, nodeA), nodeB, nodeC))
			if err == nil || !strings.Contains(err.Error(), "route 10.244.3.0/24") || !strings.Contains(err.Error(), "not touching it") {
				t.Errorf("Apply error = %v, want the conflict on 10.244.3.0/24 reported", err)
			}
			if diff := cmp.Diff(foreign, foreignRoutes(t, f)); diff != "" {
				t.Errorf("foreign routes changed (-before +after):\n%s", diff)
			}
			if !strings.Contains(f.String(), "route 10.244.2.0/24 via") {
				t.Errorf("the route without conflict was not installed:\n%s", f)
			}
		})
	}
}

func TestApplyPartialFailure(t *testing.T) {
	f := newFake(t)
	boom := errors.New("injected")
	f.Inject = func(op, subject string) error {
		switch op + " " + subject {
		case "RouteReplace 10.244.2.0/24", "NeighSet 10.244.3.0", "NeighSet 0e:6e:c0:a8:00:02":
			return boom
		}
		return nil
	}
	a := routes.NewApplier(f, nil)
	d := compute(t, opts(routes.VXLAN, nodeA), nodeB, nodeC)
	err := a.Apply(d)
	if !errors.Is(err, boom) {
		t.Fatalf("Apply error = %v, want the injected errors", err)
	}
	for _, item := range []string{
		"route 10.244.2.0/24 via 10.244.2.0 dev nodenet.vx onlink: replace: injected",
		"neighbour 10.244.3.0 lladdr 0e:6e:c0:a8:00:03 dev nodenet.vx permanent: set: injected",
		"fdb 0e:6e:c0:a8:00:02 dev nodenet.vx dst 192.168.0.2 self permanent: set: injected",
	} {
		if !strings.Contains(err.Error(), item) {
			t.Errorf("Apply error does not name %q:\n%v", item, err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 3 {
		t.Errorf("Apply returned %d errors, want 3:\n%v", n, err)
	}
	// The items that did not fail are in place.
	for _, line := range []string{
		"route 10.244.3.0/24 via 10.244.3.0 dev nodenet.vx proto 78 onlink",
		"neigh 10.244.2.0 lladdr 0e:6e:c0:a8:00:02 dev nodenet.vx permanent",
		"fdb 0e:6e:c0:a8:00:03 dev nodenet.vx dst 192.168.0.3 self permanent",
	} {
		if !strings.Contains(f.String(), line+"\n") {
			t.Errorf("missing %q after a partial failure:\n%s", line, f)
		}
	}
	f.Inject = nil
	must(t, a.Apply(d))
	checkDump(t, f, expect(baseDump, vxlanABC))

	// A route list that fails changes no route at all.
	f.Inject = func(op, _ string) error {
		if op == "RouteListFiltered" {
			return boom
		}
		return nil
	}
	err = a.Apply(compute(t, opts(routes.VXLAN, nodeA), nodeB))
	if err == nil || !strings.Contains(err.Error(), "no route changed") {
		t.Errorf("Apply error = %v, want the route list failure", err)
	}
	if !strings.Contains(f.String(), "route 10.244.3.0/24 via 10.244.3.0 dev nodenet.vx") {
		t.Errorf("routes changed although they could not be listed:\n%s", f)
	}
}

func TestApplyDeviceRepair(t *testing.T) {
	f := newFake(t)
	eth0, err := f.LinkByName("eth0")
	must(t, err)
	// A device of our name with the wrong VNI, learning on, a stray address,
	// neighbour and FDB entry: all replaced.
	old := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "nodenet.vx"}, VxlanId: 9, Learning: true,
		VtepDevIndex: eth0.Attrs().Index, SrcAddr: net.ParseIP("192.168.0.1"), Port: 8472}
	must(t, f.LinkAdd(old))
	must(t, f.AddrReplace(old, &netlink.Addr{IPNet: ipnet("10.9.9.9/32")}))
	must(t, f.NeighSet(&netlink.Neigh{LinkIndex: old.Index, IP: net.ParseIP("10.244.9.0"),
		HardwareAddr: net.HardwareAddr{0x0e, 0x6e, 1, 2, 3, 4}, State: netlink.NUD_PERMANENT}))
	a := routes.NewApplier(f, nil)
	d := compute(t, opts(routes.VXLAN, nodeA), nodeB, nodeC)
	must(t, a.Apply(d))
	checkDump(t, f, expect(baseDump, vxlanABC))

	// Only the MTU is off: fixed in place, nothing recreated. A stray
	// permanent neighbour, FDB entry and address go; a kernel-made
	// (reachable) neighbour stays.
	vx, err := f.LinkByName("nodenet.vx")
	must(t, err)
	must(t, f.LinkSetMTU(vx, 1300))
	must(t, f.AddrReplace(vx, &netlink.Addr{IPNet: ipnet("10.9.9.9/32")}))
	must(t, f.NeighSet(&netlink.Neigh{LinkIndex: vx.Attrs().Index, IP: net.ParseIP("10.244.9.0"),
		HardwareAddr: net.HardwareAddr{0x0e, 0x6e, 1, 2, 3, 4}, State: netlink.NUD_PERMANENT}))
	must(t, f.NeighSet(&netlink.Neigh{LinkIndex: vx.Attrs().Index, IP: net.ParseIP("10.244.8.0"),
		HardwareAddr: net.HardwareAddr{0x0e, 0x6e, 1, 2, 3, 5}, State: netlink.NUD_REACHABLE}))
	must(t, f.NeighSet(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		IP: net.ParseIP("192.168.0.9"), HardwareAddr: net.HardwareAddr{0x0e, 0x6e, 1, 2, 3, 4}, State: netlink.NUD_PERMANENT}))
	f.ResetCalls()
	must(t, a.Apply(d))
	calls := f.Calls()
	if calls["LinkDel"] != 0 || calls["LinkSetMTU"] != 1 || calls["AddrDel"] != 1 || calls["NeighDel"] != 2 {
		t.Errorf("calls = %v, want only an MTU fix and three deletions", calls)
	}
	checkDump(t, f, expect(baseDump, vxlanABC, []string{
		"neigh 10.244.8.0 lladdr 0e:6e:01:02:03:05 dev nodenet.vx state 0x2",
	}))
}

func TestApplyNoUnderlay(t *testing.T) {
	f := newFake(t)
	self := node("node-a", "192.168.7.7", "10.244.1.0/24")
	err := routes.NewApplier(f, nil).Apply(compute(t, opts(routes.VXLAN, self), nodeB))
	for _, want := range []string{
		"vxlan device nodenet.vx: no link holds the local address 192.168.7.7",
		"route 10.244.2.0/24 via 10.244.2.0 dev nodenet.vx onlink: device nodenet.vx unavailable",
		"1 neighbour and 1 fdb entries not installed",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Apply error = %v, want it to contain %q", err, want)
		}
	}
	checkDump(t, f, expect(baseDump))
}
