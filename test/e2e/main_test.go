// Package e2e runs nodenet against a real control plane with nodes in network
// namespaces. One control plane serves the whole package; each test makes its
// own nodes.
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nodenet/nodenet/test/harness"
)

var (
	cp      *harness.ControlPlane
	nodenet string // the binary under test
	skipWhy string // set when the suite cannot run here
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) (code int) {
	if os.Geteuid() != 0 {
		skipWhy = "e2e tests need root: they create network namespaces and run the daemon in them"
		return m.Run()
	}
	binDir, err := os.MkdirTemp("", harness.Prefix+"bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		os.RemoveAll(binDir)
		if err := harness.LeakCheck(); err != nil {
			fmt.Fprintln(os.Stderr, "LEAK CHECK FAILED:", err)
			code = 1
		}
	}()
	if nodenet, err = harness.NodenetBinary(binDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if cp, err = harness.StartControlPlane(ctx, harness.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, "control plane:", err)
		return 1
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "control plane stop:", err)
			code = 1
		}
	}()
	return m.Run()
}

func requireCluster(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
}

// newNode adds a node and removes it when the test ends; on failure the
// daemon's log tail is printed.
func newNode(t *testing.T, name string) *harness.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := cp.AddNode(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && n.Daemon != nil {
			t.Logf("==== %s daemon log (tail)\n%s", n.Name, n.Daemon.Tail(60))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := n.Remove(ctx); err != nil {
			t.Errorf("remove node: %v", err)
		}
	})
	return n
}

// startNode adds a node, starts its daemon and waits until it is ready.
func startNode(t *testing.T, name, extraConfig string) *harness.Node {
	t.Helper()
	n := newNode(t, name)
	if err := n.WriteConfig(n.DefaultConfig(extraConfig)); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(nodenet); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	return n
}
