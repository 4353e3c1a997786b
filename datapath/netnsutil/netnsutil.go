// Package netnsutil is nodenet's one helper for switching network
// namespaces. Every piece of nodenet that must run code inside another
// network namespace (a pod's, or a throwaway one in tests) goes through Do.
//
// Kernel facts this relies on: a network namespace is a property of a thread,
// not of a process (setns(2) with CLONE_NEWNET changes only the calling
// thread), and Go schedules goroutines over many threads. So the goroutine
// must stay on one OS thread for as long as that thread is in the other
// namespace, and the thread must never be handed back to the scheduler while
// it is still there. Sockets, including netlink sockets, belong to the
// namespace they were created in and stay there after the thread switches
// back.
package netnsutil

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"

	"github.com/vishvananda/netns"
)

// Do runs fn with the calling goroutine's OS thread inside the network
// namespace at nsPath (a bind-mounted name such as /var/run/netns/x, or
// /proc/PID/ns/net), then moves the thread back to the namespace it was in.
//
// The thread is locked for the whole call. If moving back fails, the thread
// is left locked on purpose: when the goroutine exits, the Go runtime
// terminates a locked thread instead of reusing it, so no other goroutine
// ever runs in the wrong namespace. Calls nest (runtime.LockOSThread counts).
//
// fn must not start goroutines that expect to run in the namespace: they run
// on other threads, in the original one. fn's error is returned as is; a
// failure to switch back is joined to it.
func Do(nsPath string, fn func() error) (err error) {
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("netnsutil: open netns %s: %w", nsPath, err)
	}
	defer target.Close()

	runtime.LockOSThread()
	// Only after locking: netns.Get reads /proc/<pid>/task/<tid>/ns/net of
	// the current thread, which must be the thread we restore.
	origin, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netnsutil: get current netns: %w", err)
	}
	defer origin.Close()

	if err := netns.Set(target); err != nil {
		// setns failed, so the thread is still where it was.
		runtime.UnlockOSThread()
		return fmt.Errorf("netnsutil: enter netns %s: %w", nsPath, err)
	}
	// Deferred so that a panic or runtime.Goexit (t.Fatal in a test) in fn
	// also switches back.
	defer func() {
		if backErr := netns.Set(origin); backErr != nil {
			// Leave the thread locked: the runtime discards it when the
			// goroutine exits.
			err = errors.Join(err, fmt.Errorf("netnsutil: return from netns %s (thread left locked): %w", nsPath, backErr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// Same reports whether nsPath is the network namespace of the calling thread,
// comparing the device and inode numbers of the nsfs files.
func Same(nsPath string) (bool, error) {
	want, err := stat(nsPath)
	if err != nil {
		return false, err
	}
	// Locked so that /proc/thread-self names the thread the caller is on
	// (it is one stat call anyway; the lock makes that explicit).
	runtime.LockOSThread()
	cur, err := stat("/proc/thread-self/ns/net")
	runtime.UnlockOSThread()
	if err != nil {
		return false, err
	}
	return want == cur, nil
}

type nsID struct{ dev, ino uint64 }

func stat(path string) (nsID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nsID{}, fmt.Errorf("netnsutil: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nsID{}, fmt.Errorf("netnsutil: stat %s: no stat_t", path)
	}
	return nsID{dev: uint64(st.Dev), ino: st.Ino}, nil
}
