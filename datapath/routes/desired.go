package routes

import (
	"bytes"
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Desired is the complete state this package wants in the kernel, as plain
// sorted data. Apply converges to it; String renders it for golden tests.
type Desired struct {
	Backend Backend
	// DeviceName is the VXLAN device nodenet owns. When Device is nil
	// (host-gw), Apply deletes a device of that name.
	DeviceName string
	Device     *VXLANDevice // nil for host-gw
	Routes     []Route      // main table, all with protocol ProtoNodenet
	Neighbors  []Neighbor   // permanent, on Device
	FDB        []FDBEntry   // permanent, on Device
	// Skipped says, one line per problem, which peers (or which of their
	// podCIDRs) got no route and why. Informational: not an error.
	Skipped []string
}

// Route is one route in the main table.
type Route struct {
	Dst netip.Prefix
	Gw  netip.Addr
	// Dev is the output link; "" lets the kernel pick it from the gateway's
	// connected subnet (host-gw).
	Dev string
	// OnLink tells the kernel the gateway is reachable on Dev even though
	// no connected subnet covers it (RTNH_F_ONLINK).
	OnLink bool
}

// VXLANDevice is the spec of nodenet's VXLAN device. Learning is always off:
// every remote MAC is a permanent FDB entry.
type VXLANDevice struct {
	Name  string
	VNI   int
	Port  int        // UDP destination port
	Local netip.Addr // underlay source address, this node's InternalIP
	// Underlay is the link the device is bound to; "" means the link
	// holding Local, found by Apply.
	Underlay string
	MAC      net.HardwareAddr
	// MTU of the device; 0 means the underlay link's MTU minus Overhead.
	MTU      int
	Overhead int
	// Addrs are the network addresses of this node's podCIDRs as /32 or
	// /128: the onlink gateways peers route this node's podCIDRs via.
	Addrs []netip.Prefix
}

// Neighbor is a permanent ARP/NDP entry on the VXLAN device: a peer's
// gateway address and its VTEP MAC.
type Neighbor struct {
	IP  netip.Addr
	MAC net.HardwareAddr
	Dev string
}

// FDBEntry is a permanent forwarding entry on the VXLAN device: frames for
// MAC are sent to the underlay address Dst.
type FDBEntry struct {
	MAC net.HardwareAddr
	Dst netip.Addr
	Dev string
}

func (r Route) String() string {
	var b strings.Builder
	b.WriteString(r.Dst.String())
	if r.Gw.IsValid() {
		fmt.Fprintf(&b, " via %s", r.Gw)
	}
	if r.Dev != "" {
		fmt.Fprintf(&b, " dev %s", r.Dev)
	}
	if r.OnLink {
		b.WriteString(" onlink")
	}
	return b.String()
}

func (v VXLANDevice) String() string {
	underlay := v.Underlay
	if underlay == "" {
		underlay = "auto"
	}
	mtu := fmt.Sprint(v.MTU)
	if v.MTU == 0 {
		mtu = fmt.Sprintf("auto(underlay-%d)", v.Overhead)
	}
	return fmt.Sprintf("%s vni %d port %d local %s underlay %s mac %s mtu %s",
		v.Name, v.VNI, v.Port, v.Local, underlay, v.MAC, mtu)
}

func (n Neighbor) String() string {
	return fmt.Sprintf("%s lladdr %s dev %s permanent", n.IP, n.MAC, n.Dev)
}

func (f FDBEntry) String() string {
	return fmt.Sprintf("%s dev %s dst %s self permanent", f.MAC, f.Dev, f.Dst)
}

// String dumps d one item per line, in a stable order.
func (d Desired) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "backend %s\n", d.Backend)
	if d.Device == nil {
		fmt.Fprintf(&b, "device %s absent\n", d.DeviceName)
	} else {
		fmt.Fprintf(&b, "device %s\n", d.Device)
		for _, a := range d.Device.Addrs {
			fmt.Fprintf(&b, "addr %s dev %s\n", a, d.Device.Name)
		}
	}
	for _, r := range d.Routes {
		fmt.Fprintf(&b, "route %s\n", r)
	}
	for _, n := range d.Neighbors {
		fmt.Fprintf(&b, "neigh %s\n", n)
	}
	for _, f := range d.FDB {
		fmt.Fprintf(&b, "fdb %s\n", f)
	}
	for _, s := range d.Skipped {
		fmt.Fprintf(&b, "skip %s\n", s)
	}
	return b.String()
}

func (d *Desired) sort() {
	if d.Device != nil {
		slices.SortFunc(d.Device.Addrs, comparePrefix)
	}
	slices.SortFunc(d.Routes, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) })
	slices.SortFunc(d.Neighbors, func(a, b Neighbor) int { return a.IP.Compare(b.IP) })
	slices.SortFunc(d.FDB, func(a, b FDBEntry) int {
		return cmp.Or(bytes.Compare(a.MAC, b.MAC), a.Dst.Compare(b.Dst))
	})
	slices.Sort(d.Skipped)
}
