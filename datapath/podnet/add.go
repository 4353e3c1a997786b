package podnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nodenet/nodenet/datapath/netnsutil"
)

// Add creates the pod interface as one transaction: every resource it creates
// registers an undo, and if any later step fails the undos run in reverse
// order, so a failed Add leaves nothing in the node or the pod namespace.
//
// Add is idempotent: when the attachment already exists as asked (verified
// like Check), it returns the existing Result; when the host veth exists but
// the attachment is wrong, Add deletes it and creates it afresh. A host veth
// of that name whose peer is not IfName in NetNS is not ours to delete, and
// Add fails.
func Add(a Attachment) (Result, error) { return add(a, nil) }

// add is Add with a fault injector for tests: inject is called before each
// named step and a non-nil error fails that step.
func add(a Attachment, inject func(step string) error) (res Result, err error) {
	hostName := HostVethName(a.ContainerID, a.IfName)
	defer func() {
		if err != nil {
			err = fmt.Errorf("podnet: add %s in %s (container %s, host veth %s): %w",
				a.IfName, a.NetNS, a.ContainerID, hostName, err)
		}
	}()
	if err := a.validate(); err != nil {
		return Result{}, err
	}
	host, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return Result{}, fmt.Errorf("open netlink: %w", err)
	}
	defer host.Close()
	pod, err := openPod(a.NetNS)
	if err != nil {
		return Result{}, err
	}
	defer pod.close()
	br, err := host.LinkByName(a.Bridge)
	if err != nil {
		return Result{}, fmt.Errorf("bridge %s: %w", a.Bridge, err)
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return Result{}, fmt.Errorf("bridge %s is a %s", a.Bridge, br.Type())
	}

	if done, res, err := reuseOrClear(host, pod, a, hostName, br); done || err != nil {
		return res, err
	}
	if _, err := pod.h.LinkByName(a.IfName); err == nil {
		return Result{}, fmt.Errorf("pod netns already has an interface named %s", a.IfName)
	} else if !isNotFound(err) {
		return Result{}, fmt.Errorf("look up %s in pod: %w", a.IfName, err)
	}

	var u undoStack
	defer func() {
		if err != nil {
			if uerr := u.run(); uerr != nil {
				err = fmt.Errorf("%w (undo also failed: %w)", err, uerr)
			}
		}
	}()
	step := func(name string, fn func() error) error {
		if inject != nil {
			if err := inject(name); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		if err := fn(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}

	// The peer is created directly in the pod netns under its final name:
	// one message, no rename, and no clash with a same-named interface on
	// the node. The kernel creates both ends or neither.
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostName, MTU: a.MTU, TxQLen: -1},
		PeerName:      a.IfName,
		PeerMTU:       uint32(a.MTU),
		PeerTxQLen:    -1,
		PeerNamespace: netlink.NsFd(pod.fd),
	}
	var hostLink, podLink netlink.Link
	err = step("create veth pair", func() error {
		if err := host.LinkAdd(veth); err != nil {
			return err
		}
		u.push("delete host veth "+hostName, func() error {
			err := host.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}})
			if isNotFound(err) {
				return nil
			}
			return err
		})
		var err error
		if hostLink, err = host.LinkByName(hostName); err != nil {
			return err
		}
		podLink, err = pod.h.LinkByName(a.IfName)
		return err
	})
	if err != nil {
		return Result{}, err
	}
	// Master, hairpin and up are properties of the host veth: its deletion
	// undoes them.
	if err = step("attach host veth to bridge", func() error { return host.LinkSetMasterByIndex(hostLink, br.Attrs().Index) }); err != nil {
		return Result{}, err
	}
	// Hairpin lets a frame leave by the port it came in: a pod reaching its
	// own Service address is DNATed back to itself through the bridge.
	if err = step("set hairpin", func() error { return host.LinkSetHairpin(hostLink, true) }); err != nil {
		return Result{}, err
	}
	if err = step("set host veth up", func() error { return host.LinkSetUp(hostLink) }); err != nil {
		return Result{}, err
	}
	if hasV6(a.Addrs) {
		// accept_dad=0 before the link goes up, so that its link-local
		// address skips DAD too; our own addresses carry NODAD as well.
		err = step("disable dad in pod", func() error {
			return netnsutil.Do(a.NetNS, func() error { return setAcceptDAD(a.IfName) })
		})
		if err != nil {
			return Result{}, err
		}
	}
	if err = step("set "+a.IfName+" up in pod", func() error { return pod.h.LinkSetUp(podLink) }); err != nil {
		return Result{}, err
	}
	// Up before addresses: the kernel installs an IPv4 address's connected
	// route only on an up device, and the default route needs it.
	for _, p := range a.Addrs {
		addr := addrOf(p)
		err = step(fmt.Sprintf("add address %v", p), func() error {
			if err := pod.h.AddrAdd(podLink, addr); err != nil {
				return err
			}
			u.push(fmt.Sprintf("delete address %v", p), func() error { return ignoreNotFound(pod.h.AddrDel(podLink, addr)) })
			return nil
		})
		if err != nil {
			return Result{}, err
		}
	}
	for _, gw := range a.Gateways {
		r := defaultRoute(podLink.Attrs().Index, gw)
		err = step(fmt.Sprintf("add default route via %v", gw), func() error {
			if err := pod.h.RouteAdd(r); err != nil {
				return err
			}
			u.push(fmt.Sprintf("delete default route via %v", gw), func() error { return ignoreNotFound(pod.h.RouteDel(r)) })
			return nil
		})
		if err != nil {
			return Result{}, err
		}
	}
	// Last, so that nothing after it can fail: the kernel gives lo its
	// 127.0.0.1/8 and ::1 when it comes up, and setting it down again would
	// not restore the namespace as it was. A pod needs lo up anyway.
	if err = step("set lo up in pod", func() error { return setLoUp(pod.h) }); err != nil {
		return Result{}, err
	}
	return Result{
		HostVeth:   hostName,
		HostMAC:    hostLink.Attrs().HardwareAddr,
		PodMAC:     podLink.Attrs().HardwareAddr,
		PodIfIndex: podLink.Attrs().Index,
	}, nil
}

