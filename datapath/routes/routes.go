// Package routes carries pod-to-pod traffic between nodes without NAT. Each
// node's pods sit behind a bridge holding the gateway of the node's podCIDR;
// this package makes every other node's podCIDR reachable, with one of two
// backends:
//
//   - host-gw: a route to each peer's podCIDR via the peer's InternalIP. The
//     kernel must find that gateway on a connected subnet, so the nodes need
//     L2 adjacency.
//   - vxlan: one VXLAN device per node and, per peer, an onlink route, a
//     permanent neighbour entry and a permanent FDB entry, so the kernel never
//     has to learn or flood anything (flannel's vxlan layout, with the VTEP
//     MAC derived from the node IP so no annotation exchange is needed).
//
// Compute turns the node list into a Desired value (plain, sorted data with a
// golden-testable String); an Applier converges the kernel to it. See
// README.md for what the package owns and what other components may rely on.
package routes

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Backend selects how pod traffic crosses between nodes.
type Backend string

const (
	HostGW Backend = "host-gw"
	VXLAN  Backend = "vxlan"
)

// Defaults for Options.
const (
	DefaultVXLANName = "nodenet.vx"
	DefaultVNI       = 1
	// DefaultPort is the Linux kernel's historical VXLAN port (also
	// flannel's), not IANA's 4789, so nodenet can replace flannel in place.
	DefaultPort = 8472
)

// maxIfName is IFNAMSIZ (16, <linux/if.h>) minus the terminating NUL.
const maxIfName = 15

// Node is one Kubernetes node as far as routing cares.
type Node struct {
	Name     string
	IP       netip.Addr // InternalIP, the underlay address (IPv4 or IPv6)
	PodCIDRs []netip.Prefix
}

// Options configure Compute. Zero values take the defaults (see Defaults).
type Options struct {
	Backend Backend
	Self    Node
	// VXLANName is the VXLAN device nodenet owns (default "nodenet.vx").
	// It is deleted when the backend is host-gw. Renaming it in config
	// leaves the old device behind: nodenet only knows the current name.
	VXLANName string
	VNI       int // default 1
	Port      int // UDP destination port, default 8472
	// Underlay is the link the VXLAN packets leave by. "" means the link
	// holding Self.IP, found by Apply.
	Underlay string
	// MTU of the VXLAN device. 0 means the underlay link's MTU minus
	// Overhead(VXLAN, Self.IP.Is6()), resolved by Apply.
	MTU int
}

// Defaults fills the zero fields with their defaults.
func (o *Options) Defaults() {
	if o.VXLANName == "" {
		o.VXLANName = DefaultVXLANName
	}
	if o.VNI == 0 {
		o.VNI = DefaultVNI
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
}

// Validate reports every problem at once, each with its field name.
func (o Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if o.Backend != HostGW && o.Backend != VXLAN {
		bad("backend: %q is not %q or %q", o.Backend, HostGW, VXLAN)
	}
	if o.Self.Name == "" {
		bad("self.name: empty")
	}
	if !o.Self.IP.IsValid() || o.Self.IP.IsUnspecified() {
		bad("self.ip: %q is not a usable address", o.Self.IP)
	}
	for i, p := range o.Self.PodCIDRs {
		if !p.IsValid() {
			bad("self.podCIDRs[%d]: invalid prefix", i)
		}
	}
	if err := validIfName(o.VXLANName); err != nil {
		bad("vxlanName: %w", err)
	}
	if o.VNI < 0 || o.VNI > 1<<24-1 {
		bad("vni: %d is outside 1..16777215 (24 bits)", o.VNI)
	}
	if o.Port < 0 || o.Port > 65535 {
		bad("port: %d is outside 1..65535", o.Port)
	}
	if o.Underlay != "" {
		if err := validIfName(o.Underlay); err != nil {
			bad("underlay: %w", err)
		}
	}
	if o.MTU != 0 && (o.MTU < 68 || o.MTU > 65535) {
		bad("mtu: %d is outside 68..65535", o.MTU)
	}
	return errors.Join(errs...)
}

// validIfName mirrors the kernel's dev_valid_name.
func validIfName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > maxIfName:
		return fmt.Errorf("interface name %q is longer than %d bytes (IFNAMSIZ)", name, maxIfName)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is reserved", name)
	case strings.ContainsAny(name, "/: \t\n\v\f\r"):
		return fmt.Errorf("interface name %q contains '/', ':' or white space", name)
	}
	return nil
}

// VTEPMAC is the VXLAN device MAC of the node whose underlay address is ip:
// 0e:6e followed by the last 4 bytes of ip. 0x0e has the locally
// administered bit set and the multicast bit clear, so it can never clash
// with a vendor MAC. Two IPv6 nodes differing only above their last 32 bits
// would collide; Compute detects that and skips the later node.
func VTEPMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.Unmap().As16() // IPv4 lands in the last 4 bytes (::ffff:a.b.c.d)
	return net.HardwareAddr{0x0e, 0x6e, b[12], b[13], b[14], b[15]}
}

