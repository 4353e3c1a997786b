package routes_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// nsPrefix starts the name of every namespace these tests create; the pid
// keeps concurrent runs apart and lets TestMain find leftovers of this run.
var nsPrefix = fmt.Sprintf("nnt%d-routes-", os.Getpid())

func TestMain(m *testing.M) {
	code := m.Run()
	if left := leftoverNamespaces(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: network namespaces left behind: %s\n", strings.Join(left, " "))
		code = 1
	}
	os.Exit(code)
}

// leftoverNamespaces lists the named namespaces (iproute2 keeps them as
// bind mounts in /run/netns) that this test binary created.
func leftoverNamespaces() []string {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return nil // no directory: no named namespace at all
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), nsPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// requireKernel skips unless the test can create network namespaces.
func requireKernel(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("real-kernel test: needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create throwaway network namespaces; run go test as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("real-kernel test: needs iproute2's ip command in PATH")
	}
}

// addNS creates the named namespace nsPrefix+suffix and deletes it when the
// test ends, failed or not.
func addNS(t *testing.T, suffix string) string {
	t.Helper()
	name := nsPrefix + suffix
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name
}

// ipIn runs the ip command (or bridge, if args start with "bridge") inside
// the namespace and returns its output.
func ipIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	cmd := "ip"
	if len(args) > 0 && args[0] == "bridge" {
		cmd, args = "bridge", args[1:]
	}
	full := slices.Concat([]string{"-n", ns}, args)
	out, err := exec.Command(cmd, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", cmd, strings.Join(full, " "), err, out)
	}
	return string(out)
}

// inNS runs fn on an OS thread switched into the named namespace; this is
// the only place the tests switch namespaces. fn runs on a fresh goroutine
// whose thread is locked for its whole life: if switching back fails, the
// goroutine exits still locked and the Go runtime destroys the thread
// rather than reuse it in the wrong namespace. Sockets fn opens stay in the
// namespace after it returns.
func inNS(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return from netns %s: %w", name, err))
			return // thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