// reuseOrClear handles a host veth left by an earlier Add of the same
// attachment: returns done with its Result when it is complete and right,
// deletes it when it is ours but wrong.
func reuseOrClear(host *netlink.Handle, pod *podNS, a Attachment, hostName string, br netlink.Link) (bool, Result, error) {
	old, err := host.LinkByName(hostName)
	if isNotFound(err) {
		return false, Result{}, nil
	}
	if err != nil {
		return false, Result{}, fmt.Errorf("look up host veth: %w", err)
	}
	st, err := observe(host, pod, a, hostName, br)
	if err != nil {
		return false, Result{}, err
	}
	if !st.paired {
		return false, Result{}, fmt.Errorf("host veth name %s is taken by a link that is not the peer of %s in this netns", hostName, a.IfName)
	}
	if len(st.problems) == 0 {
		return true, st.result(), nil
	}
	// Deleting the host end deletes IfName in the pod too.
	if err := host.LinkDel(old); err != nil && !isNotFound(err) {
		return false, Result{}, fmt.Errorf("delete stale attachment (%v): %w", st.problems, err)
	}
	return false, Result{}, nil
}

// setLoUp brings the pod's loopback up if it is not.
func setLoUp(h *netlink.Handle) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if lo.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	return h.LinkSetUp(lo)
}

func defaultRoute(linkIndex int, gw netip.Addr) *netlink.Route {
	bits := gw.BitLen()
	return &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       &net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)},
		Gw:        gw.AsSlice(),
		Scope:     netlink.SCOPE_UNIVERSE,
	}
}

func ignoreNotFound(err error) error {
	if isNotFound(err) {
		return nil
	}
	return err
}

// undoStack holds the undos of one transaction.
type undoStack struct{ steps []undoStep }

type undoStep struct {
	what string
	fn   func() error
}

func (u *undoStack) push(what string, fn func() error) {
	u.steps = append(u.steps, undoStep{what, fn})
}

// run undoes in reverse order, all of it even if some undo fails, and
// gathers the failures.
func (u *undoStack) run() error {
	var errs []error
	for i := len(u.steps) - 1; i >= 0; i-- {
		if err := u.steps[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u.steps[i].what, err))
		}
	}
	u.steps = nil
	return errors.Join(errs...)
}

// podNS is an open pod network namespace: its fd (for the veth peer) and a
// netlink socket created inside it, both from one resolution of the path.
type podNS struct {
	fd netns.NsHandle
	h  *netlink.Handle
}

func openPod(path string) (*podNS, error) {
	p := &podNS{fd: -1}
	err := netnsutil.Do(path, func() error {
		fd, err := netns.Get()
		if err != nil {
			return fmt.Errorf("get netns: %w", err)
		}
		p.fd = fd
		p.h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		p.close()
		return nil, fmt.Errorf("open pod netns: %w", err)
	}
	return p, nil
}

func (p *podNS) close() {
	if p.h != nil {
		p.h.Close()
	}
	if p.fd >= 0 {
		_ = p.fd.Close()
	}
}
