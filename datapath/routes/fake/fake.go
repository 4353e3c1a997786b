// Package fake is an in-memory routes.Netlink for tests. It keeps links,
// addresses, the routing tables, neighbour and FDB entries, enforces the
// kernel rules the routes package depends on (a replace overwrites the route
// with the same table, destination and metric whatever its protocol; a
// gateway must be on a connected subnet unless onlink; an onlink route needs
// an up device; a delete naming a protocol only matches that protocol;
// deleting a link flushes what is on it), counts calls, and dumps its state
// with String.
package fake

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nodenet/nodenet/datapath/routes"
)

var _ routes.Netlink = (*Netlink)(nil)

// Netlink is the fake. The zero value is not usable; call New.
type Netlink struct {
	// Inject, when set, is called before every method with the method name
	// and a short subject (link name, route destination, neighbour IP or
	// MAC); a non-nil error fails the call without changing state.
	Inject func(op, subject string) error

	mu        sync.Mutex // guards the fields below
	links     map[int]*link
	nextIndex int
	routes    []netlink.Route
	calls     map[string]int
}

type link struct {
	l      netlink.Link // own copy
	addrs  []netlink.Addr
	neighs []netlink.Neigh
	fdb    []netlink.Neigh
}

// New returns an empty fake: no links at all, not even lo.
func New() *Netlink {
	return &Netlink{links: map[int]*link{}, nextIndex: 1, calls: map[string]int{}}
}

var mutating = map[string]bool{
	"LinkAdd": true, "LinkDel": true, "LinkSetUp": true, "LinkSetMTU": true,
	"AddrReplace": true, "AddrDel": true, "RouteReplace": true, "RouteDel": true,
	"NeighSet": true, "NeighDel": true,
}

// Calls returns how many times each method was called since the last
// ResetCalls, failed calls included.
func (f *Netlink) Calls() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.calls {
		out[k] = v
	}
	return out
}

// Mutations counts the calls that can change state.
func (f *Netlink) Mutations() int {
	n := 0
	for op, c := range f.Calls() {
		if mutating[op] {
			n += c
		}
	}
	return n
}

// ResetCalls zeroes the counters.
func (f *Netlink) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = map[string]int{}
}

// enter counts the call and asks Inject; the caller holds f.mu.
func (f *Netlink) enter(op, subject string) error {
	f.calls[op]++
	if f.Inject != nil {
		if err := f.Inject(op, subject); err != nil {
			return err
		}
	}
	return nil
}

func errorf(errno unix.Errno, format string, args ...any) error {
	return fmt.Errorf("fake: "+format+": %w", append(args, errno)...)
}

func (f *Netlink) byName(name string) *link {
	for _, l := range f.links {
		if l.l.Attrs().Name == name {
			return l
		}
	}
	return nil
}

// find resolves a link argument by index, else by name.
func (f *Netlink) find(l netlink.Link) (*link, error) {
	if l == nil {
		return nil, errorf(unix.EINVAL, "nil link")
	}
	if fl := f.links[l.Attrs().Index]; fl != nil {
		return fl, nil
	}
	if fl := f.byName(l.Attrs().Name); fl != nil && l.Attrs().Index == 0 {
		return fl, nil
	}
	return nil, errorf(unix.ENODEV, "link %q (index %d)", l.Attrs().Name, l.Attrs().Index)
}

func cloneLink(l netlink.Link) (netlink.Link, error) {
	var out netlink.Link
	switch v := l.(type) {
	case *netlink.Vxlan:
		c := *v
		c.SrcAddr = slices.Clone(v.SrcAddr)
		out = &c
	case *netlink.Device:
		c := *v
		out = &c
	case *netlink.Dummy:
		c := *v
		out = &c
	case *netlink.Bridge:
		c := *v
		out = &c
	default:
		return nil, errorf(unix.EOPNOTSUPP, "link type %s", l.Type())
	}
	out.Attrs().HardwareAddr = slices.Clone(l.Attrs().HardwareAddr)
	return out, nil
}

func (f *Netlink) LinkByName(name string) (netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("LinkByName", name); err != nil {
		return nil, err
	}
	l := f.byName(name)
	if l == nil {
		return nil, errorf(unix.ENODEV, "link %q not found", name)
	}
	return cloneLink(l.l)
}

func (f *Netlink) LinkByIndex(index int) (netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("LinkByIndex", fmt.Sprint(index)); err != nil {
		return nil, err
	}
	l := f.links[index]
	if l == nil {
		return nil, errorf(unix.ENODEV, "link index %d not found", index)
	}
	return cloneLink(l.l)
}

