package iptables_test

// Real-kernel tier: every command runs in a throwaway network namespace
// through ExecRunner.Wrap ("ip netns exec <ns> ..."), never in the root
// namespace. TestMain checks that no namespace of ours is left and that
// the root namespace gained no NODENET line.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/iptables/iptablestest"
)

var (
	nsPrefix = fmt.Sprintf("nnt%d-ipt-", os.Getpid())
	nsSeq    atomic.Int32
	modes    = []iptables.Mode{iptables.ModeLegacy, iptables.ModeNFT}
)

func TestMain(m *testing.M) {
	before := rootNodenetLines()
	code := m.Run()
	if err := checkNoLeftovers(before); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		code = 1
	}
	os.Exit(code)
}

// rootNodenetLines returns the NODENET lines of every save command in the
// root namespace (reading only: save without -t creates no table).
func rootNodenetLines() map[string]bool {
	lines := map[string]bool{}
	if os.Geteuid() != 0 {
		return lines
	}
	for _, bin := range []string{"iptables-legacy-save", "iptables-nft-save", "ip6tables-legacy-save", "ip6tables-nft-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			continue
		}
		out, _ := exec.Command(bin).Output()
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "NODENET") {
				lines[bin+": "+l] = true
			}
		}
	}
	return lines
}

func checkNoLeftovers(before map[string]bool) error {
	var problems []string
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], nsPrefix) {
				problems = append(problems, "network namespace "+f[0]+" left behind")
				_ = exec.Command("ip", "netns", "del", f[0]).Run()
			}
		}
	}
	for l := range rootNodenetLines() {
		if before[l] {
			fmt.Fprintln(os.Stderr, "note: root namespace held this before the tests (not ours):", l)
			continue
		}
		problems = append(problems, "root namespace iptables gained "+l)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

// netnsRunner creates a throwaway namespace and returns a runner confined
// to it, or skips the test when that is impossible.
func netnsRunner(t *testing.T, mode iptables.Mode) *iptables.ExecRunner {
	t.Helper()
	if testing.Short() {
		t.Skip("real-kernel test: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("real-kernel test: needs root to create a network namespace")
	}
	for _, bin := range []string{"ip", "iptables-" + string(mode) + "-restore", "ip6tables-" + string(mode) + "-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("real-kernel test: %s not installed", bin)
		}
	}
	ns := fmt.Sprintf("%s%d", nsPrefix, nsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("real-kernel test: cannot create network namespace %s: %v: %s", ns, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("delete network namespace %s: %v: %s", ns, err, out)
		}
	})
	return &iptables.ExecRunner{Mode: mode, Wrap: []string{"ip", "netns", "exec", ns}}
}

// nsExec runs an iptables command in r's namespace, behind the Manager's back.
func nsExec(t *testing.T, r *iptables.ExecRunner, args ...string) {
	t.Helper()
	cmd := append(append([]string(nil), r.Wrap...), args...)
	if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%q: %v: %s", cmd, err, out)
	}
}

// countingRunner counts the calls reaching the binaries.
type countingRunner struct {
	iptables.Runner
	mu              sync.Mutex
	saves, restores int
}

func (c *countingRunner) Save(ctx context.Context, fam iptables.Family, t iptables.Table) ([]byte, error) {
	c.mu.Lock()
	c.saves++
	c.mu.Unlock()
	return c.Runner.Save(ctx, fam, t)
}

func (c *countingRunner) Restore(ctx context.Context, fam iptables.Family, p []byte, noflush bool) error {
	c.mu.Lock()
	c.restores++
	c.mu.Unlock()
	return c.Runner.Restore(ctx, fam, p, noflush)
}

func (c *countingRunner) reset() (saves, restores int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	saves, restores = c.saves, c.restores
	c.saves, c.restores = 0, 0
	return saves, restores
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// tables splits a dump into normalized tables: no comments, zero
// counters, tables holding nothing of anyone's dropped.
func tables(dump string) map[string]string {
	out := map[string]string{}
	var name string
	var b strings.Builder
	for _, l := range strings.Split(dump, "\n") {
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "*"):
			name = l[1:]
			b.Reset()
			b.WriteString(l + "\n")
		default:
			b.WriteString(counters.ReplaceAllString(l, "[0:0]") + "\n")
			if l == "COMMIT" {
				if t := normalize(b.String()); t != "" {
					out[name] = t
				}
			}
		}
	}
	return out
}

