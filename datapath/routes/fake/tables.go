package fake

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// normalize fills in what the kernel fills in: table main, unicast type,
// the family, and IPv6's default metric 1024.
func normalize(r netlink.Route) netlink.Route {
	if r.Table == 0 {
		r.Table = unix.RT_TABLE_MAIN
	}
	if r.Type == 0 {
		r.Type = unix.RTN_UNICAST
	}
	if r.Dst != nil {
		r.Family = familyOf(r.Dst.IP)
	} else if r.Gw != nil {
		r.Family = familyOf(r.Gw)
	}
	if r.Family == netlink.FAMILY_V6 && r.Priority == 0 {
		r.Priority = 1024
	}
	return r
}

func dstString(r netlink.Route) string {
	if r.Dst == nil {
		return "default"
	}
	return prefixOf(r.Dst).String()
}

// sameKey: the kernel identifies a route by table, destination, TOS and
// metric.
func sameKey(a, b netlink.Route) bool {
	return a.Table == b.Table && a.Family == b.Family && dstString(a) == dstString(b) &&
		a.Tos == b.Tos && a.Priority == b.Priority
}

func cloneRoute(r netlink.Route) netlink.Route {
	if r.Dst != nil {
		r.Dst = &net.IPNet{IP: slices.Clone(r.Dst.IP), Mask: slices.Clone(r.Dst.Mask)}
	}
	r.Gw = slices.Clone(r.Gw)
	r.Src = slices.Clone(r.Src)
	return r
}

func (f *Netlink) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("RouteListFiltered", fmt.Sprint(family)); err != nil {
		return nil, err
	}
	var out []netlink.Route
	for _, r := range f.routes {
		switch {
		case family != netlink.FAMILY_ALL && r.Family != family:
		case mask&netlink.RT_FILTER_TABLE == 0 && r.Table != unix.RT_TABLE_MAIN:
		case mask&netlink.RT_FILTER_TABLE != 0 && filter.Table != 0 && r.Table != filter.Table:
		case mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != filter.Protocol:
		case mask&netlink.RT_FILTER_OIF != 0 && r.LinkIndex != filter.LinkIndex:
		default:
			out = append(out, cloneRoute(r))
		}
	}
	return out, nil
}

// reachable finds the link of a connected (scope link) route covering gw,
// on link index if it is not 0.
func (f *Netlink) reachable(gw net.IP, index int) int {
	for _, r := range f.routes {
		if r.Table == unix.RT_TABLE_MAIN && r.Scope == netlink.SCOPE_LINK && r.Gw == nil &&
			r.Dst != nil && r.Dst.Contains(gw) && (index == 0 || r.LinkIndex == index) {
			return r.LinkIndex
		}
	}
	return 0
}

func (f *Netlink) RouteReplace(route *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := normalize(cloneRoute(*route))
	if err := f.enter("RouteReplace", dstString(r)); err != nil {
		return err
	}
	onlink := r.Flags&int(netlink.FLAG_ONLINK) != 0
	if r.LinkIndex != 0 {
		l := f.links[r.LinkIndex]
		if l == nil {
			return errorf(unix.ENODEV, "route %s dev index %d", dstString(r), r.LinkIndex)
		}
		if onlink && l.l.Attrs().Flags&net.FlagUp == 0 {
			return errorf(unix.ENETDOWN, "route %s: onlink nexthop device %s is not up", dstString(r), l.l.Attrs().Name)
		}
	}
	switch {
	case r.Gw != nil && onlink && r.LinkIndex == 0:
		return errorf(unix.EINVAL, "route %s: onlink needs a device", dstString(r))
	case r.Gw != nil && !onlink:
		index := f.reachable(r.Gw, r.LinkIndex)
		if index == 0 {
			return errorf(unix.ENETUNREACH, "route %s: nexthop %s has invalid gateway", dstString(r), r.Gw)
		}
		r.LinkIndex = index
	case r.Gw == nil && r.LinkIndex == 0:
		return errorf(unix.EINVAL, "route %s: no nexthop", dstString(r))
	}
	r.Flags &= int(netlink.FLAG_ONLINK)
	if i := slices.IndexFunc(f.routes, func(x netlink.Route) bool { return sameKey(x, r) }); i >= 0 {
		f.routes[i] = r // whatever the old route's protocol: that is the kernel's replace
		return nil
	}
	f.routes = append(f.routes, r)
	return nil
}