func (f *Netlink) LinkAdd(l netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := l.Attrs()
	if err := f.enter("LinkAdd", a.Name); err != nil {
		return err
	}
	switch {
	case a.Name == "" || len(a.Name) > 15:
		return errorf(unix.EINVAL, "link name %q", a.Name)
	case f.byName(a.Name) != nil:
		return errorf(unix.EEXIST, "link %q", a.Name)
	}
	if v, ok := l.(*netlink.Vxlan); ok && v.VtepDevIndex != 0 && f.links[v.VtepDevIndex] == nil {
		return errorf(unix.ENODEV, "vxlan %s underlay index %d", a.Name, v.VtepDevIndex)
	}
	c, err := cloneLink(l)
	if err != nil {
		return err
	}
	ca := c.Attrs()
	ca.Index = f.nextIndex
	f.nextIndex++
	if ca.MTU == 0 {
		ca.MTU = 1500
	}
	if ca.HardwareAddr == nil {
		ca.HardwareAddr = net.HardwareAddr{0x02, 0xfa, 0, 0, byte(ca.Index >> 8), byte(ca.Index)}
	}
	ca.Flags &= net.FlagUp
	f.links[ca.Index] = &link{l: c}
	a.Index = ca.Index // like vishvananda/netlink, which fills in the index
	return nil
}

func (f *Netlink) LinkDel(l netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("LinkDel", l.Attrs().Name); err != nil {
		return err
	}
	fl, err := f.find(l)
	if err != nil {
		return err
	}
	index := fl.l.Attrs().Index
	delete(f.links, index)
	// The kernel flushes every route out of a deleted link.
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool { return r.LinkIndex == index })
	return nil
}

func (f *Netlink) LinkSetUp(l netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("LinkSetUp", l.Attrs().Name); err != nil {
		return err
	}
	fl, err := f.find(l)
	if err != nil {
		return err
	}
	fl.l.Attrs().Flags |= net.FlagUp
	return nil
}

func (f *Netlink) LinkSetMTU(l netlink.Link, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("LinkSetMTU", l.Attrs().Name); err != nil {
		return err
	}
	fl, err := f.find(l)
	if err != nil {
		return err
	}
	if mtu < 68 || mtu > 65535 {
		return errorf(unix.EINVAL, "mtu %d", mtu)
	}
	fl.l.Attrs().MTU = mtu
	return nil
}

func familyOf(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func prefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, bits := n.Mask.Size()
	a = a.Unmap()
	if bits == 128 && a.Is4() {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones)
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func (f *Netlink) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	subject := "all"
	if l != nil {
		subject = l.Attrs().Name
	}
	if err := f.enter("AddrList", subject); err != nil {
		return nil, err
	}
	var from []*link
	if l == nil {
		for _, fl := range f.links {
			from = append(from, fl)
		}
	} else {
		fl, err := f.find(l)
		if err != nil {
			return nil, err
		}
		from = []*link{fl}
	}
	var out []netlink.Addr
	for _, fl := range from {
		for _, a := range fl.addrs {
			if family == netlink.FAMILY_ALL || familyOf(a.IP) == family {
				c := a
				c.IPNet = &net.IPNet{IP: slices.Clone(a.IP), Mask: slices.Clone(a.Mask)}
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// connected is the route the kernel adds with an address (proto kernel,
// scope link), or false for host addresses, which get none in main.
func connected(index int, a netlink.Addr) (netlink.Route, bool) {
	p := prefixOf(a.IPNet)
	if p.Bits() == p.Addr().BitLen() {
		return netlink.Route{}, false
	}
	r := netlink.Route{
		LinkIndex: index, Dst: ipNetOf(p.Masked()), Protocol: unix.RTPROT_KERNEL,
		Scope: netlink.SCOPE_LINK, Family: familyOf(a.IP), Table: unix.RT_TABLE_MAIN,
		Type: unix.RTN_UNICAST,
	}
	if p.Addr().Is6() {
		r.Priority = 256
	} else {
		r.Src = slices.Clone(a.IP)
	}
	return r, true
}

func ipNetOf(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (f *Netlink) AddrReplace(l netlink.Link, addr *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("AddrReplace", addr.IPNet.String()); err != nil {
		return err
	}
	fl, err := f.find(l)
	if err != nil {
		return err
	}
	index := fl.l.Attrs().Index
	c := *addr
	c.IPNet = &net.IPNet{IP: slices.Clone(addr.IP), Mask: slices.Clone(addr.Mask)}
	c.LinkIndex = index
	fl.addrs = slices.DeleteFunc(fl.addrs, func(a netlink.Addr) bool { return a.IP.Equal(addr.IP) })
	fl.addrs = append(fl.addrs, c)
	if r, ok := connected(index, c); ok {
		f.routes = slices.DeleteFunc(f.routes, func(x netlink.Route) bool { return sameKey(x, r) })
		f.routes = append(f.routes, r)
	}
	return nil
}

func (f *Netlink) AddrDel(l netlink.Link, addr *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("AddrDel", addr.IPNet.String()); err != nil {
		return err
	}
	fl, err := f.find(l)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(fl.addrs, func(a netlink.Addr) bool { return a.IP.Equal(addr.IP) })
	if i < 0 {
		return errorf(unix.EADDRNOTAVAIL, "address %s on %s", addr.IPNet, fl.l.Attrs().Name)
	}
	if r, ok := connected(fl.l.Attrs().Index, fl.addrs[i]); ok {
		f.routes = slices.DeleteFunc(f.routes, func(x netlink.Route) bool {
			return sameKey(x, r) && x.Protocol == unix.RTPROT_KERNEL && x.LinkIndex == r.LinkIndex
		})
	}
	fl.addrs = slices.Delete(fl.addrs, i, i+1)
	return nil
}