// Overhead is the MTU the backend costs: for VXLAN the outer Ethernet (14),
// UDP (8) and VXLAN (8) headers plus the outer IPv4 (20) or IPv6 (40) header.
// Pod interfaces must use the underlay MTU minus this.
func Overhead(b Backend, underlayIsV6 bool) int {
	if b != VXLAN {
		return 0
	}
	if underlayIsV6 {
		return 70
	}
	return 50
}

// Compute builds the desired state of this node from the peer list. Peers
// are taken in name order; a peer that cannot be routed (no IP, no podCIDR,
// family mismatch, a podCIDR overlapping an earlier one, a duplicate IP or
// VTEP MAC) is left out and reported in Desired.Skipped. Self is left out
// of the peers silently. The only error is invalid options.
func Compute(opts Options, peers []Node) (Desired, error) {
	opts.Defaults()
	if err := opts.Validate(); err != nil {
		return Desired{}, fmt.Errorf("routes options: %w", err)
	}
	self := normalize(opts.Self)
	d := Desired{Backend: opts.Backend, DeviceName: opts.VXLANName}
	if opts.Backend == VXLAN {
		dev := &VXLANDevice{
			Name: opts.VXLANName, VNI: opts.VNI, Port: opts.Port,
			Local: self.IP, Underlay: opts.Underlay, MAC: VTEPMAC(self.IP),
			MTU: opts.MTU, Overhead: Overhead(VXLAN, self.IP.Is6()),
		}
		for _, p := range self.PodCIDRs {
			dev.Addrs = append(dev.Addrs, netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
		}
		d.Device = dev
	}

	type owner struct {
		prefix netip.Prefix
		node   string
	}
	claimed := make([]owner, 0, len(self.PodCIDRs))
	for _, p := range self.PodCIDRs {
		claimed = append(claimed, owner{p, self.Name})
	}
	ips := map[netip.Addr]string{self.IP: self.Name}
	macs := map[string]string{VTEPMAC(self.IP).String(): self.Name}
	names := map[string]bool{self.Name: true}

	sorted := slices.Clone(peers)
	slices.SortStableFunc(sorted, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	for _, raw := range sorted {
		if raw.Name == self.Name {
			continue
		}
		p := normalize(raw)
		skip := func(format string, args ...any) {
			d.Skipped = append(d.Skipped, fmt.Sprintf("node %s: ", p.Name)+fmt.Sprintf(format, args...))
		}
		mac := VTEPMAC(p.IP)
		switch {
		case names[p.Name]:
			skip("listed twice")
			continue
		case !p.IP.IsValid() || p.IP.IsUnspecified():
			skip("no InternalIP")
			continue
		case len(p.PodCIDRs) == 0:
			skip("no podCIDRs")
			continue
		case ips[p.IP] != "":
			skip("InternalIP %s is already node %s's", p.IP, ips[p.IP])
			continue
		case opts.Backend == VXLAN && p.IP.Is6() != self.IP.Is6():
			skip("underlay %s is not the same family as this node's VTEP %s", p.IP, self.IP)
			continue
		case opts.Backend == VXLAN && macs[mac.String()] != "":
			skip("VTEP MAC %s collides with node %s's", mac, macs[mac.String()])
			continue
		}
		names[p.Name] = true
		ips[p.IP] = p.Name
		routed := false
	cidrs:
		for _, c := range p.PodCIDRs {
			if !c.IsValid() {
				skip("invalid podCIDR")
				continue
			}
			for _, o := range claimed {
				if o.prefix.Overlaps(c) {
					skip("podCIDR %s overlaps %s of node %s", c, o.prefix, o.node)
					continue cidrs
				}
			}
			switch opts.Backend {
			case HostGW:
				if c.Addr().Is6() != p.IP.Is6() {
					skip("podCIDR %s needs a gateway of its family; InternalIP is %s", c, p.IP)
					continue cidrs
				}
				d.Routes = append(d.Routes, Route{Dst: c, Gw: p.IP})
			case VXLAN:
				// The peer's VXLAN device holds the network address of its
				// podCIDR; an onlink route plus a permanent neighbour entry
				// lets the kernel build the inner frame without ARP/ND.
				gw := c.Addr()
				d.Routes = append(d.Routes, Route{Dst: c, Gw: gw, Dev: opts.VXLANName, OnLink: true})
				d.Neighbors = append(d.Neighbors, Neighbor{IP: gw, MAC: mac, Dev: opts.VXLANName})
			}
			claimed = append(claimed, owner{c, p.Name})
			routed = true
		}
		if routed && opts.Backend == VXLAN {
			macs[mac.String()] = p.Name
			d.FDB = append(d.FDB, FDBEntry{MAC: mac, Dst: p.IP, Dev: opts.VXLANName})
		}
	}
	d.sort()
	return d, nil
}

// normalize unmaps IPv4-in-IPv6 addresses and masks podCIDRs, so
// "10.244.1.7/24" and "10.244.1.0/24" mean the same thing everywhere.
func normalize(n Node) Node {
	out := Node{Name: n.Name, IP: n.IP.Unmap()}
	for _, p := range n.PodCIDRs {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out.PodCIDRs = append(out.PodCIDRs, p.Masked())
	}
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}
