package podnet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/nodenet/nodenet/datapath/netnsutil"
	"github.com/nodenet/nodenet/datapath/netnsutil/nstest"
)

// testBridge is the bridge name used inside the throwaway "node" namespaces.
const testBridge = "nntbr0"

func TestMain(m *testing.M) {
	before := rootOurLinks()
	code := nstest.Main(m, "podnet")
	// The root namespace is read here, never changed: a link of ours in it
	// means some code ran outside its throwaway namespace.
	for _, name := range rootOurLinks() {
		if !slices.Contains(before, name) {
			fmt.Fprintf(os.Stderr, "podnet tests: link %s appeared in the root network namespace\n", name)
			code = 1
		}
	}
	os.Exit(code)
}

func rootOurLinks() []string {
	links, err := netlink.LinkList()
	if err != nil {
		return nil
	}
	var names []string
	for _, l := range links {
		if n := l.Attrs().Name; isHostVethName(n) || n == testBridge {
			names = append(names, n)
		}
	}
	return names
}

// fixture is one throwaway "node" namespace with the pod bridge in it.
type fixture struct {
	t    testing.TB
	node string
	br   Bridge
}

var (
	gw4 = netip.MustParsePrefix("10.244.1.1/24")
	gw6 = netip.MustParsePrefix("fd00:1::1/64")
)

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{t: t, node: nstest.New(t, "node"),
		br: Bridge{Name: testBridge, Gateways: []netip.Prefix{gw4, gw6}, MTU: 1450}}
	f.inNode(func() error { return EnsureBridge(f.br) })
	return f
}

// inNode runs fn as the daemon would: in the node namespace.
func (f *fixture) inNode(fn func() error) {
	f.t.Helper()
	if err := netnsutil.Do(f.node, fn); err != nil {
		f.t.Fatal(err)
	}
}

// attachment creates a pod namespace and describes pod number n in it.
func (f *fixture) attachment(n int, dual bool) Attachment {
	f.t.Helper()
	a := Attachment{
		ContainerID: fmt.Sprintf("container-%d-%s", n, strings.Repeat("ab", 30)),
		NetNS:       nstest.New(f.t, fmt.Sprintf("pod%d", n)),
		IfName:      "eth0",
		Addrs:       []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, 1, byte(n)}), 24)},
		Gateways:    []netip.Addr{gw4.Addr()},
		MTU:         1450,
		Bridge:      testBridge,
	}
	if dual {
		a.Addrs = append(a.Addrs, netip.MustParsePrefix(fmt.Sprintf("fd00:1::%x/64", n)))
		a.Gateways = append(a.Gateways, gw6.Addr())
	}
	return a
}

func (f *fixture) add(a Attachment) Result {
	f.t.Helper()
	var r Result
	f.inNode(func() error {
		var err error
		r, err = Add(a)
		return err
	})
	return r
}

// ipJSON runs `ip -j -n <ns> args...`; iproute2 is the independent witness
// of what the kernel has.
func ipJSON(t testing.TB, nsPath string, args ...string) []map[string]any {
	t.Helper()
	full := append([]string{"-j", "-n", filepath.Base(nsPath)}, args...)
	out, err := exec.Command("ip", full...).Output()
	if err != nil {
		t.Fatalf("ip %v: %v", full, err)
	}
	var v []map[string]any
	if len(strings.TrimSpace(string(out))) == 0 {
		return nil
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("ip %v: %v: %s", full, err, out)
	}
	return v
}

func ip(t testing.TB, nsPath string, args ...string) {
	t.Helper()
	full := append([]string{"-n", filepath.Base(nsPath)}, args...)
	if out, err := exec.Command("ip", full...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", full, err, out)
	}
}

// link returns `ip -d link show dev name` in ns, or nil if there is none.
func link(t testing.TB, nsPath, name string) map[string]any {
	t.Helper()
	for _, l := range ipJSON(t, nsPath, "-d", "link", "show") {
		if l["ifname"] == name {
			return l
		}
	}
	return nil
}

