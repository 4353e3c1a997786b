package proxier

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// udpFlow names a UDP service destination as clients address it.
type udpFlow struct {
	Dst  netip.Addr
	Port int
}

// udpBackends maps each UDP service destination to its endpoint addresses.
type udpBackends map[udpFlow][]netip.Addr

// staleUDP lists, per destination, the endpoints that were used before and
// are gone now. UDP has no connection to break: without this, a client keeps
// its conntrack entry and sends to a dead pod until the entry times out.
func staleUDP(before, after udpBackends) map[udpFlow][]netip.Addr {
	out := map[udpFlow][]netip.Addr{}
	for flow, old := range before {
		for _, ep := range old {
			if !slices.Contains(after[flow], ep) {
				out[flow] = append(out[flow], ep)
			}
		}
	}
	return out
}

// Conntrack deletes conntrack entries; a narrow seam for tests.
type Conntrack interface {
	DeleteUDP(dst netip.Addr, port int, endpoint netip.Addr) (uint, error)
}

// kernelConntrack deletes through netlink in the current namespace.
type kernelConntrack struct{}

// DeleteUDP removes UDP entries sent to dst:port and answered by endpoint
// (after DNAT the reply source is the endpoint).
func (kernelConntrack) DeleteUDP(dst netip.Addr, port int, endpoint netip.Addr) (uint, error) {
	f := &netlink.ConntrackFilter{}
	fam := netlink.InetFamily(unix.AF_INET)
	if dst.Is6() {
		fam = unix.AF_INET6
	}
	err := errors.Join(
		f.AddProtocol(unix.IPPROTO_UDP),
		f.AddIP(netlink.ConntrackOrigDstIP, net.IP(dst.AsSlice())),
		f.AddPort(netlink.ConntrackOrigDstPort, uint16(port)),
		f.AddIP(netlink.ConntrackReplySrcIP, net.IP(endpoint.AsSlice())),
	)
	if err != nil {
		return 0, err
	}
	n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f)
	if err != nil {
		return n, fmt.Errorf("conntrack delete udp %s:%d -> %s: %w", dst, port, endpoint, err)
	}
	return n, nil
}
