package podnet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nodenet/nodenet/datapath/netnsutil"
	"github.com/nodenet/nodenet/datapath/netnsutil/nstest"
)

// snapshot dumps a namespace's links, addresses and routes (all tables),
// leaving out what the kernel itself adds on IPv6 links (link-local
// addresses and routes, multicast routes): a failed Add must leave the
// snapshot exactly as it was.
func snapshot(t testing.TB, nsPath string) string {
	t.Helper()
	var lines []string
	err := netnsutil.Do(nsPath, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		names := map[int]string{}
		for _, l := range links {
			a := l.Attrs()
			names[a.Index] = a.Name
			lines = append(lines, fmt.Sprintf("link %s %s up=%v mtu=%d mac=%s master=%d",
				a.Name, l.Type(), a.Flags&net.FlagUp != 0, a.MTU, a.HardwareAddr, a.MasterIndex))
		}
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, ad := range addrs {
			if ad.IP.IsLinkLocalUnicast() && ad.IP.To4() == nil {
				continue
			}
			lines = append(lines, fmt.Sprintf("addr %s %s", names[ad.LinkIndex], ad.IPNet))
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst != nil && r.Dst.IP.To4() == nil && (r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast()) {
				continue
			}
			lines = append(lines, fmt.Sprintf("route table=%d dst=%v gw=%v dev=%s", r.Table, r.Dst, r.Gw, names[r.LinkIndex]))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func TestAdd(t *testing.T) {
	for _, dual := range []bool{false, true} {
		t.Run(map[bool]string{false: "ipv4", true: "dualstack"}[dual], func(t *testing.T) {
			f := newFixture(t)
			brMAC := link(t, f.node, testBridge)["address"]
			a := f.attachment(5, dual)
			r := f.add(a)

			if r.HostVeth != HostVethName(a.ContainerID, a.IfName) || len(r.HostMAC) != 6 || len(r.PodMAC) != 6 || r.PodIfIndex <= 0 {
				t.Errorf("Result %+v incomplete", r)
			}
			hv := link(t, f.node, r.HostVeth)
			if hv == nil {
				t.Fatalf("host veth %s missing", r.HostVeth)
			}
			slave, _ := hv["linkinfo"].(map[string]any)["info_slave_data"].(map[string]any)
			if hv["master"] != testBridge || slave["hairpin"] != true || hv["mtu"] != float64(1450) ||
				!strings.Contains(fmt.Sprint(hv["flags"]), "UP") || hv["address"] != r.HostMAC.String() {
				t.Errorf("host veth: master %v hairpin %v mtu %v flags %v mac %v; want %s, true, 1450, UP, %s",
					hv["master"], slave["hairpin"], hv["mtu"], hv["flags"], hv["address"], testBridge, r.HostMAC)
			}
			pl := link(t, a.NetNS, "eth0")
			if pl == nil || pl["mtu"] != float64(1450) || pl["ifindex"] != float64(r.PodIfIndex) ||
				pl["address"] != r.PodMAC.String() || pl["operstate"] != "UP" {
				t.Errorf("pod eth0 = %v; want mtu 1450, index %d, mac %s, operstate UP", pl, r.PodIfIndex, r.PodMAC)
			}
			if lo := link(t, a.NetNS, "lo"); !strings.Contains(fmt.Sprint(lo["flags"]), "UP") {
				t.Errorf("pod lo flags %v, want UP", lo["flags"])
			}
			want := []string{"10.244.1.5/24"}
			if dual {
				want = append(want, "fd00:1::5/64")
				if v := readSysctl(t, a.NetNS, "/proc/sys/net/ipv6/conf/eth0/accept_dad"); v != "0" {
					t.Errorf("pod eth0 accept_dad = %s, want 0", v)
				}
			}
			if got := globalAddrs(t, a.NetNS, "eth0"); !slices.Equal(got, want) {
				t.Errorf("pod addresses %v, want %v", got, want)
			}
			// Routes, as iproute2 sees them: connected route(s) from the
			// kernel, default route(s) from us.
			var routes []string
			for _, fam := range []string{"-4", "-6"} {
				for _, rt := range ipJSON(t, a.NetNS, fam, "route", "show", "dev", "eth0") {
					if d := fmt.Sprint(rt["dst"]); !strings.HasPrefix(d, "fe80:") {
						routes = append(routes, fmt.Sprintf("%v via %v", d, rt["gateway"]))
					}
				}
			}
			wantRoutes := []string{"default via 10.244.1.1", "10.244.1.0/24 via <nil>"}
			if dual {
				wantRoutes = append(wantRoutes, "default via fd00:1::1", "fd00:1::/64 via <nil>")
			}
			slices.Sort(routes)
			slices.Sort(wantRoutes)
			if !slices.Equal(routes, wantRoutes) {
				t.Errorf("pod routes %v, want %v", routes, wantRoutes)
			}
			if got := link(t, f.node, testBridge)["address"]; got != brMAC {
				t.Errorf("bridge MAC changed from %v to %v when a port joined", brMAC, got)
			}
			f.inNode(func() error { return Check(a) })
		})
	}
}

// echo accepts one connection on l and echoes what it reads.
func echo(l net.Listener) {
	c, err := l.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.Copy(c, io.LimitReader(c, 4))
}

// listenIn opens a TCP listener inside nsPath; the socket stays in that
// namespace after Do returns.
func listenIn(t *testing.T, nsPath string, addr netip.Addr) netip.AddrPort {
	t.Helper()
	var l net.Listener
	if err := netnsutil.Do(nsPath, func() error {
		var err error
		l, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go echo(l)
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// dialIn connects from inside nsPath and checks the echo.
func dialIn(nsPath string, to netip.AddrPort) error {
	return netnsutil.Do(nsPath, func() error {
		c, err := net.DialTimeout("tcp", to.String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != "ping" {
			return fmt.Errorf("echo %q", buf)
		}
		return nil
	})
}

func TestPodsReachEachOtherAndGateway(t *testing.T) {
	f := newFixture(t)
	a, b := f.attachment(5, true), f.attachment(6, true)
	f.add(a)
	f.add(b)
	for i := range a.Addrs {
		fam := map[int]string{0: "ipv4", 1: "ipv6"}[i]
		srv := listenIn(t, a.NetNS, a.Addrs[i].Addr())
		if err := dialIn(b.NetNS, srv); err != nil {
			t.Errorf("%s: pod 6 -> pod 5 %v: %v", fam, srv, err)
		}
		gw := listenIn(t, f.node, a.Gateways[i])
		if err := dialIn(a.NetNS, gw); err != nil {
			t.Errorf("%s: pod 5 -> gateway %v: %v", fam, gw, err)
		}
	}
}

func TestAddIdempotent(t *testing.T) {
	f := newFixture(t)
	a := f.attachment(5, true)
	r1 := f.add(a)
	before := snapshot(t, a.NetNS) + snapshot(t, f.node)
	r2 := f.add(a)
	if diff := cmp.Diff(r1, r2); diff != "" {
		t.Errorf("second Add returned another Result (-first +second):\n%s", diff)
	}
	if after := snapshot(t, a.NetNS) + snapshot(t, f.node); after != before {
		t.Errorf("second Add changed state:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Exists but wrong (an address gone): Add recreates it.
	ip(t, a.NetNS, "addr", "del", "10.244.1.5/24", "dev", "eth0")
	r3 := f.add(a)
	if r3.PodIfIndex == r1.PodIfIndex && r3.HostMAC.String() == r1.HostMAC.String() {
		t.Errorf("Add on a broken attachment did not recreate it: %+v", r3)
	}
	f.inNode(func() error { return Check(a) })
	var names []string
	f.inNode(func() (err error) { names, err = ListHostVeths(testBridge); return err })
	if !slices.Equal(names, []string{r3.HostVeth}) {
		t.Errorf("host veths %v, want [%s]", names, r3.HostVeth)
	}
}

func TestAddFailureLeavesNothing(t *testing.T) {
	f := newFixture(t)
	a := f.attachment(5, true)
	addErr := func(a Attachment, inject func(string) error) error {
		return netnsutil.Do(f.node, func() error { _, err := add(a, inject); return err })
	}
	expectClean := func(t *testing.T, a Attachment, node, pod string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("add = %v, want error containing %q", err, want)
		}
		if got := snapshot(t, f.node); got != node {
			t.Errorf("node namespace changed:\nbefore:\n%s\nafter:\n%s", node, got)
		}
		if got := snapshot(t, a.NetNS); got != pod {
			t.Errorf("pod namespace changed:\nbefore:\n%s\nafter:\n%s", pod, got)
		}
	}

	// Every step in turn fails; the undos must take back all earlier ones.
	var steps []string
	if err := addErr(a, func(s string) error { steps = append(steps, s); return nil }); err != nil {
		t.Fatal(err)
	}
	f.inNode(func() error { return Del(a.ContainerID, a.NetNS, a.IfName) })
	if len(steps) < 9 {
		t.Fatalf("only %d steps recorded: %v", len(steps), steps)
	}
	node, pod := snapshot(t, f.node), snapshot(t, a.NetNS)
	injected := errors.New("injected")
	for _, s := range steps {
		t.Run(s, func(t *testing.T) {
			err := addErr(a, func(cur string) error {
				if cur == s {
					return injected
				}
				return nil
			})
			expectClean(t, a, node, pod, err, s+": injected")
		})
	}

	t.Run("bridge missing", func(t *testing.T) {
		b := a
		b.Bridge = "nntnobr"
		expectClean(t, b, node, pod, addErr(b, nil), "bridge nntnobr")
	})
	t.Run("conflicting default route", func(t *testing.T) {
		c := f.attachment(7, false)
		ip(t, c.NetNS, "link", "add", "x0", "type", "veth", "peer", "name", "x1")
		ip(t, c.NetNS, "link", "set", "x0", "up")
		ip(t, c.NetNS, "addr", "add", "192.0.2.2/24", "dev", "x0")
		ip(t, c.NetNS, "route", "add", "default", "via", "192.0.2.1")
		cpod := snapshot(t, c.NetNS)
		expectClean(t, c, node, cpod, addErr(c, nil), "add default route via 10.244.1.1: file exists")
	})
	t.Run("ifname taken in pod", func(t *testing.T) {
		c := f.attachment(8, false)
		ip(t, c.NetNS, "link", "add", "eth0", "type", "veth", "peer", "name", "x1")
		cpod := snapshot(t, c.NetNS)
		expectClean(t, c, node, cpod, addErr(c, nil), "already has an interface named eth0")
	})

	t.Run("host veth name taken by a stranger", func(t *testing.T) {
		c := f.attachment(9, false)
		// Same name as ours, but its peer is in the node, not in the pod.
		ip(t, f.node, "link", "add", HostVethName(c.ContainerID, c.IfName), "type", "veth", "peer", "name", "nntp9")
		cnode, cpod := snapshot(t, f.node), snapshot(t, c.NetNS)
		expectClean(t, c, cnode, cpod, addErr(c, nil), "is taken by a link that is not the peer")
	})

	// After all that, the attachment can still be made.
	f.add(a)
	f.inNode(func() error { return Check(a) })
}

// The daemon serves CNI requests concurrently: each Add switches into its
// own pod namespace on its own locked thread.
func TestAddConcurrent(t *testing.T) {
	f := newFixture(t)
	var as []Attachment
	for n := 10; n < 16; n++ {
		as = append(as, f.attachment(n, true))
	}
	run := func(fn func(Attachment) error) {
		t.Helper()
		errs := make(chan error, len(as))
		for _, a := range as {
			go func() { errs <- netnsutil.Do(f.node, func() error { return fn(a) }) }()
		}
		for range as {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}
	run(func(a Attachment) error { _, err := Add(a); return err })
	run(Check)
	var names []string
	f.inNode(func() (err error) { names, err = ListHostVeths(testBridge); return err })
	if len(names) != len(as) {
		t.Errorf("ListHostVeths = %d veths, want %d", len(names), len(as))
	}
	run(func(a Attachment) error { return Del(a.ContainerID, a.NetNS, a.IfName) })
	f.inNode(func() (err error) { names, err = ListHostVeths(testBridge); return err })
	if len(names) != 0 {
		t.Errorf("after Del: ListHostVeths = %v, want none", names)
	}
}

func TestCheck(t *testing.T) {
	f := newFixture(t)
	a := f.attachment(5, true)
	f.add(a)
	f.inNode(func() error { return Check(a) })

	ip(t, a.NetNS, "route", "del", "default", "via", "10.244.1.1")
	err := netnsutil.Do(f.node, func() error { return Check(a) })
	want := fmt.Sprintf("podnet: check eth0 in %s: no default route via 10.244.1.1", a.NetNS)
	if err == nil || err.Error() != want {
		t.Errorf("Check = %v, want %q", err, want)
	}

	ip(t, f.node, "link", "set", HostVethName(a.ContainerID, "eth0"), "type", "bridge_slave", "hairpin", "off")
	ip(t, a.NetNS, "addr", "add", "10.244.1.99/24", "dev", "eth0")
	err = netnsutil.Do(f.node, func() error { return Check(a) })
	for _, w := range []string{"hairpin off", "unexpected address 10.244.1.99/24", "no default route via 10.244.1.1"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Check = %v, want it to name %q", err, w)
		}
	}

	f.inNode(func() error { return Del(a.ContainerID, a.NetNS, a.IfName) })
	err = netnsutil.Do(f.node, func() error { return Check(a) })
	if err == nil || !strings.Contains(err.Error(), "host veth "+HostVethName(a.ContainerID, "eth0")+" missing") ||
		!strings.Contains(err.Error(), "no interface eth0") {
		t.Errorf("Check after Del = %v, want host veth missing and no interface eth0", err)
	}
}

func TestDel(t *testing.T) {
	f := newFixture(t)
	a := f.attachment(5, true)
	r := f.add(a)
	for i := range 2 { // second time: already gone
		f.inNode(func() error { return Del(a.ContainerID, a.NetNS, a.IfName) })
		if link(t, f.node, r.HostVeth) != nil || link(t, a.NetNS, "eth0") != nil {
			t.Errorf("Del #%d: host veth or pod eth0 still there", i+1)
		}
	}
	f.inNode(func() error { return Del(a.ContainerID, "", a.IfName) })
	f.inNode(func() error { return Del("never-added", "/var/run/netns/nnt-never-existed", "eth0") })

	// The runtime lost the netns: it is gone before DEL comes.
	b := f.attachment(6, false)
	rb := f.add(b)
	nstest.Remove(t, b.NetNS)
	f.inNode(func() error { return Del(b.ContainerID, b.NetNS, b.IfName) })
	f.inNode(func() error { return Del(b.ContainerID, "", b.IfName) })
	// The kernel tears a dead namespace down asynchronously; either it or
	// Del removes the host end.
	deadline := time.Now().Add(10 * time.Second)
	for link(t, f.node, rb.HostVeth) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("host veth %s still there after its netns went", rb.HostVeth)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestListHostVeths(t *testing.T) {
	f := newFixture(t)
	var want []string
	for n := 5; n <= 7; n++ {
		want = append(want, f.add(f.attachment(n, false)).HostVeth)
	}
	slices.Sort(want)
	// Not ours: right shape but not on the bridge; on the bridge, other name.
	ip(t, f.node, "link", "add", "nn0123456789a", "type", "veth", "peer", "name", "nntp0")
	ip(t, f.node, "link", "add", "nntother", "type", "veth", "peer", "name", "nntp1")
	ip(t, f.node, "link", "set", "nntother", "master", testBridge)
	var got []string
	f.inNode(func() (err error) { got, err = ListHostVeths(testBridge); return err })
	if !slices.Equal(got, want) {
		t.Errorf("ListHostVeths = %v, want %v", got, want)
	}
	f.inNode(func() (err error) { got, err = ListHostVeths("nntnobr"); return err })
	if got != nil {
		t.Errorf("ListHostVeths(missing bridge) = %v, want nil", got)
	}
}

// BenchmarkAdd measures an Add+Del cycle of one pod interface; add-ns/op is
// the Add alone.
func BenchmarkAdd(b *testing.B) {
	for _, dual := range []bool{false, true} {
		b.Run(map[bool]string{false: "ipv4", true: "dualstack"}[dual], func(b *testing.B) {
			f := newFixture(b)
			a := f.attachment(5, dual)
			var addTotal time.Duration
			n := 0
			f.inNode(func() error {
				for b.Loop() {
					start := time.Now()
					if _, err := Add(a); err != nil {
						return err
					}
					addTotal += time.Since(start)
					n++
					if err := Del(a.ContainerID, a.NetNS, a.IfName); err != nil {
						return err
					}
				}
				return nil
			})
			if n > 0 {
				b.ReportMetric(float64(addTotal.Nanoseconds())/float64(n), "add-ns/op")
			}
		})
	}
}
