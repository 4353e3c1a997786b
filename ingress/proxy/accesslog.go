package proxy

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// accessEntry is the data of one access log line.
type accessEntry struct {
	remote, method, host, uri, proto string
	status                           int
	bytes                            int64
	duration                         time.Duration
	ingress, service, upstream       string
	upstreamTime                     time.Duration
}

// accessLog writes access log lines on its own goroutine: a slow or
// blocked log sink (a full journal pipe) must never stall requests. When
// the queue is full, lines are dropped and counted.
type accessLog struct {
	log     *slog.Logger
	flush   func() error // after a burst; nil: the logger writes through
	ch      chan accessEntry
	done    chan struct{}
	stop    sync.Once
	dropped atomic.Uint64
	// attrs is write's scratch space (run's goroutine only): the Record
	// copies what it is given.
	attrs []slog.Attr
}

const accessQueue = 8192

func newAccessLog(log *slog.Logger, flush func() error) *accessLog {
	a := &accessLog{log: log, flush: flush, ch: make(chan accessEntry, accessQueue), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *accessLog) add(e accessEntry) {
	select {
	case a.ch <- e:
	default:
		a.dropped.Add(1)
	}
}

func (a *accessLog) close() { a.stop.Do(func() { close(a.done) }) }

func (a *accessLog) run() {
	var reported uint64
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case e := <-a.ch:
			a.write(e)
			if len(a.ch) == 0 && a.flush != nil {
				// The burst is over: out it goes, so a quiet proxy's
				// lines are not held back.
				if err := a.flush(); err != nil {
					a.dropped.Add(1)
				}
			}
		case <-t.C:
			if d := a.dropped.Load(); d > reported {
				a.log.Warn("ingress access log lines dropped: the log sink is slower than the requests", "dropped", d-reported)
				reported = d
			}
		case <-a.done:
			return
		}
	}
}

func (a *accessLog) write(e accessEntry) {
	attrs := append(a.attrs[:0], slog.String("remote", e.remote), slog.String("method", e.method), slog.String("host", e.host),
		slog.String("uri", e.uri), slog.String("proto", e.proto), slog.Int("status", e.status), slog.Int64("bytes", e.bytes),
		slog.Duration("duration", e.duration))
	if e.ingress != "" {
		attrs = append(attrs, slog.String("ingress", e.ingress), slog.String("service", e.service), slog.String("upstream", e.upstream))
	}
	if e.upstreamTime > 0 {
		attrs = append(attrs, slog.Duration("upstream_time", e.upstreamTime))
	}
	a.log.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs...)
	clear(attrs) // hold no request's strings
	a.attrs = attrs[:0]
}

// LineBuffer collects whole log lines (each Write is one record, as slog
// handlers write) and passes them on in writes of at most 4 KiB, never
// splitting a line, so lines of other writers on the same stream cannot
// land inside one. One access log write per burst instead of per request.
type LineBuffer struct {
	W   io.Writer
	buf []byte
}

const lineBufferSize = 4096 // PIPE_BUF: pipe writes up to this size are atomic

func (b *LineBuffer) Write(p []byte) (int, error) {
	if len(b.buf)+len(p) > lineBufferSize {
		if err := b.Flush(); err != nil {
			return 0, err
		}
	}
	if len(p) >= lineBufferSize {
		return b.W.Write(p)
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes what is buffered.
func (b *LineBuffer) Flush() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.W.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}
