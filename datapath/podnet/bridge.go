package podnet

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Bridge is the node's pod bridge.
type Bridge struct {
	Name     string         // e.g. "nodenet0"
	Gateways []netip.Prefix // gateway address per pod range with prefix len, e.g. 10.244.1.1/24, fd00:1::1/64
	MTU      int            // 0 leaves the MTU alone
}

func (b Bridge) validate() error {
	var errs []error
	if err := validIfName(b.Name); err != nil {
		errs = append(errs, fmt.Errorf("name: %w", err))
	}
	if b.MTU != 0 && (b.MTU < 68 || b.MTU > 65535) {
		errs = append(errs, fmt.Errorf("mtu %d out of range 68..65535", b.MTU))
	}
	seen := map[netip.Prefix]bool{}
	for _, g := range b.Gateways {
		switch {
		case !g.IsValid() || g.Addr().Is4In6() || g.Addr().IsUnspecified():
			errs = append(errs, fmt.Errorf("gateway %v is not a valid IPv4 or IPv6 prefix", g))
		case seen[g]:
			errs = append(errs, fmt.Errorf("gateway %v listed twice", g))
		}
		seen[g] = true
	}
	return errors.Join(errs...)
}

// EnsureBridge creates or updates the bridge in the current netns so that it
// exists, is up, has the MTU, and carries exactly the gateway addresses
// (other addresses are removed, IPv6 link-local ones kept). With an IPv6
// gateway it sets accept_dad=0 on the bridge and adds the gateway with
// IFA_F_NODAD: the gateway is usable at once, not tentative while DAD runs.
// Idempotent: a second call changes nothing.
func EnsureBridge(b Bridge) error {
	if err := b.validate(); err != nil {
		return fmt.Errorf("podnet: bridge %s: %w", b.Name, err)
	}
	fail := func(what string, err error) error {
		return fmt.Errorf("podnet: bridge %s: %s: %w", b.Name, what, err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fail("open netlink", err)
	}
	defer h.Close()

	link, err := h.LinkByName(b.Name)
	if isNotFound(err) {
		// An explicit MAC pins the bridge's address: with a random one the
		// kernel would switch the bridge to the lowest port MAC whenever
		// ports come and go, and the pods' neighbour entries for the
		// gateway would go stale.
		mac, merr := randomMAC()
		if merr != nil {
			return fail("generate mac", merr)
		}
		attrs := netlink.LinkAttrs{Name: b.Name, MTU: b.MTU, HardwareAddr: mac, TxQLen: -1}
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return fail("create", err)
		}
		link, err = h.LinkByName(b.Name)
	}
	if err != nil {
		return fail("look up", err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return fail("look up", fmt.Errorf("link exists and is a %s, not a bridge", link.Type()))
	}
	if b.MTU != 0 && link.Attrs().MTU != b.MTU {
		if err := h.LinkSetMTU(link, b.MTU); err != nil {
			return fail(fmt.Sprintf("set mtu %d", b.MTU), err)
		}
	}
	if hasV6(b.Gateways) {
		if err := setAcceptDAD(b.Name); err != nil {
			return fail("disable dad", err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return fail("set up", err)
		}
	}
	return syncBridgeAddrs(h, link, b)
}

// syncBridgeAddrs deletes unwanted addresses before adding missing ones:
// the kernel refuses an IPv6 address that is there with another prefix
// length. It lists again after deleting because deleting a primary IPv4
// address also deletes the secondaries of its subnet (without
// promote_secondaries), which may include a gateway we wanted to keep.
func syncBridgeAddrs(h *netlink.Handle, link netlink.Link, b Bridge) error {
	fail := func(what string, err error) error {
		return fmt.Errorf("podnet: bridge %s: %s: %w", b.Name, what, err)
	}
	want := map[netip.Prefix]bool{}
	for _, g := range b.Gateways {
		want[g] = true
	}
	keep := func(p netip.Prefix) bool { return want[p] || (p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()) }
	list := func() (map[netip.Prefix]netlink.Addr, error) {
		addrs, err := dump(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_ALL) })
		if err != nil {
			return nil, fail("list addresses", err)
		}
		m := map[netip.Prefix]netlink.Addr{}
		for _, a := range addrs {
			if p, ok := prefixOf(a.IPNet); ok {
				m[p] = a
			}
		}
		return m, nil
	}
	have, err := list()
	if err != nil {
		return err
	}
	var errs []error
	deleted := false
	for p, a := range have {
		if keep(p) {
			continue
		}
		if err := h.AddrDel(link, &a); err != nil && !isNotFound(err) {
			errs = append(errs, fail(fmt.Sprintf("delete address %v", p), err))
		}
		deleted = true
	}
	if deleted {
		if have, err = list(); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	for _, g := range b.Gateways {
		if _, ok := have[g]; ok {
			continue
		}
		if err := h.AddrAdd(link, addrOf(g)); err != nil {
			errs = append(errs, fail(fmt.Sprintf("add address %v", g), err))
		}
	}
	return errors.Join(errs...)
}

// setAcceptDAD writes net.ipv6.conf.<ifName>.accept_dad=0. /proc/sys/net
// shows the network namespace of the calling thread, so the caller must be
// on the thread that is in the right namespace (inside netnsutil.Do for a
// pod).
func setAcceptDAD(ifName string) error {
	p := filepath.Join("/proc/sys/net/ipv6/conf", ifName, "accept_dad")
	if err := os.WriteFile(p, []byte("0"), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// randomMAC returns a random unicast, locally administered MAC address.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, err
	}
	mac[0] = mac[0]&^0x01 | 0x02
	return mac, nil
}
