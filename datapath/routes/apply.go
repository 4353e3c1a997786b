package routes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// levelTrace is the most verbose level: one line per kernel object changed.
const levelTrace = slog.LevelDebug - 4

// Applier converges the kernel to a Desired state. It keeps no state of its
// own between calls: every Apply reads the kernel, so a restarted daemon
// cleans up after its predecessor and a failed Apply is repaired by the
// next one.
type Applier struct {
	nl  Netlink
	log *slog.Logger
	mu  sync.Mutex // serialises Apply: two converges at once would undo each other
}

// NewApplier returns an Applier working through nl. log may be nil.
func NewApplier(nl Netlink, log *slog.Logger) *Applier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Applier{nl: nl, log: log}
}

// Apply adds or replaces what is missing or different and deletes what
// nodenet owns but d does not want: routes with protocol ProtoNodenet in the
// main table, permanent neighbour and FDB entries on the VXLAN device, the
// device's addresses, and the device itself when d has none. Routes with
// any other protocol are never changed or deleted, even when they block a
// desired route. A failed item does not stop the others; the returned error
// joins one error per failed item, and the caller should treat the whole
// sync as failed and retry it in full.
func (a *Applier) Apply(d Desired) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	start := time.Now()
	r := &run{nl: a.nl, log: a.log, d: d}
	var dev netlink.Link
	if d.Device != nil {
		// The device first: recreating it flushes everything on it, so the
		// lists below must be read afterwards.
		dev = r.ensureDevice()
		if dev != nil {
			r.syncAddrs(dev)
			r.syncFDB(dev)
			r.syncNeighbors(dev)
		} else if len(d.Neighbors)+len(d.FDB) > 0 {
			r.fail("vxlan device %s unavailable: %d neighbour and %d fdb entries not installed",
				d.Device.Name, len(d.Neighbors), len(d.FDB))
		}
	}
	r.syncRoutes(dev)
	if d.Device == nil {
		// Last, so that host-gw routes have already replaced the vxlan ones.
		r.deleteDevice()
	}
	a.log.Debug("routes applied", "backend", d.Backend, "elapsed", time.Since(start),
		"routes", len(d.Routes), "neighbors", len(d.Neighbors), "fdb", len(d.FDB),
		"skipped", len(d.Skipped), "changes", r.changes, "errors", len(r.errs))
	return errors.Join(r.errs...)
}

// run is the state of one Apply.
type run struct {
	nl      Netlink
	log     *slog.Logger
	d       Desired
	changes int
	errs    []error
}

func (r *run) fail(format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf(format, args...))
}

func (r *run) changed(msg string, args ...any) {
	r.changes++
	r.log.Log(context.Background(), levelTrace, msg, args...)
}

func (r *run) ensureDevice() netlink.Link {
	spec := r.d.Device
	underlay, err := r.underlay(spec)
	if err != nil {
		r.fail("vxlan device %s: %w", spec.Name, err)
		return nil
	}
	mtu := spec.MTU
	if mtu == 0 {
		mtu = underlay.Attrs().MTU - spec.Overhead
	}
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: spec.Name, MTU: mtu, HardwareAddr: spec.MAC},
		VxlanId:      spec.VNI,
		VtepDevIndex: underlay.Attrs().Index,
		SrcAddr:      net.IP(spec.Local.AsSlice()),
		Port:         spec.Port,
		Learning:     false, // every remote is a permanent FDB entry
	}
	cur, err := r.nl.LinkByName(spec.Name)
	switch {
	case linkNotFound(err):
		cur = nil
	case err != nil:
		r.fail("vxlan device %s: look up: %w", spec.Name, err)
		return nil
	default:
		if why := vxlanMismatch(cur, want); why != "" {
			// The kernel cannot change VNI, port, local address or underlay
			// of a live VXLAN device. Deleting it flushes its routes and
			// entries; they are re-added below.
			if err := r.nl.LinkDel(cur); err != nil {
				r.fail("vxlan device %s: delete to recreate (%s): %w", spec.Name, why, err)
				return nil
			}
			r.changed("deleted vxlan device to recreate it", "name", spec.Name, "why", why)
			cur = nil
		}
	}
	if cur == nil {
		if err := r.nl.LinkAdd(want); err != nil {
			r.fail("vxlan device %s: create: %w", spec.Name, err)
			return nil
		}
		r.changed("created vxlan device", "device", spec.String())
		if cur, err = r.nl.LinkByName(spec.Name); err != nil {
			r.fail("vxlan device %s: look up after create: %w", spec.Name, err)
			return nil
		}
	}
	if cur.Attrs().MTU != mtu {
		if err := r.nl.LinkSetMTU(cur, mtu); err != nil {
			r.fail("vxlan device %s: set mtu %d: %w", spec.Name, mtu, err)
		} else {
			r.changed("set vxlan device mtu", "name", spec.Name, "mtu", mtu)
		}
	}
	if cur.Attrs().Flags&net.FlagUp == 0 {
		if err := r.nl.LinkSetUp(cur); err != nil {
			r.fail("vxlan device %s: set up: %w", spec.Name, err)
		} else {
			r.changed("set vxlan device up", "name", spec.Name)
		}
	}
	return cur
}

