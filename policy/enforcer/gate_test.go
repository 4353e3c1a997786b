package enforcer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestWaitSync: a request is served only by a sync that started after it
// and succeeded.
func TestWaitSync(t *testing.T) {
	c := &Component{synced: make(chan struct{})}
	triggered := make(chan struct{}, 4)
	c.SetTrigger(func() { triggered <- struct{}{} })

	// A sync in flight when the request comes does not serve it.
	early := c.syncStarted()
	done := make(chan error, 1)
	go func() { done <- c.waitSync(context.Background()) }()
	<-triggered
	c.syncEnded(early, nil)
	select {
	case err := <-done:
		t.Fatalf("served by a sync that started before the request (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}

	// A failed sync does not serve it either; the next good one does.
	gen := c.syncStarted()
	c.syncEnded(gen, errors.New("ipset: boom"))
	select {
	case err := <-done:
		t.Fatalf("served by a failed sync (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	c.syncEnded(c.syncStarted(), nil)
	if err := <-done; err != nil {
		t.Fatalf("after a good sync: %v", err)
	}

	// Out of time: the error says why, with the last sync's failure.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	go func() { <-triggered; c.syncEnded(c.syncStarted(), errors.New("iptables-restore: exit 1")) }()
	err := c.waitSync(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "iptables-restore: exit 1") {
		t.Fatalf("timed-out wait: %v, want the deadline and the last sync error", err)
	}
}