// globalAddrs lists the addresses of dev in ns, IPv6 link-local aside, and
// fails on any still tentative (DAD not done: unusable yet).
func globalAddrs(t testing.TB, nsPath, dev string) []string {
	t.Helper()
	var out []string
	for _, l := range ipJSON(t, nsPath, "addr", "show", "dev", dev) {
		infos, _ := l["addr_info"].([]any)
		for _, i := range infos {
			ai := i.(map[string]any)
			if ai["scope"] == "link" {
				continue
			}
			if ai["tentative"] == true {
				t.Errorf("%s in %s: address %v tentative", dev, nsPath, ai["local"])
			}
			out = append(out, fmt.Sprintf("%v/%v", ai["local"], ai["prefixlen"]))
		}
	}
	slices.Sort(out)
	return out
}

func readSysctl(t testing.TB, nsPath, path string) string {
	t.Helper()
	var v []byte
	if err := netnsutil.Do(nsPath, func() error {
		var err error
		v, err = os.ReadFile(path)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(v))
}

func TestHostVethName(t *testing.T) {
	a := HostVethName("abc", "eth0")
	if a != HostVethName("abc", "eth0") {
		t.Fatal("not deterministic")
	}
	// sha256("abc/eth0") = 7f0b...; compute independently via the shape.
	if len(a) != 13 || !strings.HasPrefix(a, "nn") || !isHostVethName(a) {
		t.Errorf("HostVethName = %q, want nn + 11 hex", a)
	}
	if a == HostVethName("abc", "net1") || a == HostVethName("abd", "eth0") {
		t.Error("different attachments share a name")
	}
	for _, bad := range []string{"nn", "nn0123456789", "nn0123456789ab", "nnABCDEF01234", "xx0123456789a", "nn0123456789g"} {
		if isHostVethName(bad) {
			t.Errorf("isHostVethName(%q) = true", bad)
		}
	}
}

func TestAttachmentValidate(t *testing.T) {
	good := Attachment{ContainerID: "c", NetNS: "/var/run/netns/x", IfName: "eth0", Bridge: "br0", MTU: 1500,
		Addrs:    []netip.Prefix{netip.MustParsePrefix("10.0.0.5/24"), netip.MustParsePrefix("fd00::5/64")},
		Gateways: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}}
	if err := good.validate(); err != nil {
		t.Fatalf("good attachment: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Attachment)
		want string
	}{
		{"no id", func(a *Attachment) { a.ContainerID = "" }, "container ID is empty"},
		{"no netns", func(a *Attachment) { a.NetNS = "" }, "netns path is empty"},
		{"long ifname", func(a *Attachment) { a.IfName = "averyverylongname" }, "longer than 15"},
		{"slash", func(a *Attachment) { a.IfName = "a/b" }, "not a valid interface name"},
		{"no addrs", func(a *Attachment) { a.Addrs, a.Gateways = nil, nil }, "no addresses"},
		{"two v4", func(a *Attachment) { a.Addrs = append(a.Addrs, netip.MustParsePrefix("10.0.0.6/24")) }, "more than one address"},
		{"host prefix", func(a *Attachment) { a.Addrs[0] = netip.MustParsePrefix("10.0.0.5/32") }, "not a host route"},
		{"gw outside", func(a *Attachment) { a.Gateways[0] = netip.MustParseAddr("10.1.0.1") }, "outside the pod range"},
		{"gw is addr", func(a *Attachment) { a.Gateways[0] = netip.MustParseAddr("10.0.0.5") }, "equals the pod address"},
		{"no v6 gw", func(a *Attachment) { a.Gateways = a.Gateways[:1] }, "has no gateway of its family"},
		{"gw no addr", func(a *Attachment) { a.Addrs = a.Addrs[:1] }, "has no pod address of its family"},
		{"small v6 mtu", func(a *Attachment) { a.MTU = 1000 }, "below IPv6's minimum"},
		{"mtu range", func(a *Attachment) { a.MTU = 20 }, "out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := good
			a.Addrs = slices.Clone(good.Addrs)
			a.Gateways = slices.Clone(good.Gateways)
			tc.edit(&a)
			err := a.validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate = %v, want error containing %q", err, tc.want)
			}
			// Add refuses before touching any kernel state.
			if _, err := Add(a); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Add = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestEnsureBridge(t *testing.T) {
	f := newFixture(t)
	l := link(t, f.node, testBridge)
	if l == nil {
		t.Fatal("bridge missing")
	}
	kind := l["linkinfo"].(map[string]any)["info_kind"]
	flags := fmt.Sprint(l["flags"])
	if kind != "bridge" || !strings.Contains(flags, "UP") || l["mtu"] != float64(1450) {
		t.Errorf("bridge: kind %v flags %v mtu %v; want bridge, UP, 1450", kind, flags, l["mtu"])
	}
	want := []string{"10.244.1.1/24", "fd00:1::1/64"}
	if got := globalAddrs(t, f.node, testBridge); !slices.Equal(got, want) {
		t.Errorf("bridge addresses %v, want %v", got, want)
	}
	if v := readSysctl(t, f.node, "/proc/sys/net/ipv6/conf/"+testBridge+"/accept_dad"); v != "0" {
		t.Errorf("bridge accept_dad = %s, want 0", v)
	}

	// Idempotent: nothing changes, not even the ifindex or MAC.
	f.inNode(func() error { return EnsureBridge(f.br) })
	l2 := link(t, f.node, testBridge)
	if l2["ifindex"] != l["ifindex"] || l2["address"] != l["address"] {
		t.Errorf("second EnsureBridge recreated the bridge: %v/%v -> %v/%v", l["ifindex"], l["address"], l2["ifindex"], l2["address"])
	}
	if got := globalAddrs(t, f.node, testBridge); !slices.Equal(got, want) {
		t.Errorf("after second call: bridge addresses %v, want %v", got, want)
	}

	// Replacement: stray and old addresses go, link-local v6 stays, MTU follows.
	ip(t, f.node, "addr", "add", "10.9.9.9/24", "dev", testBridge)
	ip(t, f.node, "addr", "add", "fe80::1234/64", "dev", testBridge)
	f.br = Bridge{Name: testBridge, MTU: 1400, Gateways: []netip.Prefix{
		netip.MustParsePrefix("10.244.1.1/16"), netip.MustParsePrefix("fd00:2::1/64")}}
	f.inNode(func() error { return EnsureBridge(f.br) })
	want = []string{"10.244.1.1/16", "fd00:2::1/64"}
	if got := globalAddrs(t, f.node, testBridge); !slices.Equal(got, want) {
		t.Errorf("after replacement: bridge addresses %v, want %v", got, want)
	}
	if !strings.Contains(fmt.Sprint(ipJSON(t, f.node, "addr", "show", "dev", testBridge)), "fe80::1234") {
		t.Error("link-local fe80::1234 was removed")
	}
	if l := link(t, f.node, testBridge); l["mtu"] != float64(1400) {
		t.Errorf("mtu %v, want 1400", l["mtu"])
	}

	// Deleting a primary IPv4 address takes its subnet's secondaries with
	// it: a wanted gateway that was a secondary must come back.
	ip(t, f.node, "addr", "flush", "dev", testBridge, "scope", "global")
	ip(t, f.node, "addr", "add", "10.244.1.200/16", "dev", testBridge)
	ip(t, f.node, "addr", "add", "10.244.1.1/16", "dev", testBridge)
	f.inNode(func() error { return EnsureBridge(f.br) })
	if got := globalAddrs(t, f.node, testBridge); !slices.Equal(got, want) {
		t.Errorf("after primary removal: bridge addresses %v, want %v", got, want)
	}

	// A link of that name that is not a bridge is an error, not replaced.
	ip(t, f.node, "link", "add", "nntnotbr", "type", "veth", "peer", "name", "nntnotbr1")
	err := netnsutil.Do(f.node, func() error { return EnsureBridge(Bridge{Name: "nntnotbr"}) })
	if err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Errorf("EnsureBridge on a veth = %v, want 'not a bridge'", err)
	}
}
