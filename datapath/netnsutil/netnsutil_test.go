package netnsutil_test

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/nodenet/nodenet/datapath/netnsutil"
	"github.com/nodenet/nodenet/datapath/netnsutil/nstest"
)

// origin names the namespace the process started in. Not /proc/self/ns/net:
// that is the main thread's, and any goroutine inside Do may be running on
// the main thread. An fd opened before any test runs stays valid.
var origin string

func TestMain(m *testing.M) {
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	origin = fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	code := nstest.Main(m, "netnsutil")
	f.Close()
	os.Exit(code)
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// threadInode is the netns inode of the calling thread; only meaningful
// while the goroutine is locked (it is, inside Do).
func threadInode(t *testing.T) uint64 { return inode(t, "/proc/thread-self/ns/net") }

func TestDoEntersAndReturns(t *testing.T) {
	ns := nstest.New(t, "do")
	want := inode(t, ns)
	before := inode(t, origin)
	if want == before {
		t.Fatal("throwaway namespace has the process's inode")
	}

	var inside uint64
	var same bool
	err := netnsutil.Do(ns, func() error {
		inside = threadInode(t)
		var err error
		same, err = netnsutil.Same(ns)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside != want {
		t.Errorf("inside Do: thread netns inode %d, want %d", inside, want)
	}
	if !same {
		t.Error("Same(ns) = false inside Do")
	}
	// Back out: a locked check that this thread is in the original ns.
	if ok, err := netnsutil.Same(origin); err != nil || !ok {
		t.Errorf("after Do: Same(origin) = %v, %v; want true", ok, err)
	}
	if ok, err := netnsutil.Same(ns); err != nil || ok {
		t.Errorf("after Do: Same(ns) = %v, %v; want false", ok, err)
	}
}

func TestDoCreatesInTargetOnly(t *testing.T) {
	ns := nstest.New(t, "link")
	const name = "nntbr0"
	err := netnsutil.Do(ns, func() error {
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Reading the root namespace is fine; it must not have the link.
	if _, err := netlink.LinkByName(name); err == nil {
		t.Fatalf("%s appeared in the root namespace", name)
	}
	err = netnsutil.Do(ns, func() error {
		_, err := netlink.LinkByName(name)
		return err
	})
	if err != nil {
		t.Errorf("link not found in target namespace: %v", err)
	}
}

func TestDoReturnsFnError(t *testing.T) {
	ns := nstest.New(t, "err")
	sentinel := errors.New("boom")
	if err := netnsutil.Do(ns, func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do = %v, want %v", err, sentinel)
	}
	if ok, _ := netnsutil.Same(ns); ok {
		t.Error("still in namespace after fn error")
	}
}

func TestDoPanicSwitchesBack(t *testing.T) {
	ns := nstest.New(t, "panic")
	func() {
		defer func() { _ = recover() }()
		_ = netnsutil.Do(ns, func() error { panic("in ns") })
	}()
	if ok, err := netnsutil.Same(origin); err != nil || !ok {
		t.Errorf("after panic: Same(origin) = %v, %v; want true", ok, err)
	}
}

func TestDoNested(t *testing.T) {
	a := nstest.New(t, "outer")
	b := nstest.New(t, "inner")
	err := netnsutil.Do(a, func() error {
		if err := netnsutil.Do(b, func() error {
			if ok, err := netnsutil.Same(b); !ok || err != nil {
				return fmt.Errorf("inner: Same(b) = %v, %v", ok, err)
			}
			return nil
		}); err != nil {
			return err
		}
		if ok, err := netnsutil.Same(a); !ok || err != nil {
			return fmt.Errorf("after inner: Same(a) = %v, %v", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDoMissingPath(t *testing.T) {
	nstest.RequireRoot(t)
	called := false
	err := netnsutil.Do("/var/run/netns/nnt-does-not-exist", func() error { called = true; return nil })
	if err == nil || called {
		t.Fatalf("Do(missing) = %v, called %v; want error and not called", err, called)
	}
}

// Many goroutines switching at once: each must see its own namespace, and
// no goroutine outside Do may observe a foreign one.
func TestDoConcurrent(t *testing.T) {
	nss := []string{nstest.New(t, "c"), nstest.New(t, "c"), nstest.New(t, "c")}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ns := nss[i%len(nss)]
			for range 20 {
				err := netnsutil.Do(ns, func() error {
					if ok, err := netnsutil.Same(ns); !ok || err != nil {
						return fmt.Errorf("Same(%s) = %v, %v", ns, ok, err)
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
				if ok, err := netnsutil.Same(origin); !ok || err != nil {
					errs <- fmt.Errorf("outside Do: in foreign ns (%v, %v)", ok, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
