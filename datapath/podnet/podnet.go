// Package podnet gives a pod its network interface: one Linux bridge per node
// carrying the gateway addresses, and one veth pair per pod interface, host
// end enslaved to the bridge, pod end (IfName) inside the pod's netns with the
// pod addresses and default routes. See README.md for what it creates and
// what other components may rely on.
//
// All functions work on the CURRENT network namespace of the calling thread
// as the node's (the daemon runs there; tests call them inside
// netnsutil.Do). The pod's namespace is reached by a netlink socket opened
// inside it (through netnsutil.Do) and, for sysctls, by netnsutil.Do.
//
// The kernel boundary is the netlink library's Handle; there is no fake: the
// behaviour that matters (veth peers, bridge ports, DAD, connected routes) is
// the kernel's, so the tests run against the real kernel in throwaway
// namespaces, with failure injection at every step of Add.
package podnet

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hostVethPrefix starts every host-side veth name podnet creates.
const hostVethPrefix = "nn"

// hostVethHashLen hex characters of the hash follow the prefix: 2+11 = 13,
// under IFNAMSIZ-1 = 15.
const hostVethHashLen = 11

// Attachment describes one pod interface.
type Attachment struct {
	ContainerID string
	NetNS       string         // path of the pod's netns
	IfName      string         // inside the pod, usually eth0
	Addrs       []netip.Prefix // pod addresses with the range prefix len, e.g. 10.244.1.5/24
	Gateways    []netip.Addr   // one per family, matching Addrs
	MTU         int            // both veth ends; 0 leaves the kernel default (1500)
	Bridge      string
}

// Result is what Add created (or found).
type Result struct {
	HostVeth   string
	HostMAC    net.HardwareAddr
	PodMAC     net.HardwareAddr
	PodIfIndex int // ifindex of IfName inside the pod netns
}

// HostVethName is the host-side veth name for a pod interface:
// "nn" + the first 11 hex characters of sha256(containerID + "/" + ifName).
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return hostVethPrefix + hex.EncodeToString(sum[:])[:hostVethHashLen]
}

// isHostVethName reports whether name has the shape HostVethName produces.
func isHostVethName(name string) bool {
	if len(name) != len(hostVethPrefix)+hostVethHashLen || !strings.HasPrefix(name, hostVethPrefix) {
		return false
	}
	for _, c := range name[len(hostVethPrefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Del removes the pod interface by deleting the host veth derived from
// containerID and ifName; the kernel deletes the peer inside the pod with it.
// A missing veth is success, and so is a missing or empty netNS: Del never
// needs to enter the pod's namespace (netNS only names it in errors).
func Del(containerID, netNS, ifName string) error {
	name := HostVethName(containerID, ifName)
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("podnet: del %s (netns %q): open netlink: %w", name, netNS, err)
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("podnet: del %s (netns %q): %w", name, netNS, err)
	}
	if link.Type() != "veth" {
		return fmt.Errorf("podnet: del %s (netns %q): is a %s, not a veth; not deleting", name, netNS, link.Type())
	}
	// ENODEV here: the pod netns was destroyed meanwhile and took the pair.
	if err := h.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("podnet: del %s (netns %q): %w", name, netNS, err)
	}
	return nil
}

// ListHostVeths returns, sorted, the names of podnet's host veths (shape of
// HostVethName) enslaved to bridge, so the daemon can garbage-collect those no
// pod owns. A missing bridge has no ports: nil, nil.
func ListHostVeths(bridge string) ([]string, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("podnet: list veths on %s: open netlink: %w", bridge, err)
	}
	defer h.Close()
	br, err := h.LinkByName(bridge)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("podnet: list veths on %s: %w", bridge, err)
	}
	links, err := dump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("podnet: list veths on %s: %w", bridge, err)
	}
	var names []string
	for _, l := range links {
		a := l.Attrs()
		if l.Type() == "veth" && a.MasterIndex == br.Attrs().Index && isHostVethName(a.Name) {
			names = append(names, a.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// validate gathers every problem with the attachment.
func (a Attachment) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if a.ContainerID == "" {
		bad("container ID is empty")
	}
	if a.NetNS == "" {
		bad("netns path is empty")
	}
	if err := validIfName(a.IfName); err != nil {
		bad("interface name: %w", err)
	}
	if err := validIfName(a.Bridge); err != nil {
		bad("bridge name: %w", err)
	}
	if a.MTU != 0 && (a.MTU < 68 || a.MTU > 65535) {
		bad("mtu %d out of range 68..65535", a.MTU)
	}
	if len(a.Addrs) == 0 {
		bad("no addresses")
	}
	byFamily := map[bool]netip.Prefix{} // key: is IPv4
	for _, p := range a.Addrs {
		switch {
		case !p.IsValid() || p.Addr().Is4In6() || p.Addr().IsUnspecified():
			bad("address %v is not a valid IPv4 or IPv6 prefix", p)
			continue
		case p.Bits() >= p.Addr().BitLen():
			bad("address %v: prefix must be the pod range, not a host route", p)
			continue
		}
		if _, dup := byFamily[p.Addr().Is4()]; dup {
			bad("address %v: more than one address of its family", p)
			continue
		}
		byFamily[p.Addr().Is4()] = p
		if p.Addr().Is6() && a.MTU != 0 && a.MTU < 1280 {
			bad("mtu %d is below IPv6's minimum 1280", a.MTU)
		}
	}
	seen := map[bool]bool{}
	for _, gw := range a.Gateways {
		if !gw.IsValid() || gw.Is4In6() {
			bad("gateway %v is not a valid IPv4 or IPv6 address", gw)
			continue
		}
		if seen[gw.Is4()] {
			bad("gateway %v: more than one gateway of its family", gw)
			continue
		}
		seen[gw.Is4()] = true
		p, ok := byFamily[gw.Is4()]
		switch {
		case !ok:
			bad("gateway %v has no pod address of its family", gw)
		case !p.Masked().Contains(gw):
			bad("gateway %v is outside the pod range %v", gw, p.Masked())
		case p.Addr() == gw:
			bad("gateway %v equals the pod address", gw)
		}
	}
	for is4, p := range byFamily {
		if !seen[is4] && p.IsValid() {
			bad("address %v has no gateway of its family", p)
		}
	}
	return errors.Join(errs...)
}

func validIfName(name string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case len(name) > unix.IFNAMSIZ-1:
		return fmt.Errorf("%q longer than %d bytes", name, unix.IFNAMSIZ-1)
	case name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n"):
		return fmt.Errorf("%q is not a valid interface name", name)
	}
	return nil
}

// isNotFound: the link (or address, route) is not there.
func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) ||
		errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EADDRNOTAVAIL)
}

// dump retries a netlink dump the kernel reports as interrupted (the table
// changed while it was read), so callers never act on a partial list.
func dump[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range 5 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// addrOf is the netlink address for p. IPv6 addresses carry IFA_F_NODAD:
// even with accept_dad=0 the kernel adds an address as tentative and clears
// that from a workqueue, so for a moment it cannot be bound; with NODAD it
// is never tentative and usable when the netlink call returns.
func addrOf(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func hasV6(ps []netip.Prefix) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Addr().Is6() })
}
