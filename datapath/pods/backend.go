package pods

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nodenet/nodenet/datapath/cni"
	"github.com/nodenet/nodenet/datapath/ipam"
	"github.com/nodenet/nodenet/datapath/podnet"
)

var _ cni.Backend = (*Manager)(nil)

// errNotReady tells the runtime to come back: the first sync has not set up
// the bridge and IPAM yet.
var errNotReady = types.NewError(types.ErrTryAgainLater, "nodenet pod network is not ready yet", "the daemon has not completed its first sync")

// state returns the allocator and MTU once ready.
func (m *Manager) state() (*ipam.Allocator, int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.ready {
		return nil, 0, errNotReady
	}
	return m.alloc, m.mtu, nil
}

// Add gives the container its interface and addresses. A failure leaves
// nothing behind: podnet undoes its own steps, and a fresh lease is released.
func (m *Manager) Add(ctx context.Context, p *cni.Parsed) (*types100.Result, error) {
	defer m.locks.lock(p.ContainerID + "/" + p.IfName)()
	alloc, mtu, err := m.state()
	if err != nil {
		return nil, err
	}
	_, existed := alloc.Get(p.ContainerID, p.IfName)
	lease, err := alloc.Allocate(ipam.Owner{ContainerID: p.ContainerID, IfName: p.IfName, Namespace: p.PodNamespace, Pod: p.PodName})
	if err != nil {
		return nil, fmt.Errorf("allocate address for %s/%s: %w", p.PodNamespace, p.PodName, err)
	}
	att, err := m.attachment(alloc, lease, p.Netns, mtu)
	if err == nil {
		var res podnet.Result
		if res, err = podnet.Add(att); err == nil {
			// The interface stays on failure: the runtime calls DEL, or
			// retries the ADD, which finds the lease and the interface.
			if err := m.admitted(ctx, p); err != nil {
				return nil, err
			}
			return result(att, res), nil
		}
	}
	if !existed {
		if _, rerr := alloc.Release(p.ContainerID, p.IfName); rerr != nil {
			err = errors.Join(err, fmt.Errorf("release lease: %w", rerr))
		}
	}
	return nil, fmt.Errorf("set up %s in %s: %w", p.IfName, p.Netns, err)
}

// admitted runs the admit gate, if any, for the pod of p.
func (m *Manager) admitted(ctx context.Context, p *cni.Parsed) error {
	m.mu.RLock()
	admit := m.admit
	m.mu.RUnlock()
	if admit == nil || p.PodNamespace == "" || p.PodName == "" {
		return nil
	}
	return admit(ctx, p.PodNamespace, p.PodName)
}

// attachment describes the pod interface for a lease.
func (m *Manager) attachment(alloc *ipam.Allocator, lease ipam.Allocation, netns string, mtu int) (podnet.Attachment, error) {
	att := podnet.Attachment{ContainerID: lease.ContainerID, NetNS: netns, IfName: lease.IfName,
		Addrs: lease.Addrs, MTU: mtu, Bridge: m.opts.Bridge}
	gws := alloc.Gateways()
	for _, a := range lease.Addrs {
		gw, ok := gatewayFor(gws, a.Addr())
		if !ok {
			return att, fmt.Errorf("no gateway for %s (node ranges %v)", a, alloc.Ranges())
		}
		att.Gateways = append(att.Gateways, gw)
	}
	return att, nil
}

func gatewayFor(gws []netip.Prefix, a netip.Addr) (netip.Addr, bool) {
	for _, g := range gws {
		if g.Masked().Contains(a) {
			return g.Addr(), true
		}
	}
	return netip.Addr{}, false
}

func result(att podnet.Attachment, res podnet.Result) *types100.Result {
	podIdx := 1
	out := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: res.HostVeth, Mac: res.HostMAC.String()},
			{Name: att.IfName, Mac: res.PodMAC.String(), Sandbox: att.NetNS},
		},
	}
	for i, a := range att.Addrs {
		gw := net.IP(att.Gateways[i].AsSlice())
		out.IPs = append(out.IPs, &types100.IPConfig{Interface: &podIdx, Address: ipNet(a), Gateway: gw})
		def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if a.Addr().Is6() {
			def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		out.Routes = append(out.Routes, &types.Route{Dst: ipNet(def), GW: gw})
	}
	return out
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Del removes the interface and frees the lease; both are idempotent, so
// DEL of something unknown succeeds.
func (m *Manager) Del(_ context.Context, p *cni.Parsed) error {
	defer m.locks.lock(p.ContainerID + "/" + p.IfName)()
	alloc, _, err := m.state()
	if err != nil {
		return err
	}
	if err := podnet.Del(p.ContainerID, p.Netns, p.IfName); err != nil {
		return fmt.Errorf("remove %s of %s: %w", p.IfName, p.ContainerID, err)
	}
	if _, err := alloc.Release(p.ContainerID, p.IfName); err != nil {
		return fmt.Errorf("release lease of %s: %w", p.ContainerID, err)
	}
	return nil
}

// Check verifies that the interface, addresses and routes really exist.
func (m *Manager) Check(_ context.Context, p *cni.Parsed) error {
	defer m.locks.lock(p.ContainerID + "/" + p.IfName)()
	alloc, mtu, err := m.state()
	if err != nil {
		return err
	}
	lease, ok := alloc.Get(p.ContainerID, p.IfName)
	if !ok {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("no address is allocated to %s/%s", p.ContainerID, p.IfName), "")
	}
	att, err := m.attachment(alloc, lease, p.Netns, mtu)
	if err != nil {
		return err
	}
	return podnet.Check(att)
}

// GC frees every lease and interface the runtime no longer lists.
func (m *Manager) GC(_ context.Context, _ *cni.Parsed, valid []types.GCAttachment) error {
	alloc, _, err := m.state()
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, v := range valid {
		keep[v.ContainerID+"/"+v.IfName] = true
	}
	return m.release(alloc, func(a ipam.Allocation) bool { return keep[a.ContainerID+"/"+a.IfName] })
}

// Status says whether ADD would work now.
func (m *Manager) Status(context.Context) error {
	if _, _, err := m.state(); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "nodenet pod network is not ready", err.Error())
	}
	return nil
}
