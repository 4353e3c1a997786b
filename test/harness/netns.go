// Package harness runs nodenet end to end on one machine without touching the
// root network namespace: a real control plane (etcd, kube-apiserver,
// kube-controller-manager) in its own namespace, and one namespace per node,
// all joined by an underlay bridge that lives in a namespace of its own.
//
// Every namespace, process and directory it creates carries the run prefix
// (nnt<pid>-), so a later run can remove what a killed run left behind, and
// LeakCheck can prove that nothing is left.
package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"

	"github.com/vishvananda/netns"
)

// NS is a named network namespace (ip netns add) created by the harness.
type NS struct {
	Name string
}

// NewNS creates the namespace and brings its loopback up.
func NewNS(name string) (*NS, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name}
	if err := ns.IP("link", "set", "lo", "up"); err != nil {
		ns.Delete()
		return nil, err
	}
	return ns, nil
}

// Delete removes the namespace; links inside it go with it.
func (n *NS) Delete() error {
	out, err := exec.Command("ip", "netns", "delete", n.Name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("netns delete %s: %v: %s", n.Name, err, out)
	}
	return nil
}

// IP runs `ip -n <ns> args...`.
func (n *NS) IP(args ...string) error {
	_, err := n.IPOutput(args...)
	return err
}

// IPOutput runs `ip -n <ns> args...` and returns its output.
func (n *NS) IPOutput(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip -n %s %s: %v: %s", n.Name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Exec runs a command inside the namespace and returns its combined output.
func (n *NS) Exec(ctx context.Context, name string, args ...string) (string, error) {
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s %s: %v: %s", n.Name, name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Command builds a command that runs inside the namespace. `ip netns exec`
// execs the program, so the process id is the program's own. The child is
// killed if the test process dies, so a crashed test leaves no daemons.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	return cmd
}

// Do runs fn on an OS thread switched into the namespace. The thread is
// returned to the original namespace afterwards; if that fails it stays
// locked so the Go runtime throws it away instead of reusing it.
func (n *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", n.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: it dies with this goroutine.
		return fmt.Errorf("leave netns %s: %w", n.Name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// DialContext opens a connection from inside the namespace. The socket is
// created in the namespace and stays there, so it can be used from anywhere.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := n.Do(func() error {
		var err error
		conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// Listen opens a listener inside the namespace.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket inside the namespace.
func (n *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

func pidAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

// listNS returns the names of all named network namespaces.
func listNS() ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}