func kernelTables(t *testing.T, r iptables.Runner, fam iptables.Family) map[string]string {
	t.Helper()
	out, err := r.Save(t.Context(), fam, "")
	if err != nil {
		t.Fatal(err)
	}
	return tables(string(out))
}

// pair drives the kernel and a Fake with the same syncs.
type pair struct {
	kernel, fake *iptables.Manager
	runner       *countingRunner
	fakeRunner   *iptablestest.Fake
	fam          iptables.Family
}

func newPair(t *testing.T, r *iptables.ExecRunner, fam iptables.Family) *pair {
	p := &pair{runner: &countingRunner{Runner: r}, fakeRunner: iptablestest.NewFake(), fam: fam}
	p.kernel = iptables.NewManager(p.runner, fam, testLogger())
	p.fake = iptables.NewManager(p.fakeRunner, fam, nil)
	for _, m := range []*iptables.Manager{p.kernel, p.fake} {
		if err := m.Register(iptables.MasqOwner, iptables.MasqPrefixes()...); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p *pair) sync(t *testing.T, owner string, chains []iptables.Chain, full bool) {
	t.Helper()
	if err := p.kernel.Sync(t.Context(), owner, chains, full); err != nil {
		t.Fatalf("kernel sync %s: %v", owner, err)
	}
	if err := p.fake.Sync(t.Context(), owner, chains, full); err != nil {
		t.Fatalf("fake sync %s: %v", owner, err)
	}
}

// check compares the namespace's ruleset with the Fake's.
func (p *pair) check(t *testing.T, what string) {
	t.Helper()
	want := tables(p.fakeRunner.Dump(p.fam))
	if diff := cmp.Diff(want, kernelTables(t, p.runner.Runner, p.fam)); diff != "" {
		t.Fatalf("%s: kernel differs from the fake (-fake +kernel):\n%s", what, diff)
	}
}

func TestKernelSync(t *testing.T) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			r := netnsRunner(t, mode)
			p := newPair(t, r, iptables.IPv4)
			masq := iptables.MasqueradeChains(iptables.IPv4, clusterCIDRs)
			p.sync(t, iptables.MasqOwner, masq, false)
			p.sync(t, "proxy", stateSvc, false)
			p.check(t, "first sync")
			want := lines(
				"*nat",
				":PREROUTING ACCEPT [0:0]",
				":INPUT ACCEPT [0:0]",
				":OUTPUT ACCEPT [0:0]",
				":POSTROUTING ACCEPT [0:0]",
				":NODENET-MASQ - [0:0]",
				":NODENET-POSTROUTING - [0:0]",
				":NODENET-PREROUTING - [0:0]",
				":NODENET-SVC-A - [0:0]",
				natHookLine,
				`-A POSTROUTING -m comment --comment "nodenet hook" -j NODENET-POSTROUTING`,
				`-A NODENET-MASQ -d 224.0.0.0/4 -m comment --comment "nodenet: multicast is not NATed" -j RETURN`,
				`-A NODENET-MASQ -d 10.244.0.0/16 -m comment --comment "nodenet: pod to pod is not NATed" -j RETURN`,
				`-A NODENET-MASQ -d 10.245.0.0/16 -m comment --comment "nodenet: pod to pod is not NATed" -j RETURN`,
				`-A NODENET-MASQ -m comment --comment "nodenet: pod to outside" -j MASQUERADE --random-fully`,
				`-A NODENET-POSTROUTING -s 10.244.0.0/16 -m comment --comment "nodenet: from pods" -j NODENET-MASQ`,
				`-A NODENET-POSTROUTING -s 10.245.0.0/16 -m comment --comment "nodenet: from pods" -j NODENET-MASQ`,
				"-A NODENET-PREROUTING -j NODENET-SVC-A",
				"-A NODENET-SVC-A "+svcDNAT,
				"COMMIT")
			if got := kernelTables(t, r, iptables.IPv4)["nat"]; got != want {
				t.Fatalf("kernel nat table:\n%s\nwant:\n%s", got, want)
			}

			p.runner.reset()
			p.sync(t, iptables.MasqOwner, masq, false)
			p.sync(t, "proxy", stateSvc, false)
			if saves, restores := p.runner.reset(); saves+restores != 0 {
				t.Errorf("unchanged partial sync: %d saves, %d restores; want none", saves, restores)
			}

			nsExec(t, r, "iptables-"+string(mode), "-w", "5", "-t", "nat", "-F", iptables.ChainMasq)
			if got := kernelTables(t, r, iptables.IPv4)["nat"]; strings.Contains(got, "-A NODENET-MASQ") {
				t.Fatalf("flush behind our back did not happen:\n%s", got)
			}
			p.sync(t, iptables.MasqOwner, masq, true)
			p.check(t, "full sync after a flush behind our back")

			for i, full := range []bool{true, false, true} {
				p.sync(t, iptables.MasqOwner, masq, full)
				p.sync(t, "proxy", stateSvc, full)
				nat := kernelTables(t, r, iptables.IPv4)["nat"]
				for _, hook := range []string{natHookLine, `-A POSTROUTING -m comment --comment "nodenet hook" -j NODENET-POSTROUTING`} {
					if n := countLines(nat, hook); n != 1 {
						t.Fatalf("after %d more syncs: %d times %s", i+1, n, hook)
					}
				}
			}
			p.check(t, "repeated syncs")

			// A payload the kernel rejects: the error names the table, the
			// next sync is full and converges.
			err := p.kernel.Sync(t.Context(), "proxy", []iptables.Chain{pre, nat("NODENET-SVC-A", "-m nosuchmatch -j RETURN")}, false)
			if err == nil || !strings.Contains(err.Error(), "restore nat table") {
				t.Fatalf("bad rule: err = %v", err)
			}
			p.runner.reset()
			p.sync(t, "proxy", []iptables.Chain{pre, svcA2}, false)
			if saves, _ := p.runner.reset(); saves != 1 {
				t.Errorf("sync after failure: %d saves, want 1 (full)", saves)
			}
			p.check(t, "sync after a failure")

			p.sync(t, iptables.MasqOwner, nil, false)
			p.sync(t, "proxy", nil, true)
			p.check(t, "everything removed")
			if out, _ := r.Save(t.Context(), iptables.IPv4, ""); bytes.Contains(out, []byte("NODENET")) {
				t.Errorf("NODENET left after removing everything:\n%s", out)
			}
		})
	}
}

