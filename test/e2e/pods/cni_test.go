package pods

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nodenet/nodenet/datapath/podnet"
	"github.com/nodenet/nodenet/test/harness"
)

// plugin runs nodenet as a CNI plugin on a node, the way a container runtime
// on that node executes it.
type plugin struct{ n *harness.Node }

func (p plugin) conf(version string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"nodenet","type":"nodenet","socket":%q}`, version, p.n.Socket))
}

// run executes one verb; a CNI error result comes back as *types.Error.
func (p plugin) run(cmd, containerID, netns string, stdin []byte, extraEnv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := p.n.NS.Command(ctx, filepath.Join(p.n.CNIBinDir, "nodenet"))
	c.Env = append([]string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + containerID, "CNI_NETNS=" + netns,
		"CNI_IFNAME=eth0", "CNI_PATH=" + p.n.CNIBinDir, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, extraEnv...)
	c.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	if err != nil {
		var te types.Error
		if jerr := json.Unmarshal(stdout.Bytes(), &te); jerr == nil && te.Code != 0 {
			return nil, &te
		}
		return nil, fmt.Errorf("%s: %v: stdout %q stderr %q", cmd, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

// add runs ADD for eth0 and returns the pod's address.
func (p plugin) add(containerID, netns string) (netip.Addr, error) {
	return p.addIf(containerID, "eth0", netns)
}

func (p plugin) addIf(containerID, ifname, netns string) (netip.Addr, error) {
	out, err := p.run("ADD", containerID, netns, p.conf("1.1.0"), "CNI_IFNAME="+ifname)
	if err != nil {
		return netip.Addr{}, err
	}
	var res types100.Result
	if err := json.Unmarshal(out, &res); err != nil {
		return netip.Addr{}, fmt.Errorf("ADD result %q: %w", out, err)
	}
	if len(res.IPs) != 1 {
		return netip.Addr{}, fmt.Errorf("ADD result has %d IPs: %s", len(res.IPs), out)
	}
	a, _ := netip.AddrFromSlice(res.IPs[0].Address.IP)
	return a.Unmap(), nil
}

// podNamespaces creates count namespaces standing in for pod sandboxes.
func podNamespaces(t *testing.T, tag string, count int) []*harness.NS {
	t.Helper()
	var out []*harness.NS
	for i := range count {
		ns, err := harness.NewNS(fmt.Sprintf("%s%s%d", harness.Prefix, tag, i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Delete() })
		out = append(out, ns)
	}
	return out
}

func nsPath(ns *harness.NS) string { return "/var/run/netns/" + ns.Name }

func newContainerID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// leases lists the addresses IPAM has on disk for the node.
func leases(t *testing.T, n *harness.Node) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(n.StateDir, "ipam", "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if b := filepath.Base(f); b != "cursor" && !strings.HasPrefix(b, ".") {
			out = append(out, b)
		}
	}
	slices.Sort(out)
	return out
}

// hostVeths lists nodenet's veths on the node.
func hostVeths(t *testing.T, n *harness.Node) []string {
	t.Helper()
	out, err := n.NS.IPOutput("-o", "link", "show", "master", "nodenet0")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func TestConcurrentAdds(t *testing.T) {
	suite.Require(t)
	n := suite.StartNode(t, "conc", "")
	p := plugin{n}
	nss := podNamespaces(t, "c", 100)
	ids := make([]string, len(nss))
	ips := make([]netip.Addr, len(nss))
	errs := make([]error, len(nss))
	var wg sync.WaitGroup
	start := time.Now()
	for i, ns := range nss {
		ids[i] = newContainerID()
		wg.Go(func() { ips[i], errs[i] = p.add(ids[i], nsPath(ns)) })
	}
	wg.Wait()
	t.Logf("100 concurrent ADDs took %s", time.Since(start))
	cidr := netip.MustParsePrefix(n.PodCIDR)
	seen := map[netip.Addr]int{}
	for i := range nss {
		if errs[i] != nil {
			t.Fatalf("ADD %d: %v", i, errs[i])
		}
		if !cidr.Contains(ips[i]) {
			t.Errorf("ADD %d got %s outside %s", i, ips[i], cidr)
		}
		if j, dup := seen[ips[i]]; dup {
			t.Errorf("ADD %d and %d both got %s", j, i, ips[i])
		}
		seen[ips[i]] = i
	}
	if got := len(leases(t, n)); got != 100 {
		t.Errorf("%d leases on disk, want 100", got)
	}
	_, metrics, err := n.Admin("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`nodenet_cni_request_duration_seconds_count{command="ADD",result="ok"} 100`,
		fmt.Sprintf(`nodenet_ipam_addresses{range=%q,state="used"} 100`, n.PodCIDR),
		fmt.Sprintf(`nodenet_ipam_addresses{range=%q,state="free"} 153`, n.PodCIDR),
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for i, ns := range nss {
		wg.Go(func() {
			if _, err := p.run("DEL", ids[i], nsPath(ns), p.conf("1.1.0")); err != nil {
				t.Errorf("DEL %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if l, v := leases(t, n), hostVeths(t, n); len(l) != 0 || len(v) != 0 {
		t.Errorf("after DEL of everything: leases %v, veths %v", l, v)
	}
}

// TestKillDuringChurn kills the daemon with SIGKILL while ADDs and DELs are
// in flight, restarts it and checks that no address has two holders and
// that, after CNI GC, nothing leaked.
func TestKillDuringChurn(t *testing.T) {
	suite.Require(t)
	n := suite.StartNode(t, "churn", "")
	p := plugin{n}

	type attachment struct {
		id string
		ns *harness.NS
	}
	var mu sync.Mutex
	live := map[attachment]netip.Addr{} // as the runtime believes
	var created []*harness.NS
	t.Cleanup(func() { // runs last: every namespace a worker made
		for _, ns := range created {
			ns.Delete()
		}
	})
	successes, ops, failures := 0, 0, 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopChurn := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopChurn)
	var seq atomic.Int64
	for range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ns, err := harness.NewNS(fmt.Sprintf("%sk%d", harness.Prefix, seq.Add(1)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				created = append(created, ns)
				mu.Unlock()
				a := attachment{newContainerID(), ns}
				ip, err := p.add(a.id, nsPath(ns))
				mu.Lock()
				ops++
				if err == nil {
					live[a] = ip
					successes++
				} else {
					failures++
				}
				mu.Unlock()
				if err == nil && i%3 == 0 {
					continue // keep some
				}
				// Delete the rest, and clean up after a failed ADD, as a
				// runtime does: DEL, retried until it succeeds (the daemon
				// may be down, or may die after doing the work but before
				// answering), and only then is the pod gone.
				for p.del(a.id, ns) != nil {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
				}
				mu.Lock()
				delete(live, a)
				mu.Unlock()
			}
		})
	}
	waitSuccesses := func(n int) {
		poll(t, fmt.Sprintf("%d successful ADDs", n), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return successes >= n
		})
	}
	waitSuccesses(40) // churn is in full swing: kill
	n.Daemon.Kill()
	if err := n.Start(suite.Nodenet); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	after := successes + 40
	mu.Unlock()
	waitSuccesses(after) // and it goes on after the restart
	stopChurn()
	t.Logf("%d ADDs, %d failed (daemon down or killed mid-request), %d pods kept", ops, failures, len(live))
	if failures == 0 {
		t.Error("no ADD failed: the kill did not land during churn")
	}

	holders := map[netip.Addr]attachment{}
	for a, ip := range live {
		if other, dup := holders[ip]; dup {
			t.Errorf("%s held by %v and %v", ip, other, a)
		}
		holders[ip] = a
	}
	var valid []types.GCAttachment
	var want []string
	for a, ip := range live {
		valid = append(valid, types.GCAttachment{ContainerID: a.id, IfName: "eth0"})
		want = append(want, ip.String())
	}
	slices.Sort(want)
	gc, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "nodenet", "type": "nodenet", "socket": n.Socket,
		"cni.dev/valid-attachments": valid})
	if _, err := p.run("GC", "", "", gc); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got := leases(t, n); !slices.Equal(got, want) {
		t.Errorf("after GC, leases %v, want exactly the live pods' %v", got, want)
	}
	got := hostVeths(t, n)
	for a := range live {
		if v := podnet.HostVethName(a.id, "eth0"); !slices.Contains(got, v) {
			inside, _ := a.ns.IPOutput("-br", "addr")
			t.Errorf("live pod %s in %s has no host veth %s; inside the pod:\n%s", a.id[:12], a.ns.Name, v, inside)
		}
	}
	if len(got) != len(live) {
		t.Errorf("after GC, %d veths, want %d", len(got), len(live))
	}
}

func (p plugin) del(id string, ns *harness.NS) error { return p.delIf(id, "eth0", ns) }

func (p plugin) delIf(id, ifname string, ns *harness.NS) error {
	_, err := p.run("DEL", id, nsPath(ns), p.conf("1.1.0"), "CNI_IFNAME="+ifname)
	return err
}

func TestCheckDetectsDeletedRoute(t *testing.T) {
	suite.Require(t)
	n := suite.StartNode(t, "chk", "")
	p := plugin{n}
	ns := podNamespaces(t, "chk", 1)[0]
	id := newContainerID()
	if _, err := p.add(id, nsPath(ns)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.run("CHECK", id, nsPath(ns), p.conf("1.1.0")); err != nil {
		t.Fatalf("CHECK of a healthy pod: %v", err)
	}
	// ADD is idempotent for one container and interface; DEL of something
	// unknown succeeds.
	first, _ := p.add(id, nsPath(ns))
	again, err := p.add(id, nsPath(ns))
	if err != nil || again != first {
		t.Errorf("repeated ADD: %v %v, first %v", again, err, first)
	}
	if err := p.del(newContainerID(), ns); err != nil {
		t.Errorf("DEL of an unknown container: %v", err)
	}
	if err := ns.IP("route", "del", "default"); err != nil {
		t.Fatal(err)
	}
	_, err = p.run("CHECK", id, nsPath(ns), p.conf("1.1.0"))
	if err == nil || !strings.Contains(err.Error(), "default route") {
		t.Errorf("CHECK after deleting the default route: %v", err)
	}
	if _, err := p.run("STATUS", "", "", p.conf("1.1.0")); err != nil {
		t.Errorf("STATUS of a ready daemon: %v", err)
	}
	if err := p.del(id, ns); err != nil {
		t.Fatal(err)
	}
	// Daemon down: a clear "try again later", and STATUS says not available.
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.add(newContainerID(), nsPath(ns)); !isCode(err, types.ErrTryAgainLater) {
		t.Errorf("ADD with the daemon down: %v, want code 11", err)
	}
	if _, err := p.run("STATUS", "", "", p.conf("1.1.0")); !isCode(err, types.ErrPluginNotAvailable) {
		t.Errorf("STATUS with the daemon down: %v, want code 50", err)
	}
}

func isCode(err error, code uint) bool {
	te, ok := err.(*types.Error)
	return ok && te.Code == code
}

func TestMalformedRequestsGetErrors(t *testing.T) {
	suite.Require(t)
	n := suite.StartNode(t, "bad", "")
	p := plugin{n}
	ns := podNamespaces(t, "bad", 1)[0]
	cases := []struct {
		name  string
		cmd   string
		id    string
		stdin []byte
		env   []string
		code  uint
	}{
		{"bad json", "ADD", "c1", []byte(`{"cniVersion":`), nil, types.ErrDecodingFailure},
		{"wrong version", "ADD", "c1", []byte(`{"cniVersion":"0.2.0","name":"nodenet","type":"nodenet","socket":"` + n.Socket + `"}`), nil, types.ErrIncompatibleCNIVersion},
		{"missing container id", "ADD", "", p.conf("1.1.0"), nil, types.ErrInvalidEnvironmentVariables},
		{"bad ifname", "ADD", "c1", p.conf("1.1.0"), []string{"CNI_IFNAME=a/b"}, types.ErrInvalidEnvironmentVariables},
		{"unknown verb", "BOGUS", "c1", p.conf("1.1.0"), nil, types.ErrInvalidEnvironmentVariables},
		{"wrong type", "ADD", "c1", []byte(`{"cniVersion":"1.1.0","name":"nodenet","type":"bridge","socket":"` + n.Socket + `"}`), nil, types.ErrInvalidNetworkConfig},
		{"bad args", "ADD", "c1", p.conf("1.1.0"), []string{"CNI_ARGS=garbage"}, types.ErrInvalidEnvironmentVariables},
		{"netns missing", "ADD", "c2", p.conf("1.1.0"), []string{"CNI_NETNS=/var/run/netns/does-not-exist"}, types.ErrInternal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := tc.env
			_, err := p.run(tc.cmd, tc.id, nsPath(ns), tc.stdin, env...)
			te, ok := err.(*types.Error)
			if !ok || te.Code != tc.code {
				t.Errorf("got %v, want CNI error code %d", err, tc.code)
			}
		})
	}
	if n.Daemon.Exited() {
		t.Fatal("the daemon exited")
	}
	if l := leases(t, n); len(l) != 0 {
		t.Errorf("failed ADDs left leases: %v", l)
	}
	// The daemon still serves good requests.
	if _, err := p.add(newContainerID(), nsPath(ns)); err != nil {
		t.Errorf("ADD after bad requests: %v", err)
	}
}

func TestDaemonRestartKeepsPodTraffic(t *testing.T) {
	suite.Require(t)
	n := suite.StartNode(t, "rst", "")
	p := plugin{n}
	nss := podNamespaces(t, "rst", 2)
	var ips []netip.Addr
	for _, ns := range nss {
		ip, err := p.add(newContainerID(), nsPath(ns))
		if err != nil {
			t.Fatal(err)
		}
		ips = append(ips, ip)
	}
	l, err := nss[1].Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("ok\n"))
			c.Close()
		}
	}()
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := nss[0].DialContext(ctx, "tcp", ips[1].String()+":9000")
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatal(err)
	}
	if err := n.Daemon.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-n.Daemon.Done()
	if err := dial(); err != nil {
		t.Errorf("pod traffic broke with the daemon down: %v", err)
	}
	if err := n.Start(suite.Nodenet); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err != nil {
		t.Errorf("pod traffic after restart: %v", err)
	}
	if _, err := os.Stat(filepath.Join(n.CNIConfDir, "10-nodenet.conflist")); err != nil {
		t.Errorf("conflist: %v", err)
	}

}

// TestLeakedAddressOfGonePodIsFreed: an address whose pod does not exist is
// freed by the periodic check against the Pods once it is cni.leak_grace old,
// without any CNI call.
func TestLeakedAddressOfGonePodIsFreed(t *testing.T) {
	suite.Require(t)
	n := suite.NewNode(t, "leak")
	cfg := strings.Replace(n.DefaultConfig(""), "[cni]\n", "[cni]\nleak_grace = \"1s\"\n", 1)
	cfg = strings.Replace(cfg, "[reconcile]\n", "[reconcile]\nmax_interval = \"1s\"\n", 1)
	if err := n.WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(suite.Nodenet); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	p := plugin{n}
	nss := podNamespaces(t, "leak", 2)
	ghost := newContainerID()
	if _, err := p.run("ADD", ghost, nsPath(nss[0]), p.conf("1.1.0"), "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=ghost"); err != nil {
		t.Fatal(err)
	}
	// An attachment without pod identity is never collected this way.
	anon, err := p.add(newContainerID(), nsPath(nss[1]))
	if err != nil {
		t.Fatal(err)
	}
	poll(t, "the ghost pod's lease and veth freed", func() bool {
		l := leases(t, n)
		return len(l) == 1 && l[0] == anon.String() && !slices.Contains(hostVeths(t, n), podnet.HostVethName(ghost, "eth0"))
	})
}
