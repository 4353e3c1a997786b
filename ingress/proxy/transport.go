package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nodenet/nodenet/ingress/annotations"
)

// transports returns one tuned net/http transport per backend protocol.
// Upstream connections are kept alive and reused generously: pods are few
// and near.
func transports() map[string]*http.Transport {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		timeout := DefaultConnectTimeout
		if c, ok := ctx.Value(callKey{}).(*call); ok {
			timeout = c.connect
		}
		d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
		return d.DialContext(ctx, network, addr)
	}
	mk := func(p func(*http.Protocols), tlsCfg *tls.Config) *http.Transport {
		var protos http.Protocols
		p(&protos)
		return &http.Transport{
			DialContext:         dial,
			Protocols:           &protos,
			TLSClientConfig:     tlsCfg,
			MaxIdleConns:        0, // no global limit
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
			// Pass Accept-Encoding and bodies through untouched.
			DisableCompression:    true,
			ExpectContinueTimeout: time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ReadBufferSize:        32 << 10,
			WriteBufferSize:       32 << 10,
		}
	}
	// Backends serve self-signed or cluster-internal certificates; like
	// ingress-nginx (proxy-ssl-verify off by default) they are not verified.
	insecure := func(next ...string) *tls.Config {
		return &tls.Config{InsecureSkipVerify: true, NextProtos: next} //nolint:gosec // see above
	}
	return map[string]*http.Transport{
		annotations.HTTP:  mk(func(p *http.Protocols) { p.SetHTTP1(true) }, nil),
		annotations.HTTPS: mk(func(p *http.Protocols) { p.SetHTTP1(true) }, insecure()),
		annotations.GRPC:  mk(func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }, nil),
		annotations.H2C:   mk(func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }, nil),
		annotations.GRPCS: mk(func(p *http.Protocols) { p.SetHTTP2(true) }, insecure("h2")),
	}
}

// retryTransport sends a call to its upstream and, when no connection could
// be made, ejects that upstream and tries another (idempotent requests
// without a body only).
type retryTransport struct {
	h    *Handler
	next http.RoundTripper
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c, ok := req.Context().Value(callKey{}).(*call)
	if !ok {
		return t.next.RoundTrip(req)
	}
	for {
		start := time.Now()
		c.sent = start
		resp, err := t.next.RoundTrip(req)
		if err == nil {
			c.upTime = time.Since(start)
			c.status = resp.StatusCode
			return resp, nil
		}
		c.errCode = 0
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && req.Context().Err() == nil {
			c.errCode = http.StatusGatewayTimeout // as nginx: a timeout is 504, a failure 502
		}
		if !connectFailure(err) || req.Context().Err() != nil {
			return nil, err
		}
		// Connection failed: this endpoint sits out ejection_time.
		c.up.ejectedUntil.Store(nowNano() + int64(c.opts.EjectionTime))
		t.h.log.Warn("ingress endpoint ejected", "upstream", c.up.addr, "for", c.opts.EjectionTime, "err", err)
		if !c.retry || c.ntried >= maxTries {
			return nil, err
		}
		next := c.bal.pick(c.opts.LeastRequests, nowNano(), c.tried[:c.ntried])
		if next == nil {
			return nil, err
		}
		c.up.inflight.Add(-1)
		next.inflight.Add(1)
		c.up = next
		c.tried[c.ntried] = next
		c.ntried++
		req.URL.Host = next.addr
	}
}

// timeoutTransport enforces the read and send timeouts around net/http's
// Transport, which has no per-request pause timeouts: a watchdog cancels
// the request when neither body moves for that long.
type timeoutTransport struct {
	next http.RoundTripper
}

// errUpstreamTimeout is what a fired watchdog turns the cancellation into.
var errUpstreamTimeout = &timeoutError{}

type timeoutError struct{}

func (*timeoutError) Error() string   { return "upstream timed out" }
func (*timeoutError) Timeout() bool   { return true }
func (*timeoutError) Temporary() bool { return true }

func (t *timeoutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c, ok := req.Context().Value(callKey{}).(*call)
	if !ok {
		return t.next.RoundTrip(req)
	}
	ctx, cancel := context.WithCancel(req.Context())
	wd := newWatchdog(c.read, cancel) // waiting for the response counts as reading
	req = req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		wd.reset(c.send)
		req.Body = &kickReader{ReadCloser: req.Body, wd: wd, send: c.send, read: c.read}
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		wd.stop()
		cancel()
		if wd.fired() {
			return nil, errUpstreamTimeout
		}
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusSwitchingProtocols:
		wd.stop() // an upgraded connection lives as long as its peers want
	case resp.Body != nil && resp.Body != http.NoBody:
		wd.reset(c.read)
		resp.Body = &watchedBody{ReadCloser: resp.Body, wd: wd, d: c.read, cancel: cancel}
	default:
		wd.stop()
		cancel()
	}
	return resp, nil
}

// connectFailure reports whether err means no connection was made, so the
// request never reached the upstream.
func connectFailure(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// watchdog cancels a call when no progress is made for its timeout.
type watchdog struct {
	cancel func()

	mu      sync.Mutex // guards the fields below
	t       *time.Timer
	stopped bool
	expired bool
}

func newWatchdog(d time.Duration, cancel func()) *watchdog {
	w := &watchdog{cancel: cancel}
	w.mu.Lock()
	w.t = time.AfterFunc(d, w.expire)
	w.mu.Unlock()
	return w
}

func (w *watchdog) expire() {
	w.mu.Lock()
	stopped := w.stopped
	w.expired = !stopped
	w.mu.Unlock()
	if !stopped {
		w.cancel()
	}
}

// reset restarts the timeout with d, unless stopped or expired.
func (w *watchdog) reset(d time.Duration) {
	w.mu.Lock()
	if !w.stopped && !w.expired {
		w.t.Reset(d)
	}
	w.mu.Unlock()
}

func (w *watchdog) stop() {
	w.mu.Lock()
	w.stopped = true
	w.t.Stop()
	w.mu.Unlock()
}

func (w *watchdog) fired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.expired
}

// kickReader restarts the send timeout on every read of the request body;
// once it is all sent, the read timeout runs until the response.
type kickReader struct {
	io.ReadCloser
	wd         *watchdog
	send, read time.Duration
}

func (k *kickReader) Read(p []byte) (int, error) {
	n, err := k.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		k.wd.reset(k.read)
	case n > 0:
		k.wd.reset(k.send)
	}
	return n, err
}

// watchedBody restarts the read timeout on every read of the response.
type watchedBody struct {
	io.ReadCloser
	wd     *watchdog
	d      time.Duration
	cancel func()
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.wd.reset(b.d)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.wd.stop()
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
