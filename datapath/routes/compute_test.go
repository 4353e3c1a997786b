package routes_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodenet/nodenet/datapath/routes"
)

func node(name, ip string, cidrs ...string) routes.Node {
	n := routes.Node{Name: name}
	if ip != "" {
		n.IP = netip.MustParseAddr(ip)
	}
	for _, c := range cidrs {
		n.PodCIDRs = append(n.PodCIDRs, netip.MustParsePrefix(c))
	}
	return n
}

var (
	nodeA   = node("node-a", "192.168.0.1", "10.244.1.0/24")
	nodeB   = node("node-b", "192.168.0.2", "10.244.2.0/24")
	nodeC   = node("node-c", "192.168.0.3", "10.244.3.0/24")
	nodeADS = node("node-a", "192.168.0.1", "10.244.1.0/24", "fd00:10:244:1::/64")
	nodeBDS = node("node-b", "192.168.0.2", "10.244.2.0/24", "fd00:10:244:2::/64")
	nodeCDS = node("node-c", "192.168.0.3", "fd00:10:244:3::/64", "10.244.3.0/24")
)

func opts(b routes.Backend, self routes.Node) routes.Options {
	return routes.Options{Backend: b, Self: self}
}

// golden joins lines with a trailing newline, like Desired.String.
func golden(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

func TestComputeGolden(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  routes.Options
		peers []routes.Node
		want  string
	}{{
		name:  "1 node",
		opts:  opts(routes.HostGW, nodeA),
		peers: []routes.Node{nodeA},
		want:  golden("backend host-gw", "device nodenet.vx absent"),
	}, {
		name:  "1 node vxlan",
		opts:  opts(routes.VXLAN, nodeA),
		peers: []routes.Node{nodeA},
		want: golden("backend vxlan",
			"device nodenet.vx vni 1 port 8472 local 192.168.0.1 underlay auto mac 0e:6e:c0:a8:00:01 mtu auto(underlay-50)",
			"addr 10.244.1.0/32 dev nodenet.vx"),
	}, {
		name:  "3 nodes host-gw",
		opts:  opts(routes.HostGW, nodeA),
		peers: []routes.Node{nodeC, nodeA, nodeB},
		want: golden("backend host-gw", "device nodenet.vx absent",
			"route 10.244.2.0/24 via 192.168.0.2",
			"route 10.244.3.0/24 via 192.168.0.3"),
	}, {
		name:  "3 nodes vxlan",
		opts:  routes.Options{Backend: routes.VXLAN, Self: nodeA, Underlay: "eth0", MTU: 1400, VNI: 7, Port: 4789},
		peers: []routes.Node{nodeC, nodeA, nodeB},
		want: golden("backend vxlan",
			"device nodenet.vx vni 7 port 4789 local 192.168.0.1 underlay eth0 mac 0e:6e:c0:a8:00:01 mtu 1400",
			"addr 10.244.1.0/32 dev nodenet.vx",
			"route 10.244.2.0/24 via 10.244.2.0 dev nodenet.vx onlink",
			"route 10.244.3.0/24 via 10.244.3.0 dev nodenet.vx onlink",
			"neigh 10.244.2.0 lladdr 0e:6e:c0:a8:00:02 dev nodenet.vx permanent",
			"neigh 10.244.3.0 lladdr 0e:6e:c0:a8:00:03 dev nodenet.vx permanent",
			"fdb 0e:6e:c0:a8:00:02 dev nodenet.vx dst 192.168.0.2 self permanent",
			"fdb 0e:6e:c0:a8:00:03 dev nodenet.vx dst 192.168.0.3 self permanent"),
	}, {
		name:  "dual-stack host-gw over an IPv4 underlay",
		opts:  opts(routes.HostGW, nodeADS),
		peers: []routes.Node{nodeADS, nodeBDS, nodeCDS},
		want: golden("backend host-gw", "device nodenet.vx absent",
			"route 10.244.2.0/24 via 192.168.0.2",
			"route 10.244.3.0/24 via 192.168.0.3",
			"skip node node-b: podCIDR fd00:10:244:2::/64 needs a gateway of its family; InternalIP is 192.168.0.2",
			"skip node node-c: podCIDR fd00:10:244:3::/64 needs a gateway of its family; InternalIP is 192.168.0.3"),
	}, {
		name:  "dual-stack vxlan over an IPv4 underlay",
		opts:  routes.Options{Backend: routes.VXLAN, Self: nodeADS, VXLANName: "vx-pods"},
		peers: []routes.Node{nodeADS, nodeBDS, nodeCDS},
		want: golden("backend vxlan",
			"device vx-pods vni 1 port 8472 local 192.168.0.1 underlay auto mac 0e:6e:c0:a8:00:01 mtu auto(underlay-50)",
			"addr 10.244.1.0/32 dev vx-pods",
			"addr fd00:10:244:1::/128 dev vx-pods",
			"route 10.244.2.0/24 via 10.244.2.0 dev vx-pods onlink",
			"route 10.244.3.0/24 via 10.244.3.0 dev vx-pods onlink",
			"route fd00:10:244:2::/64 via fd00:10:244:2:: dev vx-pods onlink",
			"route fd00:10:244:3::/64 via fd00:10:244:3:: dev vx-pods onlink",
			"neigh 10.244.2.0 lladdr 0e:6e:c0:a8:00:02 dev vx-pods permanent",
			"neigh 10.244.3.0 lladdr 0e:6e:c0:a8:00:03 dev vx-pods permanent",
			"neigh fd00:10:244:2:: lladdr 0e:6e:c0:a8:00:02 dev vx-pods permanent",
			"neigh fd00:10:244:3:: lladdr 0e:6e:c0:a8:00:03 dev vx-pods permanent",
			"fdb 0e:6e:c0:a8:00:02 dev vx-pods dst 192.168.0.2 self permanent",
			"fdb 0e:6e:c0:a8:00:03 dev vx-pods dst 192.168.0.3 self permanent"),
	}, {
		name: "IPv6 underlay host-gw",
		opts: opts(routes.HostGW, node("a", "2001:db8::1", "fd00:1::/64")),
		peers: []routes.Node{
			node("b", "2001:db8::2", "fd00:2::/64", "10.244.2.0/24"),
			node("c", "::ffff:192.168.0.3", "10.244.3.0/24"), // a v4-mapped InternalIP is IPv4
		},
		want: golden("backend host-gw", "device nodenet.vx absent",
			"route 10.244.3.0/24 via 192.168.0.3",
			"route fd00:2::/64 via 2001:db8::2",
			"skip node b: podCIDR 10.244.2.0/24 needs a gateway of its family; InternalIP is 2001:db8::2"),
	}, {
		name: "IPv6 underlay vxlan",
		opts: opts(routes.VXLAN, node("a", "2001:db8::1", "fd00:1::/64")),
		peers: []routes.Node{
			node("b", "2001:db8::2", "fd00:2::/64"),
			node("c", "192.168.0.3", "fd00:3::/64"),
			node("d", "2001:db8:ffff::2", "fd00:4::/64"), // same last 32 bits as b
		},
		want: golden("backend vxlan",
			"device nodenet.vx vni 1 port 8472 local 2001:db8::1 underlay auto mac 0e:6e:00:00:00:01 mtu auto(underlay-70)",
			"addr fd00:1::/128 dev nodenet.vx",
			"route fd00:2::/64 via fd00:2:: dev nodenet.vx onlink",
			"neigh fd00:2:: lladdr 0e:6e:00:00:00:02 dev nodenet.vx permanent",
			"fdb 0e:6e:00:00:00:02 dev nodenet.vx dst 2001:db8::2 self permanent",
			"skip node c: underlay 192.168.0.3 is not the same family as this node's VTEP 2001:db8::1",
			"skip node d: VTEP MAC 0e:6e:00:00:00:02 collides with node b's"),
	}, {
		name: "peers without podCIDR or IP",
		opts: opts(routes.VXLAN, nodeA),
		peers: []routes.Node{
			nodeB,
			node("no-cidr", "192.168.0.4"),
			node("no-ip", "", "10.244.5.0/24"),
			node("unspecified-ip", "0.0.0.0", "10.244.6.0/24"),
		},
		want: golden("backend vxlan",
			"device nodenet.vx vni 1 port 8472 local 192.168.0.1 underlay auto mac 0e:6e:c0:a8:00:01 mtu auto(underlay-50)",
			"addr 10.244.1.0/32 dev nodenet.vx",
			"route 10.244.2.0/24 via 10.244.2.0 dev nodenet.vx onlink",
			"neigh 10.244.2.0 lladdr 0e:6e:c0:a8:00:02 dev nodenet.vx permanent",
			"fdb 0e:6e:c0:a8:00:02 dev nodenet.vx dst 192.168.0.2 self permanent",
			"skip node no-cidr: no podCIDRs",
			"skip node no-ip: no InternalIP",
			"skip node unspecified-ip: no InternalIP"),
	}, {
		name: "self in list, and conflicting peers",
		opts: opts(routes.HostGW, nodeA),
		peers: []routes.Node{
			node("node-a", "192.168.0.99", "10.244.99.0/24"), // self by name: ignored whatever it says
			nodeB,
			node("node-b", "192.168.0.22", "10.244.22.0/24"),
			node("impostor", "192.168.0.1", "10.244.7.0/24"),
			node("overlap-self", "192.168.0.8", "10.244.1.128/25"),
			node("overlap-b", "192.168.0.9", "10.244.0.0/16", "10.245.0.0/16"),
			node("unmasked", "192.168.0.10", "10.246.1.77/24"),
		},
		want: golden("backend host-gw", "device nodenet.vx absent",
			"route 10.244.2.0/24 via 192.168.0.2",
			"route 10.245.0.0/16 via 192.168.0.9",
			"route 10.246.1.0/24 via 192.168.0.10",
			"skip node impostor: InternalIP 192.168.0.1 is already node node-a's",
			"skip node node-b: listed twice",
			"skip node overlap-b: podCIDR 10.244.0.0/16 overlaps 10.244.1.0/24 of node node-a",
			"skip node overlap-self: podCIDR 10.244.1.128/25 overlaps 10.244.1.0/24 of node node-a"),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := routes.Compute(tc.opts, tc.peers)
			if err != nil {
				t.Fatalf("Compute: %v", err)
			}
			if diff := cmp.Diff(tc.want, d.String()); diff != "" {
				t.Errorf("Compute dump (-want +got):\n%s", diff)
			}
		})
	}
}

