package proxy

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	networkingv1 "k8s.io/api/networking/v1"
)

// syncBuffer is a log sink tests can read while the logger writes.
type syncBuffer struct {
	mu sync.Mutex
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

func TestAccessLog(t *testing.T) {
	be := echo(t, "be")
	var buf syncBuffer
	o := testOptions()
	o.AccessLog = true
	h := New(o, NewMetrics(nil), slog.New(slog.NewTextHandler(&buf, nil)))
	t.Cleanup(h.Close)
	h.Swap(build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{addrOf(be)}}))
	do(h, "GET", "http://a.test/logged?x=1", nil)
	do(h, "GET", "http://nohost.test/missing", nil)
	want := []string{`msg=access`, `/logged?x=1"`, "status=200", "ingress=default/web", "service=default/web", "upstream=" + addrOf(be), "status=404"}
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		for _, w := range want {
			if !strings.Contains(buf.String(), w) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Errorf("access log lacks one of %q:\n%s", want, buf.String())
	}
	// Switched off live: no further lines.
	o.AccessLog = false
	h.SetOptions(o)
	do(h, "GET", "http://a.test/silent", nil)
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 200*time.Millisecond, true, func(context.Context) (bool, error) {
		return strings.Contains(buf.String(), "/silent"), nil
	}); err == nil {
		t.Error("access log written while switched off")
	}
}

// blockingHandler is a log sink that never returns until released.
type blockingHandler struct {
	slog.Handler
	release chan struct{}
}

func (b blockingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (b blockingHandler) Handle(ctx context.Context, r slog.Record) error {
	<-b.release
	return nil
}

func TestAccessLogNeverBlocksRequests(t *testing.T) {
	be := echo(t, "be")
	sink := blockingHandler{Handler: slog.DiscardHandler, release: make(chan struct{})}
	o := testOptions()
	o.AccessLog = true
	h := New(o, NewMetrics(nil), slog.New(sink))
	t.Cleanup(h.Close)
	t.Cleanup(func() { close(sink.release) })
	h.Swap(build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{addrOf(be)}}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range accessQueue + 100 { // more than the queue holds
			do(h, "GET", "http://a.test/", nil)
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("requests blocked behind a stuck log sink")
	}
	if h.access.dropped.Load() == 0 {
		t.Error("no line counted as dropped")
	}
}

// recordingWriter keeps each Write separately.
type recordingWriter struct{ writes []string }

func (r *recordingWriter) Write(p []byte) (int, error) {
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func TestLineBuffer(t *testing.T) {
	var out recordingWriter
	b := &LineBuffer{W: &out}
	line := strings.Repeat("x", 99) + "\n" // 100 bytes
	for range 100 {
		b.Write([]byte(line))
	}
	b.Flush()
	total := 0
	for i, w := range out.writes {
		if len(w) > lineBufferSize || len(w)%100 != 0 {
			t.Fatalf("write %d: %d bytes: a line was split or the write is too large", i, len(w))
		}
		total += len(w)
	}
	if total != 100*100 || len(out.writes) != 3 {
		t.Errorf("%d bytes in %d writes, want 10000 in 3", total, len(out.writes))
	}
	// A line larger than the buffer goes out on its own, after what was buffered.
	out.writes = nil
	b.Write([]byte("small\n"))
	big := strings.Repeat("y", 5000) + "\n"
	b.Write([]byte(big))
	if len(out.writes) != 2 || out.writes[0] != "small\n" || out.writes[1] != big {
		t.Errorf("writes = %d, want the small line then the big one", len(out.writes))
	}
}

func TestAccessLogBatched(t *testing.T) {
	be := echo(t, "be")
	var sink syncBuffer
	lb := &LineBuffer{W: &sink}
	h := New(Options{MaxBodySize: 1 << 20, EjectionTime: time.Minute, AccessLog: true}, NewMetrics(nil), discard())
	h.UseAccessLogger(slog.New(slog.NewTextHandler(lb, nil)), lb.Flush)
	t.Cleanup(h.Close)
	h.Swap(build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{addrOf(be)}}))
	do(h, "GET", "http://a.test/batched", nil)
	// A single request is a burst of one: flushed at once.
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		return strings.Contains(sink.String(), "/batched"), nil
	}); err != nil {
		t.Errorf("line not flushed: %q", sink.String())
	}
}