func (f *Netlink) RouteDel(route *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	want := cloneRoute(*route)
	if want.Table == 0 {
		want.Table = unix.RT_TABLE_MAIN
	}
	if want.Dst != nil {
		want.Family = familyOf(want.Dst.IP)
	}
	if err := f.enter("RouteDel", dstString(want)); err != nil {
		return err
	}
	i := slices.IndexFunc(f.routes, func(r netlink.Route) bool {
		// Like fib_table_delete/ip6_route_del: every attribute the request
		// sets must match, and only those.
		return r.Table == want.Table && r.Family == want.Family && dstString(r) == dstString(want) &&
			(want.Priority == 0 || r.Priority == want.Priority) &&
			(want.Protocol == 0 || r.Protocol == want.Protocol) &&
			(want.Gw == nil || r.Gw.Equal(want.Gw)) &&
			(want.LinkIndex == 0 || r.LinkIndex == want.LinkIndex) &&
			(want.Type == 0 || r.Type == want.Type)
	})
	if i < 0 {
		return errorf(unix.ESRCH, "route %s not found", dstString(want))
	}
	f.routes = slices.Delete(f.routes, i, i+1)
	return nil
}

func (f *Netlink) NeighList(linkIndex, family int) ([]netlink.Neigh, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("NeighList", fmt.Sprint(linkIndex)); err != nil {
		return nil, err
	}
	var out []netlink.Neigh
	for index, l := range f.links {
		if linkIndex != 0 && index != linkIndex {
			continue
		}
		from := l.neighs
		if family == unix.AF_BRIDGE {
			from = l.fdb
		}
		for _, n := range from {
			if family == netlink.FAMILY_ALL || n.Family == family {
				n.IP = slices.Clone(n.IP)
				n.HardwareAddr = slices.Clone(n.HardwareAddr)
				out = append(out, n)
			}
		}
	}
	return out, nil
}

func neighSubject(n *netlink.Neigh) string {
	if n.Family == unix.AF_BRIDGE {
		return n.HardwareAddr.String()
	}
	return n.IP.String()
}

func (f *Netlink) NeighSet(n *netlink.Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("NeighSet", neighSubject(n)); err != nil {
		return err
	}
	l := f.links[n.LinkIndex]
	if l == nil {
		return errorf(unix.ENODEV, "neighbour %s dev index %d", neighSubject(n), n.LinkIndex)
	}
	c := *n
	c.IP = slices.Clone(n.IP)
	c.HardwareAddr = slices.Clone(n.HardwareAddr)
	if n.Family == unix.AF_BRIDGE {
		if _, ok := l.l.(*netlink.Vxlan); !ok {
			return errorf(unix.EOPNOTSUPP, "fdb on %s, not a vxlan device", l.l.Attrs().Name)
		}
		// NLM_F_REPLACE on a vxlan FDB entry replaces its (first) remote.
		if i := slices.IndexFunc(l.fdb, func(x netlink.Neigh) bool { return bytes.Equal(x.HardwareAddr, n.HardwareAddr) }); i >= 0 {
			l.fdb[i] = c
			return nil
		}
		l.fdb = append(l.fdb, c)
		return nil
	}
	c.Family = familyOf(n.IP)
	l.neighs = slices.DeleteFunc(l.neighs, func(x netlink.Neigh) bool { return x.IP.Equal(n.IP) })
	l.neighs = append(l.neighs, c)
	return nil
}

