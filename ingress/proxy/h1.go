package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"
)

// h1Transport sends plain HTTP/1.1 requests on the handler's own
// goroutine over kept-alive connections pooled per upstream. net/http's
// Transport hands every request to two goroutines of its own (a writer
// and a reader) and back through channels; for a proxy whose upstreams
// are a few pods away, those hand-offs were a large share of the CPU per
// request. Timeouts are socket deadlines instead of timers and contexts.
// Upgrades go through net/http's Transport (fallback), which owns the
// connection hand-over they need.
type h1Transport struct {
	fallback http.RoundTripper
}

// idlePerUpstream bounds the kept-alive connections of one upstream.
const idlePerUpstream = 256

// pconn is one upstream connection.
type pconn struct {
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	// The deadlines set on conn. Renewing costs a timer update, so they
	// are renewed only when they are off by more than a little slack: on a
	// busy connection, rarely.
	rd, wd time.Time
	// dw is bw's writer, reset by each exchange (which owns pc meanwhile).
	dw deadlineWriter
	// interrupt unblocks I/O on conn (made once, not per request).
	interrupt func()
}

// renewSlack is how much earlier than the timeout a deadline may fire.
func renewSlack(d time.Duration) time.Duration { return min(d/20, 50*time.Millisecond) }

// within reports whether a deadline lies in [now+d-slack, now+d]: close
// enough to a fresh one. Later counts as wrong too: the connection may
// have served a route with a longer timeout.
func within(deadline, now time.Time, d time.Duration) bool {
	left := deadline.Sub(now)
	return left <= d && left >= d-renewSlack(d)
}

func (pc *pconn) readWithin(now time.Time, d time.Duration) {
	if !within(pc.rd, now, d) {
		pc.rd = now.Add(d)
		pc.conn.SetReadDeadline(pc.rd)
	}
}

func (pc *pconn) writeWithin(now time.Time, d time.Duration) {
	if !within(pc.wd, now, d) {
		pc.wd = now.Add(d)
		pc.conn.SetWriteDeadline(pc.wd)
	}
}

// checkAfter: a connection idle longer than this is checked for a close
// by the upstream before it is used again. Upstreams close idle
// connections after seconds (Node.js: 5s); one reused within a second is
// trusted, so a busy proxy pays no extra system call.
const checkAfter = time.Second

// now may be a few µs old.
func (u *upstream) getConn(now time.Time) *pconn {
	idle := u.idle.Load()
	if idle == nil {
		return nil
	}
	for {
		select {
		case pc := <-*idle:
			if now.Sub(pc.idleSince) < checkAfter || alive(pc.conn) {
				return pc
			}
			pc.conn.Close()
		default:
			return nil
		}
	}
}

func (u *upstream) putConn(pc *pconn) {
	pc.idleSince = time.Now()
	idle := u.idle.Load()
	if idle == nil {
		ch := make(chan *pconn, idlePerUpstream)
		u.idle.CompareAndSwap(nil, &ch) // or another request made it first
		idle = u.idle.Load()
	}
	select {
	case *idle <- pc:
	default:
		pc.conn.Close()
	}
}

// alive peeks at an idle connection without blocking: nothing to read
// means open; end of stream, an error or unexpected data mean unusable.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var buf [1]byte
	err = raw.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = errors.Is(rerr, syscall.EAGAIN)
		return true // never wait
	})
	return err == nil && ok
}

// closeIdle closes the kept-alive connections (upstream gone, shutdown).
func (u *upstream) closeIdle() {
	idle := u.idle.Load()
	if idle == nil {
		return
	}
	for {
		select {
		case pc := <-*idle:
			pc.conn.Close()
		default:
			return
		}
	}
}

