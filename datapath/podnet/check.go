package podnet

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Check verifies the attachment: the host veth exists, is a veth, enslaved
// to the bridge, up, hairpin on, with the MTU; IfName in the pod is its peer,
// up, with the MTU and exactly the expected addresses (IPv6 link-local
// aside); lo is up; a default route via each gateway exists. The error names
// every missing piece, e.g.
// "podnet: check eth0 in /var/run/netns/x: no default route via 10.244.1.1".
func Check(a Attachment) error {
	hostName := HostVethName(a.ContainerID, a.IfName)
	fail := func(what string) error {
		return fmt.Errorf("podnet: check %s in %s: %s", a.IfName, a.NetNS, what)
	}
	if err := a.validate(); err != nil {
		return fail(err.Error())
	}
	host, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fail("open netlink: " + err.Error())
	}
	defer host.Close()
	pod, err := openPod(a.NetNS)
	if err != nil {
		return fail(err.Error())
	}
	defer pod.close()
	br, err := host.LinkByName(a.Bridge)
	if err != nil {
		return fail(fmt.Sprintf("bridge %s: %v", a.Bridge, err))
	}
	st, err := observe(host, pod, a, hostName, br)
	if err != nil {
		return fail(err.Error())
	}
	if len(st.problems) > 0 {
		return fail(strings.Join(st.problems, "; "))
	}
	return nil
}

// state is what observe found of one attachment.
type state struct {
	hostName string
	host     netlink.Link // nil if missing
	pod      netlink.Link // nil if missing
	paired   bool         // pod is host's veth peer
	problems []string     // differences from the attachment; empty: all right
}

func (s *state) result() Result {
	return Result{
		HostVeth:   s.hostName,
		HostMAC:    s.host.Attrs().HardwareAddr,
		PodMAC:     s.pod.Attrs().HardwareAddr,
		PodIfIndex: s.pod.Attrs().Index,
	}
}

// observe reads the attachment from the kernel and lists what differs from
// a. err is for failures to read, not for differences.
func observe(host *netlink.Handle, pod *podNS, a Attachment, hostName string, br netlink.Link) (*state, error) {
	st := &state{hostName: hostName}
	miss := func(format string, args ...any) { st.problems = append(st.problems, fmt.Sprintf(format, args...)) }

	hl, err := host.LinkByName(hostName)
	switch {
	case isNotFound(err):
		miss("host veth %s missing", hostName)
	case err != nil:
		return nil, fmt.Errorf("look up host veth %s: %w", hostName, err)
	case hl.Type() != "veth":
		miss("host link %s is a %s, not a veth", hostName, hl.Type())
	default:
		st.host = hl
		ha := hl.Attrs()
		if ha.MasterIndex != br.Attrs().Index {
			miss("host veth %s not enslaved to bridge %s", hostName, br.Attrs().Name)
		} else {
			pi, err := dump(func() (netlink.Protinfo, error) { return host.LinkGetProtinfo(hl) })
			if err != nil {
				return nil, fmt.Errorf("read bridge port flags of %s: %w", hostName, err)
			}
			if !pi.Hairpin {
				miss("host veth %s hairpin off", hostName)
			}
		}
		if ha.Flags&net.FlagUp == 0 {
			miss("host veth %s down", hostName)
		}
		if a.MTU != 0 && ha.MTU != a.MTU {
			miss("host veth %s mtu %d, want %d", hostName, ha.MTU, a.MTU)
		}
	}

	pl, err := pod.h.LinkByName(a.IfName)
	switch {
	case isNotFound(err):
		miss("no interface %s", a.IfName)
		return st, nil
	case err != nil:
		return nil, fmt.Errorf("look up %s in pod: %w", a.IfName, err)
	}
	st.pod = pl
	pa := pl.Attrs()
	// A veth reports its peer's ifindex as its link (IFLA_LINK); indexes are
	// per namespace, so both directions must match.
	st.paired = st.host != nil && pl.Type() == "veth" &&
		pa.ParentIndex == st.host.Attrs().Index && st.host.Attrs().ParentIndex == pa.Index
	if !st.paired {
		miss("%s is not the veth peer of host veth %s", a.IfName, hostName)
	}
	if pa.Flags&net.FlagUp == 0 {
		miss("%s down", a.IfName)
	}
	if a.MTU != 0 && pa.MTU != a.MTU {
		miss("%s mtu %d, want %d", a.IfName, pa.MTU, a.MTU)
	}
	if lo, err := pod.h.LinkByName("lo"); err != nil {
		return nil, fmt.Errorf("look up lo in pod: %w", err)
	} else if lo.Attrs().Flags&net.FlagUp == 0 {
		miss("lo down")
	}

	addrs, err := dump(func() ([]netlink.Addr, error) { return pod.h.AddrList(pl, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", a.IfName, err)
	}
	have := map[netip.Prefix]bool{}
	for _, ad := range addrs {
		p, ok := prefixOf(ad.IPNet)
		if !ok || (p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()) {
			continue
		}
		if ad.Flags&unix.IFA_F_DADFAILED != 0 {
			miss("address %v failed DAD", p)
		}
		have[p] = true
	}
	for _, p := range a.Addrs {
		if !have[p] {
			miss("missing address %v", p)
		}
		delete(have, p)
	}
	for p := range have {
		miss("unexpected address %v", p)
	}

	for _, gw := range a.Gateways {
		ok, err := hasDefaultVia(pod.h, pa.Index, gw)
		if err != nil {
			return nil, fmt.Errorf("list routes of %s: %w", a.IfName, err)
		}
		if !ok {
			miss("no default route via %v", gw)
		}
	}
	return st, nil
}

// hasDefaultVia reports whether the main table has a default route out of
// linkIndex via gw.
func hasDefaultVia(h *netlink.Handle, linkIndex int, gw netip.Addr) (bool, error) {
	routes, err := dump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(family(gw), &netlink.Route{LinkIndex: linkIndex}, netlink.RT_FILTER_OIF)
	})
	if err != nil {
		return false, err
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if g, ok := netip.AddrFromSlice(r.Gw); ok && g.Unmap() == gw {
			return true, nil
		}
	}
	return false, nil
}
