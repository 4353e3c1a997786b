package harness

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// Suite is one test package's cluster: a control plane shared by its tests,
// and the nodenet binary under test.
type Suite struct {
	CP      *ControlPlane
	Nodenet string
	SkipWhy string // set when the suite cannot run here
}

// RunSuite is a TestMain body: it builds nodenet, starts one control plane
// for the package, runs the tests, removes everything and fails the run if
// anything is left behind. Not as root, tests run and skip.
func RunSuite(m *testing.M, opts Options, s *Suite) (code int) {
	if os.Geteuid() != 0 {
		s.SkipWhy = "needs root: creates network namespaces and runs the daemon in them"
		return m.Run()
	}
	binDir, err := os.MkdirTemp("", Prefix+"bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		os.RemoveAll(binDir)
		if err := LeakCheck(); err != nil {
			fmt.Fprintln(os.Stderr, "LEAK CHECK FAILED:", err)
			code = 1
		}
	}()
	if s.Nodenet, err = NodenetBinary(binDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if s.CP, err = StartControlPlane(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "control plane:", err)
		return 1
	}
	defer func() {
		if err := s.CP.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "control plane stop:", err)
			code = 1
		}
	}()
	return m.Run()
}

// Require skips t when the suite cannot run.
func (s *Suite) Require(t testing.TB) {
	t.Helper()
	if s.SkipWhy != "" {
		t.Skip(s.SkipWhy)
	}
}

// NewNode adds a node that is removed when the test ends; on failure the
// daemon's log tail is printed.
func (s *Suite) NewNode(t testing.TB, name string) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := s.CP.AddNode(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && n.Daemon != nil {
			t.Logf("==== %s daemon log (tail)\n%s", n.Name, n.Daemon.Tail(80))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := n.Remove(ctx); err != nil {
			t.Errorf("remove node: %v", err)
		}
	})
	return n
}

// StartNode adds a node, starts its daemon with extraConfig appended to the
// default config, and waits until it is ready.
func (s *Suite) StartNode(t testing.TB, name, extraConfig string) *Node {
	t.Helper()
	n := s.NewNode(t, name)
	if err := n.WriteConfig(n.DefaultConfig(extraConfig)); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(s.Nodenet); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	return n
}

// Cluster is a set of started nodes with a kubelet stand-in on each.
type Cluster struct {
	Nodes    []*Node
	Kubelets map[string]*Kubelet // by node name
}

// StartCluster starts count nodes named prefix-a, prefix-b, ... whose
// config is the default one passed through edit (nil: unchanged), and a
// kubelet stand-in on each. Everything is removed when the test ends.
func (s *Suite) StartCluster(t testing.TB, prefix string, count int, edit func(cfg string) string) *Cluster {
	t.Helper()
	c := &Cluster{Kubelets: map[string]*Kubelet{}}
	for i := range count {
		n := s.NewNode(t, fmt.Sprintf("%s-%c", prefix, 'a'+i))
		cfg := n.DefaultConfig("")
		if edit != nil {
			cfg = edit(cfg)
		}
		if err := n.WriteConfig(cfg); err != nil {
			t.Fatal(err)
		}
		if err := n.Start(s.Nodenet); err != nil {
			t.Fatal(err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := n.WaitReady(context.Background(), time.Minute); err != nil {
			t.Fatal(err)
		}
		k, err := n.StartKubelet(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		// Registered after the node's cleanup, so it runs first, while the
		// daemon still serves the CNI DELs.
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("==== %s kubelet log (tail)\n%s", n.Name, k.Tail(40))
			}
			if err := k.Stop(); err != nil {
				t.Errorf("stop kubelet on %s: %v", n.Name, err)
			}
		})
		c.Kubelets[n.Name] = k
	}
	return c
}