// TestKernelStates is TestStates against the kernel: after each state, the
// namespace must hold exactly what the Fake holds.
func TestKernelStates(t *testing.T) {
	for _, mode := range modes {
		for _, fam := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
			t.Run(string(mode)+"/"+fam.String(), func(t *testing.T) {
				t.Parallel()
				r := netnsRunner(t, mode)
				states := testStates(fam)
				rng := rand.New(rand.NewPCG(7, uint64(fam)))
				fakeRunner := iptablestest.NewFake()
				kernel, fake := newStateApplier(t, r, fam), newStateApplier(t, fakeRunner, fam)
				order := []int{0, 1, 2, 3, 4, 5, 6}
				for round := range 4 {
					if round > 0 {
						rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
					}
					for _, i := range order {
						kernel.apply(t, states[i], rng)
						fake.apply(t, states[i], rng)
						if diff := cmp.Diff(tables(fakeRunner.Dump(fam)), kernelTables(t, r, fam)); diff != "" {
							t.Fatalf("round %d, state %d (-fake +kernel):\n%s", round, i, diff)
						}
					}
				}
			})
		}
	}
}

func TestKernelDetectMode(t *testing.T) {
	r := netnsRunner(t, iptables.ModeLegacy)
	detect := func() iptables.Mode {
		t.Helper()
		m, err := iptables.DetectMode(t.Context(), r.Wrap...)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := detect(); m != iptables.ModeNFT {
		t.Errorf("empty namespace: %s, want the nft default", m)
	}
	legacy := iptables.NewManager(r, iptables.IPv4, nil)
	if err := legacy.Sync(t.Context(), iptables.MasqOwner, iptables.MasqueradeChains(iptables.IPv4, clusterCIDRs), false); err != nil {
		t.Fatal(err)
	}
	if m := detect(); m != iptables.ModeLegacy {
		t.Errorf("our chains in legacy: %s", m)
	}
	nsExec(t, r, "iptables-nft", "-w", "5", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT")
	if m := detect(); m != iptables.ModeNFT {
		t.Errorf("kubelet hint in nft: %s", m)
	}
}

// TestKernelStreamedRestore: a payload over 1 MiB is streamed into
// iptables-restore instead of being built in memory; the kernel must end
// up as with the buffered payload (the Fake), and a rule the kernel
// rejects in the middle of the stream must fail the sync with
// iptables-restore's own message.
func TestKernelStreamedRestore(t *testing.T) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			r := netnsRunner(t, mode)
			fake := iptablestest.NewFake()
			sr := &streamCounter{ExecRunner: r}
			km, fm := iptables.NewManager(sr, iptables.IPv4, nil), iptables.NewManager(fake, iptables.IPv4, nil)
			chains := []iptables.Chain{{Table: iptables.TableNAT, Name: "NODENET-PREROUTING"}}
			for i := range 1500 {
				name := fmt.Sprintf("NODENET-SVC-%05d", i)
				chains[0].Rules = append(chains[0].Rules, iptables.Rule(fmt.Sprintf("-d 10.96.%d.%d/32 -j %s", i/250, i%250, name)))
				c := iptables.Chain{Table: iptables.TableNAT, Name: name}
				for j := range 8 {
					c.Rules = append(c.Rules, iptables.Rule(fmt.Sprintf(
						`-p tcp -m comment --comment "ns/svc-%d:http -> 10.244.%d.%d:8080" -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 10.244.%d.%d:8080`,
						i, j, i%250, j, i%250)))
				}
				chains = append(chains, c)
			}
			for _, m := range []*iptables.Manager{km, fm} {
				if err := m.Sync(t.Context(), "proxy", chains, false); err != nil {
					t.Fatal(err)
				}
			}
			if rs := fake.Restores(); len(rs) != 1 || len(rs[0].Payload) <= 1<<20 {
				t.Fatalf("the fake got %d payloads; the test needs one, over 1 MiB", len(rs))
			}
			if sr.streamed.Load() != 1 {
				t.Errorf("%d payloads streamed, want 1", sr.streamed.Load())
			}
			if diff := cmp.Diff(tables(fake.Dump(iptables.IPv4)), kernelTables(t, r, iptables.IPv4)); diff != "" {
				t.Fatalf("kernel differs from the fake (-fake +kernel):\n%s", diff)
			}

			// Everything rewritten (full), one rule bad halfway through.
			bad := slices.Clone(chains)
			bad[750].Rules = append(slices.Clone(bad[750].Rules), "-m nosuchmatch -j RETURN")
			err := km.Sync(t.Context(), "proxy", bad, true)
			if err == nil || !strings.Contains(err.Error(), "restore nat table") || !strings.Contains(err.Error(), "nosuchmatch") {
				t.Fatalf("bad rule in a streamed payload: err = %v", err)
			}
			if diff := cmp.Diff(tables(fake.Dump(iptables.IPv4)), kernelTables(t, r, iptables.IPv4)); diff != "" {
				t.Fatalf("a failed restore changed the kernel (-before +after):\n%s", diff)
			}
			if err := km.Sync(t.Context(), "proxy", nil, true); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// streamCounter counts the payloads streamed to iptables-restore.
type streamCounter struct {
	*iptables.ExecRunner
	streamed atomic.Int32
}

func (s *streamCounter) RestoreFunc(ctx context.Context, fam iptables.Family, write func(io.Writer) error, noflush bool) error {
	s.streamed.Add(1)
	return s.ExecRunner.RestoreFunc(ctx, fam, write, noflush)
}
