package routes

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ProtoNodenet is the rtm_protocol of every route nodenet installs; it is
// how Apply tells its own routes from everyone else's ("ip route show proto
// 78"). The kernel interprets only values below RTPROT_STATIC (4); above that
// the number is a free label. 78 (0x4e, 'N') is not among the kernel's
// RTPROT_* values (<linux/rtnetlink.h>: 8-18, 42, 99, 186-189, 192), not in
// iproute2's rt_protos, and not what other Kubernetes datapaths use (Calico
// felix: 80, BIRD: 12).
const ProtoNodenet netlink.RouteProtocol = 0x4e

// Netlink is the kernel boundary of this package, shaped like (and
// satisfied by) vishvananda/netlink's *Handle. FDB entries are Neigh values
// with Family AF_BRIDGE on the VXLAN device.
//
// LinkByName reports a missing link with an error that is a
// netlink.LinkNotFoundError or wraps unix.ENODEV.
type Netlink interface {
	LinkByName(name string) (netlink.Link, error)
	LinkByIndex(index int) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error

	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrReplace(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error

	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error

	NeighList(linkIndex, family int) ([]netlink.Neigh, error)
	NeighSet(neigh *netlink.Neigh) error
	NeighDel(neigh *netlink.Neigh) error
}

var (
	_ Netlink = (*netlink.Handle)(nil)
	_ Netlink = realNetlink{}
)

// RealNetlink is the kernel, through vishvananda/netlink's package-level
// functions. Each call opens its socket in the network namespace of the
// calling OS thread, so a caller that has locked its thread into another
// namespace operates there.
func RealNetlink() Netlink { return realNetlink{} }

type realNetlink struct{}

// dumpRetries bounds retries of a dump the kernel marked inconsistent
// (NLM_F_DUMP_INTR: the table changed while it was being read).
const dumpRetries = 5

func retryDump[T any](what string, f func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		out, err := f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
		if i == dumpRetries {
			return nil, fmt.Errorf("%s: interrupted %d times: %w", what, i+1, err)
		}
	}
}

func (realNetlink) LinkByName(name string) (netlink.Link, error) { return netlink.LinkByName(name) }
func (realNetlink) LinkByIndex(index int) (netlink.Link, error)  { return netlink.LinkByIndex(index) }
func (realNetlink) LinkAdd(link netlink.Link) error              { return netlink.LinkAdd(link) }
func (realNetlink) LinkDel(link netlink.Link) error              { return netlink.LinkDel(link) }
func (realNetlink) LinkSetUp(link netlink.Link) error            { return netlink.LinkSetUp(link) }
func (realNetlink) LinkSetMTU(link netlink.Link, mtu int) error {
	return netlink.LinkSetMTU(link, mtu)
}

func (realNetlink) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	return retryDump("list addresses", func() ([]netlink.Addr, error) { return netlink.AddrList(link, family) })
}
func (realNetlink) AddrReplace(link netlink.Link, addr *netlink.Addr) error {
	return netlink.AddrReplace(link, addr)
}
func (realNetlink) AddrDel(link netlink.Link, addr *netlink.Addr) error {
	return netlink.AddrDel(link, addr)
}

func (realNetlink) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return retryDump("list routes", func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(family, filter, mask)
	})
}
func (realNetlink) RouteReplace(route *netlink.Route) error { return netlink.RouteReplace(route) }
func (realNetlink) RouteDel(route *netlink.Route) error     { return netlink.RouteDel(route) }

func (realNetlink) NeighList(linkIndex, family int) ([]netlink.Neigh, error) {
	return retryDump("list neighbours", func() ([]netlink.Neigh, error) { return netlink.NeighList(linkIndex, family) })
}
func (realNetlink) NeighSet(neigh *netlink.Neigh) error { return netlink.NeighSet(neigh) }
func (realNetlink) NeighDel(neigh *netlink.Neigh) error { return netlink.NeighDel(neigh) }

// linkNotFound reports whether err from LinkByName means "no such link".
func linkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
