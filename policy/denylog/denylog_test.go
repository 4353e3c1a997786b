package denylog

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/policy"
	"github.com/nodenet/nodenet/test/harness"
)

// syncBuffer is a log sink the test reads while the reader writes.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// counter reads one series of a counter from reg; -1 when absent.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

func testReader(resolve func(string) (string, bool)) (*Reader, *syncBuffer, *prometheus.Registry) {
	buf := &syncBuffer{}
	reg := prometheus.NewRegistry()
	r := newReader(Options{Log: slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), Resolve: resolve})
	reg.MustRegister(r.denied, r.errs)
	return r, buf, reg
}

func TestHandle(t *testing.T) {
	long := "payments/" + strings.Repeat("checkout-", 6) + "x2x4z"
	r, buf, reg := testReader(func(h string) (string, bool) { return long, h == policy.PodHash(long) })
	src, dst := netip.MustParseAddr("10.244.2.3"), netip.MustParseAddr("10.244.1.2")
	r.handle(Packet{Prefix: "nodenet-deny ingress x/a", Src: src, Dst: dst, Proto: 6, SrcPort: 40000, DstPort: 8080})
	r.handle(Packet{Prefix: "nodenet-deny egress x/a", Src: dst, Dst: src, Proto: 17, SrcPort: 53, DstPort: 53})
	r.handle(Packet{Prefix: "nodenet-deny ingress payments/checkout-checkou #" + policy.PodHash(long), Src: src, Dst: dst, Proto: 1})
	r.handle(Packet{Prefix: "nodenet-deny ingress another-long-namespace-name #ABCDEFGHIJKLMNOP", Src: src, Dst: dst, Proto: 1})
	r.handle(Packet{Prefix: "ulogd", Src: src, Dst: dst, Proto: 6})

	out := buf.String()
	for _, want := range []string{
		`msg="policy denied packet" component=denylog direction=ingress namespace=x pod=a src=10.244.2.3 dst=10.244.1.2 proto=tcp sport=40000 dport=8080`,
		`msg="policy denied packet" component=denylog direction=egress namespace=x pod=a src=10.244.1.2 dst=10.244.2.3 proto=udp sport=53 dport=53`,
		`msg="policy denied packet" component=denylog direction=ingress namespace=payments pod=` + long[len("payments/"):] + ` src=10.244.2.3 dst=10.244.1.2 proto=icmp sport=0 dport=0` + "\n",
		`msg="policy denied packet" component=denylog direction=ingress namespace="" pod=another-long-namespace-name src=10.244.2.3 dst=10.244.1.2 proto=icmp sport=0 dport=0 pod_truncated=true pod_hash=ABCDEFGHIJKLMNOP`,
		`level=DEBUG msg="skipping NFLOG message with a foreign prefix" component=denylog prefix=ulogd`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s\n%s", want, out)
		}
	}
	for _, c := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"namespace": "x", "direction": "ingress"}, 1},
		{map[string]string{"namespace": "x", "direction": "egress"}, 1},
		{map[string]string{"namespace": "payments", "direction": "ingress"}, 1},
		{map[string]string{"namespace": "", "direction": "ingress"}, 1},
	} {
		if got := counter(t, reg, "nodenet_policy_denied_packets_logged_total", c.labels); got != c.want {
			t.Errorf("denied%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := counter(t, reg, "nodenet_policy_denylog_errors_total", map[string]string{"reason": "prefix"}); got != 1 {
		t.Errorf("prefix errors = %v, want 1", got)
	}
}

// TestKernel: in a throwaway namespace, iptables NFLOG rules log UDP
// packets sent to the loopback; the reader logs and counts ours, skips the
// foreign one, and stops on cancel.
func TestKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("real-kernel test: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("real-kernel test: needs root to create a network namespace")
	}
	for _, bin := range []string{"ip", "iptables", "ip6tables"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("real-kernel test: %s not installed", bin)
		}
	}
	ns, err := harness.NewNS(harness.Prefix + "denylog")
	if err != nil {
		t.Skipf("real-kernel test: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Error(err)
		}
	})
	ctx := t.Context()
	const group = 4242
	for _, rule := range [][]string{
		{"iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "NFLOG", "--nflog-group", fmt.Sprint(group), "--nflog-prefix", "nodenet-deny egress x/a"},
		{"iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "10", "-j", "NFLOG", "--nflog-group", fmt.Sprint(group), "--nflog-prefix", "somebody else"},
		{"ip6tables", "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "NFLOG", "--nflog-group", fmt.Sprint(group), "--nflog-prefix", "nodenet-deny ingress y/b"},
	} {
		if out, err := ns.Exec(ctx, rule[0], rule[1:]...); err != nil {
			t.Fatalf("%q: %v: %s", rule, err, out)
		}
	}

	buf := &syncBuffer{}
	reg := prometheus.NewRegistry()
	var r *Reader
	if err := ns.Do(func() (err error) {
		r, err = New(Options{Group: group, Registry: reg, Log: slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// A second reader cannot take the group.
	if err := ns.Do(func() error {
		_, err := New(Options{Group: group})
		if err == nil || !strings.Contains(err.Error(), "another program") {
			return fmt.Errorf("second New = %v, want the group busy", err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()

	send := func(addr string) {
		t.Helper()
		c, err := ns.DialContext(ctx, "udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	send("127.0.0.1:10")
	send("127.0.0.1:9")
	send("[::1]:9")
	wants := []string{
		`msg="policy denied packet" component=denylog direction=egress namespace=x pod=a src=127.0.0.1 dst=127.0.0.1 proto=udp sport=`,
		`msg="policy denied packet" component=denylog direction=ingress namespace=y pod=b src=::1 dst=::1 proto=udp sport=`,
		`msg="skipping NFLOG message with a foreign prefix" component=denylog prefix="somebody else"`,
	}
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		out := buf.String()
		for _, w := range wants {
			if !strings.Contains(out, w) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("log never showed every packet:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), " dport=9\n") {
		t.Errorf("log lacks dport=9:\n%s", buf.String())
	}
	if got := counter(t, reg, "nodenet_policy_denied_packets_logged_total", map[string]string{"namespace": "x", "direction": "egress"}); got != 1 {
		t.Errorf("denied{x,egress} = %v, want 1", got)
	}
	if got := counter(t, reg, "nodenet_policy_denied_packets_logged_total", map[string]string{"namespace": "y", "direction": "ingress"}); got != 1 {
		t.Errorf("denied{y,ingress} = %v, want 1", got)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// Closing released the group: it can be bound again.
	if err := ns.Do(func() error {
		r2, err := New(Options{Group: group})
		if err != nil {
			return fmt.Errorf("bind after close: %w", err)
		}
		r2.close()
		return nil
	}); err != nil {
		t.Error(err)
	}
}
