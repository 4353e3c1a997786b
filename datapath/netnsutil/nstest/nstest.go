// Package nstest creates throwaway network namespaces for nodenet's
// real-kernel tests. Tests never touch the root network namespace: they
// create namespaces here, switch into them with netnsutil.Do, and every
// namespace is removed in t.Cleanup, also when the test fails.
//
// Namespaces are created with `ip netns add` (exec of ip is fine in tests),
// so they appear under /var/run/netns as nnt<pid>-<pkg>-<name>-<n>.
package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// RunDir is where iproute2 bind-mounts named network namespaces.
const RunDir = "/var/run/netns"

// SkipMessage is the reason given when the tests cannot run.
const SkipMessage = "needs root: creates network namespaces"

var (
	mu      sync.Mutex // guards prefix, seq
	prefix  string
	seq     int
	enabled bool
)

// Main is called from TestMain: os.Exit(nstest.Main(m, "pkgname")). It runs
// the tests; when running as root it then checks that no namespace created
// by this process is left, removes any it finds and returns 1 if there were.
func Main(m *testing.M, pkg string) int {
	mu.Lock()
	prefix = fmt.Sprintf("nnt%d-%s-", os.Getpid(), pkg)
	enabled = os.Geteuid() == 0
	mu.Unlock()
	code := m.Run()
	if !enabled {
		return code
	}
	left, err := Leftovers()
	if err != nil {
		fmt.Fprintf(os.Stderr, "nstest: list namespaces: %v\n", err)
		return 1
	}
	if len(left) > 0 {
		fmt.Fprintf(os.Stderr, "nstest: namespaces left behind: %v\n", left)
		for _, n := range left {
			if out, err := exec.Command("ip", "netns", "del", n).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "nstest: ip netns del %s: %v: %s\n", n, err, out)
			}
		}
		return 1
	}
	return code
}

// Leftovers lists the namespaces under RunDir that carry this process's prefix.
func Leftovers() ([]string, error) {
	mu.Lock()
	p := prefix
	mu.Unlock()
	entries, err := os.ReadDir(RunDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var left []string
	for _, e := range entries {
		if p != "" && strings.HasPrefix(e.Name(), p) {
			left = append(left, e.Name())
		}
	}
	return left, nil
}

// New creates a namespace and returns its path under RunDir. It skips the
// test when not root and removes the namespace in tb.Cleanup.
func New(tb testing.TB, name string) string {
	tb.Helper()
	mu.Lock()
	ok, p := enabled, prefix
	seq++
	n := seq
	mu.Unlock()
	if p == "" {
		tb.Fatal("nstest: call nstest.Main from TestMain first")
	}
	if !ok {
		tb.Skip(SkipMessage)
	}
	full := fmt.Sprintf("%s%s-%d", p, name, n)
	if out, err := exec.Command("ip", "netns", "add", full).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", full, err, out)
	}
	path := filepath.Join(RunDir, full)
	tb.Cleanup(func() { Remove(tb, path) })
	return path
}

// Remove deletes the namespace at path (created by New). A namespace that is
// already gone is fine, so tests may remove one early.
func Remove(tb testing.TB, path string) {
	tb.Helper()
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return
	}
	if out, err := exec.Command("ip", "netns", "del", filepath.Base(path)).CombinedOutput(); err != nil {
		tb.Errorf("ip netns del %s: %v: %s", path, err, out)
	}
}

// RequireRoot skips tb unless the tests can create namespaces.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip(SkipMessage)
	}
}
