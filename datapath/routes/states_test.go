package routes_test

import (
	"flag"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nodenet/nodenet/datapath/routes"
)

var statesSeed = flag.Uint64("states.seed", 0, "TestStates shuffle seed; 0 picks one from the clock")

// TestStates applies a series of desired states in order, then in many
// random orders; after each Apply the kernel (the fake) must be exactly the
// state's expected dump, whatever came before, and a second Apply must
// change nothing. This catches leftovers of one backend or peer set in the
// next, and any dependence on the order of transitions.
func TestStates(t *testing.T) {
	nodeBMoved := node("node-b", "192.168.0.22", "10.244.12.0/24")
	states := []struct {
		name  string
		d     routes.Desired
		extra []string // on top of baseDump
	}{{
		name:  "host-gw, 3 nodes",
		d:     compute(t, opts(routes.HostGW, nodeA), nodeA, nodeB, nodeC),
		extra: hostGWABC,
	}, {
		name:  "vxlan, 3 nodes",
		d:     compute(t, opts(routes.VXLAN, nodeA), nodeA, nodeB, nodeC),
		extra: vxlanABC,
	}, {
		name: "vxlan dual-stack, node-c gone",
		d:    compute(t, opts(routes.VXLAN, nodeADS), nodeADS, nodeBDS),
		extra: []string{
			"link nodenet.vx vxlan mtu 1450 up vni 1 port 8472 local 192.168.0.1 dev eth0 mac 0e:6e:c0:a8:00:01",
			"addr 10.244.1.0/32 dev nodenet.vx",
			"addr fd00:10:244:1::/128 dev nodenet.vx nodad",
			"route 10.244.2.0/24 via 10.244.2.0 dev nodenet.vx proto 78 onlink",
			"route fd00:10:244:2::/64 via fd00:10:244:2:: dev nodenet.vx proto 78 metric 1024 onlink",
			"neigh 10.244.2.0 lladdr 0e:6e:c0:a8:00:02 dev nodenet.vx permanent",
			"neigh fd00:10:244:2:: lladdr 0e:6e:c0:a8:00:02 dev nodenet.vx permanent",
			"fdb 0e:6e:c0:a8:00:02 dev nodenet.vx dst 192.168.0.2 self permanent",
		},
	}, {
		name: "vxlan vni 2, port 4789, mtu 1400, node-b moved",
		d: compute(t, routes.Options{Backend: routes.VXLAN, Self: nodeA, VNI: 2, Port: 4789, MTU: 1400, Underlay: "eth0"},
			nodeBMoved, nodeC),
		extra: []string{
			"link nodenet.vx vxlan mtu 1400 up vni 2 port 4789 local 192.168.0.1 dev eth0 mac 0e:6e:c0:a8:00:01",
			"addr 10.244.1.0/32 dev nodenet.vx",
			"route 10.244.12.0/24 via 10.244.12.0 dev nodenet.vx proto 78 onlink",
			"route 10.244.3.0/24 via 10.244.3.0 dev nodenet.vx proto 78 onlink",
			"neigh 10.244.12.0 lladdr 0e:6e:c0:a8:00:16 dev nodenet.vx permanent",
			"neigh 10.244.3.0 lladdr 0e:6e:c0:a8:00:03 dev nodenet.vx permanent",
			"fdb 0e:6e:c0:a8:00:03 dev nodenet.vx dst 192.168.0.3 self permanent",
			"fdb 0e:6e:c0:a8:00:16 dev nodenet.vx dst 192.168.0.22 self permanent",
		},
	}, {
		name:  "host-gw, node-b moved",
		d:     compute(t, opts(routes.HostGW, nodeA), nodeBMoved, nodeC),
		extra: []string{"route 10.244.12.0/24 via 192.168.0.22 dev eth0 proto 78", hostGWABC[1]},
	}, {
		name: "host-gw, no peers",
		d:    compute(t, opts(routes.HostGW, nodeA)),
	}, {
		name: "vxlan, no peers",
		d:    compute(t, opts(routes.VXLAN, nodeA)),
		extra: []string{
			"link nodenet.vx vxlan mtu 1450 up vni 1 port 8472 local 192.168.0.1 dev eth0 mac 0e:6e:c0:a8:00:01",
			"addr 10.244.1.0/32 dev nodenet.vx",
		},
	}}

	f := newFake(t)
	a := routes.NewApplier(f, nil)
	step := func(i int) {
		t.Helper()
		s := states[i]
		if err := a.Apply(s.d); err != nil {
			t.Fatalf("state %q: Apply: %v", s.name, err)
		}
		checkDump(t, f, expect(baseDump, s.extra))
		f.ResetCalls()
		if err := a.Apply(s.d); err != nil {
			t.Fatalf("state %q: second Apply: %v", s.name, err)
		}
		if n := f.Mutations(); n != 0 {
			t.Fatalf("state %q: second Apply made %d changes: %v", s.name, n, f.Calls())
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	for i := range states {
		t.Logf("in order: %s", states[i].name)
		step(i)
	}
	seed := *statesSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("shuffle seed %d (rerun with -states.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for round := range 50 {
		for _, i := range rng.Perm(len(states)) {
			if round < 1 {
				t.Logf("shuffled: %s", states[i].name)
			}
			step(i)
		}
	}
}
