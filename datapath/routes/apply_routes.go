package routes

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeKey is what identifies a route to the kernel within a table: a
// RouteReplace overwrites the route with the same destination and metric,
// whatever its protocol (TOS is always 0 here).
type routeKey struct {
	dst    netip.Prefix
	metric int
}

// defaultMetric is the metric the kernel gives a route added without one:
// 0 for IPv4, IP6_RT_PRIO_USER (1024) for IPv6.
func defaultMetric(dst netip.Prefix) int {
	if dst.Addr().Is6() {
		return 1024
	}
	return 0
}

func keyOf(rt netlink.Route) routeKey {
	dst, ok := prefixOf(rt.Dst)
	if !ok { // default route: the kernel sends no RTA_DST
		dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if rt.Family == netlink.FAMILY_V6 {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
	}
	return routeKey{dst, rt.Priority}
}

func (r *run) syncRoutes(dev netlink.Link) {
	// Only the main table: nodenet installs nothing elsewhere.
	all, err := r.nl.RouteListFiltered(netlink.FAMILY_ALL,
		&netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		// Without the list we cannot see foreign routes a replace would
		// overwrite, so change nothing.
		r.fail("routes: list main table: %w; no route changed", err)
		return
	}
	ours := map[routeKey][]netlink.Route{}
	foreign := map[routeKey]netlink.Route{}
	for _, rt := range all {
		if rt.Protocol == ProtoNodenet {
			ours[keyOf(rt)] = append(ours[keyOf(rt)], rt)
		} else {
			foreign[keyOf(rt)] = rt
		}
	}

	wanted := map[routeKey]bool{}
	for _, w := range r.d.Routes {
		k := routeKey{w.Dst, defaultMetric(w.Dst)}
		wanted[k] = true
		if f, ok := foreign[k]; ok {
			r.fail("route %s: the main table already has a route to %s with protocol %s; not touching it",
				w, w.Dst, f.Protocol)
			continue
		}
		nr := &netlink.Route{
			Dst: ipNet(w.Dst), Gw: w.Gw.AsSlice(), Priority: k.metric,
			Protocol: ProtoNodenet, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST,
		}
		if w.Dev != "" {
			if dev == nil || dev.Attrs().Name != w.Dev {
				r.fail("route %s: device %s unavailable", w, w.Dev)
				continue
			}
			nr.LinkIndex = dev.Attrs().Index
		}
		if w.OnLink {
			nr.Flags = int(netlink.FLAG_ONLINK)
		}
		if slices.ContainsFunc(ours[k], func(cur netlink.Route) bool { return routeMatches(cur, nr) }) {
			continue
		}
		if err := r.nl.RouteReplace(nr); err != nil {
			r.fail("route %s: replace: %w", w, err)
			continue
		}
		r.changed("replaced route", "route", w.String())
	}

	var stale []routeKey
	for k := range ours {
		if !wanted[k] {
			stale = append(stale, k)
		}
	}
	slices.SortFunc(stale, func(a, b routeKey) int {
		return cmp.Or(comparePrefix(a.dst, b.dst), cmp.Compare(a.metric, b.metric))
	})
	for _, k := range stale {
		for _, rt := range ours[k] {
			// Protocol in the request makes the kernel itself refuse to
			// delete a route of any other protocol (fib_table_delete,
			// ip6_route_del match on it when set).
			del := &netlink.Route{
				Family: rt.Family, Dst: rt.Dst, Gw: rt.Gw, LinkIndex: rt.LinkIndex,
				Table: rt.Table, Priority: rt.Priority, Tos: rt.Tos, Type: rt.Type,
				Protocol: ProtoNodenet,
			}
			if err := r.nl.RouteDel(del); err != nil {
				r.fail("route %s metric %d: delete stale: %w", k.dst, k.metric, err)
				continue
			}
			r.changed("deleted stale route", "dst", k.dst, "gw", rt.Gw, "metric", k.metric)
		}
	}
}

// routeMatches reports whether the installed route cur is exactly want,
// comparing what nodenet sets.
func routeMatches(cur netlink.Route, want *netlink.Route) bool {
	onlink := func(flags int) bool { return flags&int(netlink.FLAG_ONLINK) != 0 }
	return cur.Gw.Equal(want.Gw) &&
		(want.LinkIndex == 0 || cur.LinkIndex == want.LinkIndex) &&
		onlink(cur.Flags) == onlink(want.Flags) &&
		(cur.Type == unix.RTN_UNICAST || cur.Type == 0) &&
		cur.Scope == netlink.SCOPE_UNIVERSE &&
		cur.Src == nil && len(cur.MultiPath) == 0 && cur.Encap == nil
}