func TestComputeOptionErrors(t *testing.T) {
	_, err := routes.Compute(routes.Options{
		Backend:   "ipip",
		Self:      routes.Node{PodCIDRs: []netip.Prefix{{}}},
		VXLANName: "nodenet.vxlan.too-long",
		VNI:       1 << 24,
		Port:      70000,
		Underlay:  "eth 0",
		MTU:       20,
	}, nil)
	if err == nil {
		t.Fatal("Compute accepted invalid options")
	}
	for _, key := range []string{"backend:", "self.name:", "self.ip:", "self.podCIDRs[0]:",
		"vxlanName:", "vni:", "port:", "underlay:", "mtu:"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not mention %s:\n%v", key, err)
		}
	}
}

func TestVTEPMAC(t *testing.T) {
	for ip, want := range map[string]string{
		"10.0.0.1":            "0e:6e:0a:00:00:01",
		"::ffff:10.0.0.1":     "0e:6e:0a:00:00:01",
		"2001:db8::a:b0c:d0e": "0e:6e:0b:0c:0d:0e",
	} {
		mac := routes.VTEPMAC(netip.MustParseAddr(ip))
		if mac.String() != want {
			t.Errorf("VTEPMAC(%s) = %s, want %s", ip, mac, want)
		}
		if mac[0]&0x01 != 0 || mac[0]&0x02 == 0 {
			t.Errorf("VTEPMAC(%s) = %s: not a locally administered unicast MAC", ip, mac)
		}
	}
}

func TestOverhead(t *testing.T) {
	for _, tc := range []struct {
		b    routes.Backend
		v6   bool
		want int
	}{{routes.HostGW, false, 0}, {routes.HostGW, true, 0}, {routes.VXLAN, false, 50}, {routes.VXLAN, true, 70}} {
		if got := routes.Overhead(tc.b, tc.v6); got != tc.want {
			t.Errorf("Overhead(%s, v6=%v) = %d, want %d", tc.b, tc.v6, got, tc.want)
		}
	}
}