// underlay is the link named in the spec, else the link holding Local.
func (r *run) underlay(spec *VXLANDevice) (netlink.Link, error) {
	if spec.Underlay != "" {
		l, err := r.nl.LinkByName(spec.Underlay)
		if err != nil {
			return nil, fmt.Errorf("underlay link %s: %w", spec.Underlay, err)
		}
		return l, nil
	}
	family := netlink.FAMILY_V4
	if spec.Local.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := r.nl.AddrList(nil, family)
	if err != nil {
		return nil, fmt.Errorf("find the underlay link: %w", err)
	}
	for _, a := range addrs {
		if a.IPNet != nil && addrOf(a.IP) == spec.Local {
			l, err := r.nl.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("underlay link %d holding %s: %w", a.LinkIndex, spec.Local, err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("no link holds the local address %s; configure the underlay link", spec.Local)
}

// vxlanMismatch says why cur cannot serve as want without recreating it,
// or "" if it can (MTU and up state are fixed in place).
func vxlanMismatch(cur netlink.Link, want *netlink.Vxlan) string {
	v, ok := cur.(*netlink.Vxlan)
	switch {
	case !ok:
		return fmt.Sprintf("link is of type %s", cur.Type())
	case v.VxlanId != want.VxlanId:
		return fmt.Sprintf("vni %d, want %d", v.VxlanId, want.VxlanId)
	case v.Port != want.Port:
		return fmt.Sprintf("port %d, want %d", v.Port, want.Port)
	case !v.SrcAddr.Equal(want.SrcAddr):
		return fmt.Sprintf("local %s, want %s", v.SrcAddr, want.SrcAddr)
	case v.VtepDevIndex != want.VtepDevIndex:
		return fmt.Sprintf("underlay index %d, want %d", v.VtepDevIndex, want.VtepDevIndex)
	case v.Learning:
		return "learning on"
	case !bytes.Equal(v.HardwareAddr, want.HardwareAddr):
		return fmt.Sprintf("mac %s, want %s", v.HardwareAddr, want.HardwareAddr)
	}
	return ""
}

func (r *run) syncAddrs(dev netlink.Link) {
	name := dev.Attrs().Name
	want := map[netip.Prefix]bool{}
	for _, p := range r.d.Device.Addrs {
		want[p] = true
	}
	cur, err := r.nl.AddrList(dev, netlink.FAMILY_ALL)
	if err != nil {
		r.fail("vxlan device %s: list addresses: %w", name, err)
	}
	have := map[netip.Prefix]bool{}
	for _, a := range cur {
		p, ok := prefixOf(a.IPNet)
		switch {
		case !ok, p.Addr().IsLinkLocalUnicast():
			// The kernel's own IPv6 link-local address (addrgenmode eui64).
		case want[p]:
			have[p] = true
		default:
			if err := r.nl.AddrDel(dev, &a); err != nil {
				r.fail("address %s dev %s: delete: %w", p, name, err)
			} else {
				r.changed("deleted address", "addr", p, "dev", name)
			}
		}
	}
	for _, p := range r.d.Device.Addrs {
		if have[p] {
			continue
		}
		addr := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			// Peers reach this address through permanent neighbour entries,
			// and no one would answer DAD's multicast probe over a device
			// without a flood entry: skip DAD's tentative second.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := r.nl.AddrReplace(dev, addr); err != nil {
			r.fail("address %s dev %s: add: %w", p, name, err)
		} else {
			r.changed("added address", "addr", p, "dev", name)
		}
	}
}

func (r *run) syncNeighbors(dev netlink.Link) {
	name, index := dev.Attrs().Name, dev.Attrs().Index
	want := map[netip.Addr]Neighbor{}
	for _, n := range r.d.Neighbors {
		want[n.IP] = n
	}
	have := map[netip.Addr]bool{}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		cur, err := r.nl.NeighList(index, family)
		if err != nil {
			// Still set the desired entries below (replace is idempotent);
			// stale ones wait for the next sync.
			r.fail("neighbours on %s: list family %d: %w", name, family, err)
			continue
		}
		for _, n := range cur {
			// Only permanent entries are ours; the kernel keeps its own
			// (NOARP for multicast, dynamic ones for addresses it tried).
			if n.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			ip := addrOf(n.IP)
			w, ok := want[ip]
			if ok && bytes.Equal(w.MAC, n.HardwareAddr) {
				have[ip] = true
				continue
			}
			if ok {
				continue // wrong MAC: NeighSet below replaces it
			}
			del := &netlink.Neigh{LinkIndex: index, Family: n.Family, IP: n.IP}
			if err := r.nl.NeighDel(del); err != nil {
				r.fail("neighbour %s dev %s: delete: %w", ip, name, err)
			} else {
				r.changed("deleted neighbour", "ip", ip, "dev", name)
			}
		}
	}
	for _, n := range r.d.Neighbors {
		if have[n.IP] {
			continue
		}
		family := netlink.FAMILY_V4
		if n.IP.Is6() {
			family = netlink.FAMILY_V6
		}
		set := &netlink.Neigh{LinkIndex: index, Family: family, State: netlink.NUD_PERMANENT,
			IP: n.IP.AsSlice(), HardwareAddr: n.MAC}
		if err := r.nl.NeighSet(set); err != nil {
			r.fail("neighbour %s: set: %w", n, err)
		} else {
			r.changed("set neighbour", "neigh", n.String())
		}
	}
}

func (r *run) syncFDB(dev netlink.Link) {
	name, index := dev.Attrs().Name, dev.Attrs().Index
	key := func(mac net.HardwareAddr, dst netip.Addr) string { return mac.String() + " " + dst.String() }
	want := map[string]bool{}
	for _, f := range r.d.FDB {
		want[key(f.MAC, f.Dst)] = true
	}
	have := map[string]bool{}
	cur, err := r.nl.NeighList(index, unix.AF_BRIDGE)
	if err != nil {
		r.fail("fdb on %s: list: %w", name, err)
	}
	// Deletes first: a MAC whose remote moved is deleted, then re-added.
	// Learning is off, so every entry on our device is ours.
	for _, n := range cur {
		k := key(n.HardwareAddr, addrOf(n.IP))
		if want[k] {
			have[k] = true
			continue
		}
		del := &netlink.Neigh{LinkIndex: index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			IP: n.IP, HardwareAddr: n.HardwareAddr}
		if err := r.nl.NeighDel(del); err != nil {
			r.fail("fdb %s dev %s dst %s: delete: %w", n.HardwareAddr, name, n.IP, err)
		} else {
			r.changed("deleted fdb entry", "mac", n.HardwareAddr, "dst", n.IP, "dev", name)
		}
	}
	for _, f := range r.d.FDB {
		if have[key(f.MAC, f.Dst)] {
			continue
		}
		set := &netlink.Neigh{LinkIndex: index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT, IP: f.Dst.AsSlice(), HardwareAddr: f.MAC}
		if err := r.nl.NeighSet(set); err != nil {
			r.fail("fdb %s: set: %w", f, err)
		} else {
			r.changed("set fdb entry", "fdb", f.String())
		}
	}
}

func (r *run) deleteDevice() {
	if r.d.DeviceName == "" {
		return
	}
	l, err := r.nl.LinkByName(r.d.DeviceName)
	switch {
	case linkNotFound(err):
		return
	case err != nil:
		r.fail("vxlan device %s: look up: %w", r.d.DeviceName, err)
		return
	}
	if err := r.nl.LinkDel(l); err != nil {
		r.fail("vxlan device %s: delete: %w", r.d.DeviceName, err)
		return
	}
	r.changed("deleted vxlan device", "name", r.d.DeviceName)
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	ones, bits := n.Mask.Size()
	if !ok || bits == 0 {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	if bits == 128 && a.Is4() {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
