package server

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// endpoint is one listening socket. Its accept loop hands each connection
// to the current generation's http.Server; a settings change starts a new
// generation on the same socket, so no connection is refused meanwhile.
type endpoint struct {
	addr string
	ln   net.Listener
	cur  atomic.Pointer[generation]
	// retired: the endpoint is closing and no generation follows.
	retired atomic.Bool
}

// generation is one http.Server fed by the endpoint's accept loop.
type generation struct {
	srv *http.Server
	ln  *chanListener
	// active counts its open connections; idle closes once it drains to 0.
	active   atomic.Int64
	drain    atomic.Bool
	idle     chan struct{}
	idleOnce sync.Once
}

// The accept loop counts a connection before handing it over (so draining
// never sees 0 while one is on its way); its close or hijack uncounts it.
func (g *generation) connState(c net.Conn, st http.ConnState) {
	if st == http.StateClosed || st == http.StateHijacked {
		g.release()
	}
}

func (g *generation) release() {
	if g.active.Add(-1) == 0 && g.drain.Load() {
		g.idleOnce.Do(func() { close(g.idle) })
	}
}

// draining marks g as retiring; idle closes when no connection is left.
func (g *generation) draining() {
	g.drain.Store(true)
	if g.active.Load() == 0 {
		g.idleOnce.Do(func() { close(g.idle) })
	}
}

func (ep *endpoint) start(s *Server, o Options, isTLS bool) {
	g := &generation{ln: newChanListener(ep.ln.Addr()), idle: make(chan struct{})}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		ConnState: func(c net.Conn, st http.ConnState) {
			g.connState(c, st)
			if s.connState != nil {
				s.connState(c, st)
			}
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	g.srv = srv
	var p http.Protocols
	p.SetHTTP1(true)
	if isTLS {
		p.SetHTTP2(true)
		srv.TLSConfig = s.tls
	} else {
		p.SetUnencryptedHTTP2(true) // gRPC clients without TLS
	}
	srv.Protocols = &p
	ep.cur.Store(g)
	go func() {
		var err error
		if isTLS {
			err = srv.ServeTLS(g.ln, "", "")
		} else {
			err = srv.Serve(g.ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.log.Error("ingress server stopped", "addr", ep.addr, "err", err)
		}
	}()
}

// acceptLoop accepts until the socket is closed.
func (ep *endpoint) acceptLoop(log *slog.Logger) {
	var delay time.Duration
	for {
		conn, err := ep.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			log.Warn("ingress accept", "addr", ep.addr, "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		// A generation replaced between Load and deliver refuses the
		// connection; its successor is already stored, so retry.
		for {
			g := ep.cur.Load()
			g.active.Add(1)
			if g.ln.deliver(conn) {
				break
			}
			g.release()
			if ep.retired.Load() {
				conn.Close()
				break
			}
		}
	}
}

// chanListener is a net.Listener whose connections come from the accept loop.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// deliver hands conn to the server; false if this listener closed first.
func (l *chanListener) deliver(conn net.Conn) bool {
	select {
	case l.conns <- conn:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) close() {
	l.once.Do(func() { close(l.done) })
}

func (l *chanListener) Close() error   { l.close(); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }
