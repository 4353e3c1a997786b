package pods

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/nodenet/nodenet/datapath/ipam"
	"github.com/nodenet/nodenet/datapath/podnet"
)

// fallbackMTU is assumed when the node address is on no local link.
const fallbackMTU = 1500

// podMTU is the configured MTU, or the underlay link's less the overhead.
func (m *Manager) podMTU(nodeAddrs []netip.Addr) (int, error) {
	if m.opts.MTU > 0 {
		return m.opts.MTU, nil
	}
	overhead := func(v6 bool) int { return 0 }
	if m.opts.Overhead != nil {
		overhead = m.opts.Overhead
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return 0, fmt.Errorf("pods: list addresses for MTU detection: %w", err)
	}
	for _, na := range nodeAddrs {
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || ip.Unmap() != na {
				continue
			}
			link, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return 0, fmt.Errorf("pods: underlay link of %s: %w", na, err)
			}
			return link.Attrs().MTU - overhead(na.Is6()), nil
		}
	}
	v6 := len(nodeAddrs) > 0 && nodeAddrs[0].Is6()
	m.log.Warn("node address is on no local link; assuming MTU 1500", "addresses", nodeAddrs)
	return fallbackMTU - overhead(v6), nil
}

// enableForwarding turns on routing for the families the node has pods of.
func enableForwarding(gateways []netip.Prefix) error {
	var errs []error
	for _, g := range gateways {
		path := "/proc/sys/net/ipv4/ip_forward"
		if g.Addr().Is6() {
			path = "/proc/sys/net/ipv6/conf/all/forwarding"
		}
		if b, err := os.ReadFile(path); err == nil && string(b) == "1\n" {
			continue
		}
		if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("enable forwarding: %w", err))
		}
	}
	return errors.Join(errs...)
}

// collectLeaks frees leases of pods that are gone and veths nobody owns.
// Veths are listed before leases: a veth that exists got its lease first,
// so an ADD in flight is never mistaken for a leak.
func (m *Manager) collectLeaks() error {
	veths, err := podnet.ListHostVeths(m.opts.Bridge)
	if err != nil {
		return fmt.Errorf("pods: list veths: %w", err)
	}
	pods, err := m.view.Pods.List(labels.Everything())
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, p := range pods {
		if p.Spec.NodeName == m.opts.Node && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			live[p.Namespace+"/"+p.Name] = true
		}
	}
	m.mu.RLock()
	alloc := m.alloc
	m.mu.RUnlock()
	now := timeNow()
	err = m.release(alloc, func(a ipam.Allocation) bool {
		return a.Pod == "" || live[a.Namespace+"/"+a.Pod] || now.Sub(a.Since) < m.opts.GCGrace
	})
	owned := map[string]bool{}
	for _, a := range alloc.List() {
		owned[podnet.HostVethName(a.ContainerID, a.IfName)] = true
	}
	var errs []error
	for _, v := range veths {
		if owned[v] {
			continue
		}
		m.log.Info("removing orphaned pod veth", "veth", v)
		if link, lerr := netlink.LinkByName(v); lerr == nil {
			if derr := netlink.LinkDel(link); derr != nil {
				errs = append(errs, fmt.Errorf("delete orphaned veth %s: %w", v, derr))
			}
		}
	}
	return errors.Join(append(errs, err)...)
}

// release drops every lease keep rejects, with its interface.
func (m *Manager) release(alloc *ipam.Allocator, keep func(ipam.Allocation) bool) error {
	var errs []error
	gone, err := alloc.GC(func(a ipam.Allocation) bool {
		if keep(a) {
			return true
		}
		// The netns is unknown here; the host veth is enough to remove the pair.
		if derr := podnet.Del(a.ContainerID, "", a.IfName); derr != nil {
			errs = append(errs, fmt.Errorf("remove interface of %s: %w", a.ContainerID, derr))
			return true
		}
		return false
	})
	for _, a := range gone {
		m.log.Info("freed leaked pod address", "pod", a.Namespace+"/"+a.Pod, "container", a.ContainerID, "addrs", a.Addrs)
	}
	return errors.Join(append(errs, err)...)
}