func (f *Netlink) NeighDel(n *netlink.Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("NeighDel", neighSubject(n)); err != nil {
		return err
	}
	l := f.links[n.LinkIndex]
	if l == nil {
		return errorf(unix.ENODEV, "neighbour %s dev index %d", neighSubject(n), n.LinkIndex)
	}
	before := len(l.neighs) + len(l.fdb)
	if n.Family == unix.AF_BRIDGE {
		l.fdb = slices.DeleteFunc(l.fdb, func(x netlink.Neigh) bool {
			return bytes.Equal(x.HardwareAddr, n.HardwareAddr) && (n.IP == nil || x.IP.Equal(n.IP))
		})
	} else {
		l.neighs = slices.DeleteFunc(l.neighs, func(x netlink.Neigh) bool { return x.IP.Equal(n.IP) })
	}
	if len(l.neighs)+len(l.fdb) == before {
		return errorf(unix.ENOENT, "neighbour %s not found", neighSubject(n))
	}
	return nil
}

// String dumps the state one object per line, sorted, with link names
// rather than indexes so that a recreated device dumps the same.
func (f *Netlink) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := func(index int) string {
		if l := f.links[index]; l != nil {
			return l.l.Attrs().Name
		}
		return fmt.Sprintf("if%d", index)
	}
	var links, addrs, routes, neighs, fdb []string
	for _, l := range f.links {
		a := l.l.Attrs()
		up := "down"
		if a.Flags&net.FlagUp != 0 {
			up = "up"
		}
		line := fmt.Sprintf("link %s %s mtu %d %s", a.Name, l.l.Type(), a.MTU, up)
		if v, ok := l.l.(*netlink.Vxlan); ok {
			line += fmt.Sprintf(" vni %d port %d local %s dev %s mac %s", v.VxlanId, v.Port, v.SrcAddr, name(v.VtepDevIndex), a.HardwareAddr)
			if v.Learning {
				line += " learning"
			}
		}
		links = append(links, line)
		for _, ad := range l.addrs {
			line := fmt.Sprintf("addr %s dev %s", prefixOf(ad.IPNet), a.Name)
			if ad.Flags&unix.IFA_F_NODAD != 0 {
				line += " nodad"
			}
			addrs = append(addrs, line)
		}
		for _, n := range l.neighs {
			neighs = append(neighs, fmt.Sprintf("neigh %s lladdr %s dev %s %s", addrOf(n.IP), n.HardwareAddr, a.Name, state(n)))
		}
		for _, n := range l.fdb {
			fdb = append(fdb, fmt.Sprintf("fdb %s dev %s dst %s %s", n.HardwareAddr, a.Name, addrOf(n.IP), state(n)))
		}
	}
	for _, r := range f.routes {
		var b strings.Builder
		fmt.Fprintf(&b, "route %s", dstString(r))
		if r.Gw != nil {
			fmt.Fprintf(&b, " via %s", addrOf(r.Gw))
		}
		fmt.Fprintf(&b, " dev %s proto %d", name(r.LinkIndex), r.Protocol)
		if r.Scope == netlink.SCOPE_LINK {
			b.WriteString(" scope link")
		}
		if r.Priority != 0 {
			fmt.Fprintf(&b, " metric %d", r.Priority)
		}
		if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
			b.WriteString(" onlink")
		}
		if r.Table != unix.RT_TABLE_MAIN {
			fmt.Fprintf(&b, " table %d", r.Table)
		}
		routes = append(routes, b.String())
	}
	var out strings.Builder
	for _, group := range [][]string{links, addrs, routes, neighs, fdb} {
		slices.Sort(group)
		for _, line := range group {
			out.WriteString(line)
			out.WriteByte('\n')
		}
	}
	return out.String()
}

// state renders a neighbour's flags and state like iproute2 for the values
// the routes package uses, numerically otherwise.
func state(n netlink.Neigh) string {
	var words []string
	flags, st := n.Flags, n.State
	if flags&netlink.NTF_SELF != 0 {
		words = append(words, "self")
		flags &^= netlink.NTF_SELF
	}
	if flags != 0 {
		words = append(words, fmt.Sprintf("flags %#x", flags))
	}
	if st == netlink.NUD_PERMANENT {
		words = append(words, "permanent")
	} else {
		words = append(words, fmt.Sprintf("state %#x", st))
	}
	return strings.Join(words, " ")
}