// aLongTimeAgo is a deadline that has passed: it interrupts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	c, ok := req.Context().Value(callKey{}).(*call)
	if !ok || req.Header.Get("Upgrade") != "" {
		return t.fallback.RoundTrip(req)
	}
	for attempt := 0; ; attempt++ {
		var pc *pconn
		if attempt == 0 {
			now := c.sent // saves a clock read
			if now.IsZero() {
				now = time.Now()
			}
			pc = c.up.getConn(now)
		}
		reused := pc != nil
		if pc == nil {
			conn, err := (&net.Dialer{Timeout: c.connect, KeepAlive: 30 * time.Second}).DialContext(req.Context(), "tcp", c.up.addr)
			if err != nil {
				return nil, err
			}
			pc, reused = newPconn(conn), false
		}
		resp, err := t.exchange(pc, req, c)
		if err == nil {
			return resp, nil
		}
		pc.conn.Close()
		// A kept-alive connection the upstream closed while it was idle
		// fails before the request reached anyone: send it again on a
		// new connection, if it is idempotent without a body (whether the
		// upstream saw it cannot be told).
		if reused && staleConn(err) {
			// Its siblings idled as long: likely closed too (say, the
			// upstream is shutting down).
			c.up.closeIdle()
			if c.retry && attempt == 0 && req.Context().Err() == nil {
				continue
			}
		}
		return nil, err
	}
}

func newPconn(conn net.Conn) *pconn {
	pc := &pconn{conn: conn, br: bufio.NewReaderSize(conn, 16<<10)}
	pc.bw = bufio.NewWriterSize(&pc.dw, 8<<10)
	pc.interrupt = func() { conn.SetDeadline(aLongTimeAgo) }
	return pc
}

func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// exchange writes req and reads the response head on pc.
func (t *h1Transport) exchange(pc *pconn, req *http.Request, c *call) (*http.Response, error) {
	// A client that goes away interrupts whatever is blocked.
	stop := context.AfterFunc(req.Context(), pc.interrupt)
	w := &pc.dw
	*w = deadlineWriter{pc: pc, d: c.send}
	pc.bw.Reset(w)
	var body *bodyReader
	if req.Body != nil && req.Body != http.NoBody {
		body = &bodyReader{ReadCloser: req.Body}
		req.Body = body
	}
	if err := req.Write(pc.bw); err != nil {
		stop()
		if body != nil && body.err != nil {
			return nil, body.err // the client's side failed (say, too large): not the upstream's
		}
		if w.err != nil {
			// Request.Write hides a write error met while copying the
			// body behind an unwrappable type: report the upstream's own,
			// so that a send timeout reads as a timeout (504).
			return nil, w.err
		}
		return nil, err
	}
	if err := pc.bw.Flush(); err != nil {
		stop()
		return nil, err
	}
	pc.readWithin(time.Now(), c.read)
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			stop()
			return nil, err
		}
		// 1xx other than 101 are interim: the final answer follows.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	keep := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols
	b := &h1Body{rc: resp.Body, pc: pc, up: c.up, keep: keep, stop: stop, read: c.read,
		identity: resp.ContentLength >= 0 && len(resp.TransferEncoding) == 0}
	if resp.Body == http.NoBody {
		b.done(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// bodyReader keeps the error of reading the client's body, which
// Request.Write hides behind an unwrappable type.
type bodyReader struct {
	io.ReadCloser
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// deadlineWriter renews the write deadline before each write: the send
// timeout bounds a pause, not the whole upload.
type deadlineWriter struct {
	pc  *pconn
	d   time.Duration
	err error // the first write error
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.pc.writeWithin(time.Now(), w.d)
	n, err := w.pc.conn.Write(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// h1Body is a response body; read to its end on a reusable connection,
// it puts the connection back into the pool.
type h1Body struct {
	rc   io.ReadCloser
	pc   *pconn
	up   *upstream
	keep bool
	stop func() bool
	read time.Duration
	// identity: a Content-Length body, whose Read reads the socket only
	// when nothing is buffered (chunked bodies may read past the buffer).
	identity bool
	finished atomic.Bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.finished.Load() { // the connection may serve another request now
		return 0, io.EOF
	}
	// The read timeout bounds a pause, not the whole body. A read served
	// from the buffer cannot pause: no clock read for it.
	if !b.identity || b.pc.br.Buffered() == 0 {
		b.pc.readWithin(time.Now(), b.read)
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.done(true)
	}
	return n, err
}

func (b *h1Body) Close() error {
	b.done(false)
	return nil
}

// done releases the connection: back to the pool after a complete body,
// closed otherwise.
func (b *h1Body) done(complete bool) {
	if !b.finished.CompareAndSwap(false, true) {
		return
	}
	// A cancellation that already fired may have poisoned the deadline.
	if !b.stop() {
		complete = false
	}
	if complete && b.keep {
		// Deadlines stay: the next exchange sets both before any I/O.
		b.up.putConn(b.pc)
		return
	}
	b.pc.conn.Close()
}
