package harness

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"
)

// TestControlPlaneAndNodes brings up the real control plane with two nodes,
// checks they got distinct podCIDRs and can reach each other over the
// underlay, then tears down and checks nothing is left.
func TestControlPlaneAndNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, err := StartControlPlane(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			cp.Stop()
		}
	}()
	a, err := cp.AddNode(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := cp.AddNode(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	pa, pb := netip.MustParsePrefix(a.PodCIDR), netip.MustParsePrefix(b.PodCIDR)
	if pa.Overlaps(pb) {
		t.Errorf("podCIDRs overlap: %s %s", pa, pb)
	}
	l, err := b.NS.Listen("tcp", b.IP.String()+":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if c, err := a.DialTCP(ctx, b.IP.String()+":7000"); err != nil {
		t.Errorf("node a cannot reach node b on the underlay: %v", err)
	} else {
		c.Close()
	}
	conn, err := a.DialTCP(ctx, cp.IP.String()+":6443")
	if err != nil {
		t.Errorf("node a cannot reach the API server: %v", err)
	} else {
		conn.Close()
	}
	stopped = true
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := LeakCheck(); err != nil {
		t.Fatal(err)
	}
}
