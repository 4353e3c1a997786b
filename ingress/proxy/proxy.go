// Package proxy is the ingress http.Handler: it matches each request
// against the current route table (swapped atomically, so a change never
// touches a request in flight), applies the route's annotations (source
// ranges, redirects, body size, canary, cookie affinity, rewrite) and
// reverse-proxies to a pod endpoint picked round-robin or by least requests,
// skipping endpoints that recently failed and retrying idempotent requests
// on another endpoint when a connection cannot be made.
package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nodenet/nodenet/ingress/annotations"
	"github.com/nodenet/nodenet/ingress/routes"
)

// Defaults of the per-Ingress timeouts, as ingress-nginx's.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultReadTimeout    = 60 * time.Second
	DefaultSendTimeout    = 60 * time.Second
)

// maxTries bounds the endpoints one idempotent request tries.
const maxTries = 3

// Options are the handler settings that config reloads may change.
type Options struct {
	LeastRequests bool
	MaxBodySize   int64 // bytes, 0 unlimited; proxy-body-size overrides
	EjectionTime  time.Duration
	AccessLog     bool
	// HTTPSPort is the port redirects to HTTPS name (443 is left out).
	HTTPSPort int
}

// Handler is the ingress reverse proxy.
type Handler struct {
	log     *slog.Logger
	metrics *Metrics
	pool    *pool
	state   atomic.Pointer[state]
	opts    atomic.Pointer[Options]
	proxies map[string]*httputil.ReverseProxy // by backend protocol
	access  *accessLog
	closers []func()
	// reverseProxyOnly turns serveH1 off (tests compare the two).
	reverseProxyOnly bool
}

// New returns a handler serving an empty table.
func New(o Options, m *Metrics, log *slog.Logger) *Handler {
	h := &Handler{log: log, metrics: m, pool: newPool(), proxies: map[string]*httputil.ReverseProxy{}, access: newAccessLog(log, nil)}
	h.opts.Store(&o)
	h.Swap(routes.Empty())
	for proto, tr := range transports() {
		h.closers = append(h.closers, tr.CloseIdleConnections)
		var rt http.RoundTripper = &timeoutTransport{next: tr}
		if proto == annotations.HTTP {
			// The hot path: plain HTTP/1.1 on the handler's goroutine.
			rt = &h1Transport{fallback: rt}
		}
		flush := time.Duration(0)
		if proto == annotations.GRPC || proto == annotations.GRPCS || proto == annotations.H2C {
			flush = -1 // streams: every frame goes out at once
		}
		h.proxies[proto] = &httputil.ReverseProxy{Rewrite: rewrite, Transport: &retryTransport{h: h, next: rt}, FlushInterval: flush,
			BufferPool: buffers, ErrorHandler: h.proxyError, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	}
	h.closers = append(h.closers, h.pool.closeIdle, func() { h.access.close() })
	return h
}

// UseAccessLogger sends access log lines to l instead of the handler's
// logger, calling flush after each burst (see LineBuffer). Call it before
// serving.
func (h *Handler) UseAccessLogger(l *slog.Logger, flush func() error) {
	h.access.close()
	h.access = newAccessLog(l, flush)
}

// Swap publishes a new route table; requests already matched finish on the
// table they matched.
func (h *Handler) Swap(t *routes.Table) {
	h.state.Store(h.pool.link(t, h.metrics))
}

// Table returns the table being served.
func (h *Handler) Table() *routes.Table { return h.state.Load().table }

// SetOptions applies reloaded settings to the following requests.
func (h *Handler) SetOptions(o Options) { h.opts.Store(&o) }

// Close closes idle upstream connections and stops the access log.
func (h *Handler) Close() {
	for _, c := range h.closers {
		c()
	}
}

// call is one request's proxying state, shared with the transport through
// the request context: the call is that context, the request's own with
// the call as the value of callKey (one allocation fewer than WithValue).
type call struct {
	context.Context
	route   *routes.Route
	backend *routes.Backend
	bal     *balancer
	stats   *stats
	up      *upstream
	tried   [maxTries]*upstream
	ntried  int
	retry   bool // idempotent without body: may go to another endpoint
	opts    *Options
	status  int // upstream status
	upTime  time.Duration
	connect time.Duration
	read    time.Duration
	send    time.Duration
	sent    time.Time     // when the current try went upstream (retryTransport)
	url     url.URL       // the upstream request's (serveH1)
	errCode int           // set by the transport for the error handler
	rawBody io.ReadCloser // the request body as the server gave it, for lingering
}

type callKey struct{}

// Value is context.WithValue's for callKey.
func (c *call) Value(key any) any {
	if key == (callKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// served is what one request allocates: its recorder and its call, in one.
type served struct {
	rec recorder
	c   call
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	opts := h.opts.Load()
	st := h.state.Load()
	sv := &served{rec: recorder{ResponseWriter: w}}
	rec := &sv.rec
	var c *call
	switch route := st.table.Match(r.Host, r.URL.Path); {
	case r.Method == http.MethodConnect: // a reverse proxy is no tunnel
		http.Error(rec, "405 method not allowed", http.StatusMethodNotAllowed)
	case route == nil:
		http.NotFound(rec, r)
	default:
		c = &sv.c
		c.route, c.opts = route, opts
		h.serve(rec, r, st.links[route], c, start)
	}
	h.finish(rec, r, c, st, start)
}

func (h *Handler) serve(w *recorder, r *http.Request, l *link, c *call, start time.Time) {
	s := &c.route.Settings
	if len(s.SourceRanges) > 0 && !allowed(s.SourceRanges, r.RemoteAddr) {
		c.stats = l.stats
		http.Error(w, "403 forbidden", http.StatusForbidden)
		return
	}
	if r.TLS == nil && (s.ForceSSLRedirect || (s.SSLRedirect && c.route.TLS)) {
		c.stats = l.stats
		http.Redirect(w, r, httpsURL(r, c.opts.HTTPSPort), http.StatusPermanentRedirect)
		return
	}
	c.rawBody = r.Body
	limit := c.opts.MaxBodySize
	if s.BodySize >= 0 {
		limit = s.BodySize
	}
	if limit > 0 {
		if r.ContentLength > limit {
			c.stats = l.stats
			var body io.Reader = r.Body
			if strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
				body = nil // the client waits for our word before sending
			}
			tooLarge(w, body)
			return
		}
		if r.ContentLength < 0 {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
	}

	c.bal, c.stats, c.backend = l.bal, l.stats, c.route.Backend
	if cn := c.route.Canary; cn != nil && l.canaryBal.size() > 0 && useCanary(cn, r) {
		c.bal, c.stats, c.backend = l.canaryBal, l.canaryStats, cn.Backend
	}
	now := start.UnixNano() // a few µs old: no matter to ejections
	affinity := s.Affinity == "cookie"
	if affinity {
		if ck, err := r.Cookie(s.SessionCookieName); err == nil {
			c.up = c.bal.byID(ck.Value, now)
		}
	}
	if c.up == nil {
		c.up = c.bal.pick(c.opts.LeastRequests, now, nil)
		if c.up == nil {
			http.Error(w, "503 service unavailable: no endpoints", http.StatusServiceUnavailable)
			return
		}
		if affinity {
			http.SetCookie(w, &http.Cookie{Name: s.SessionCookieName, Value: c.up.id, Path: cookiePath(c.route), HttpOnly: true})
		}
	}
	c.tried[0], c.ntried = c.up, 1
	c.up.inflight.Add(1)
	defer func() { c.up.inflight.Add(-1) }()
	c.retry = idempotent(r.Method) && (r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0)
	c.connect, c.read, c.send = orDefault(s.ConnectTimeout, DefaultConnectTimeout), orDefault(s.ReadTimeout, DefaultReadTimeout), orDefault(s.SendTimeout, DefaultSendTimeout)

	rp := h.proxies[c.backend.Protocol]
	// The handler owns r; the proxy copies its (rewritten) path, and
	// rewrite() finds the chosen upstream through the context.
	r.URL.Path = c.route.Rewrite(r.URL.Path)
	r.URL.RawPath = ""
	c.Context = r.Context()
	if c.backend.Protocol == annotations.HTTP && !h.reverseProxyOnly && h1Eligible(r) {
		h.serveH1(rp, w, r, c)
		return
	}
	rp.ServeHTTP(w, r.WithContext(c))
}

func useCanary(cn *routes.Canary, r *http.Request) bool {
	if cn.Header != "" {
		v := r.Header.Get(cn.Header)
		if cn.HeaderValue != "" {
			if v == cn.HeaderValue {
				return true
			}
		} else {
			switch v {
			case "always":
				return true
			case "never":
				return false
			}
		}
	}
	return canaryRoll(cn.Weight, cn.WeightTotal)
}

// rewrite builds the upstream request: endpoint address, forwarded headers.
// The client's Host header is kept, as ingress-nginx does.
func rewrite(pr *httputil.ProxyRequest) {
	rewriteCall(pr, pr.In.Context().Value(callKey{}).(*call))
}

func rewriteCall(pr *httputil.ProxyRequest, c *call) {
	pr.Out.URL.Scheme = "http"
	if p := c.backend.Protocol; p == annotations.HTTPS || p == annotations.GRPCS {
		pr.Out.URL.Scheme = "https"
	}
	pr.Out.URL.Host = c.up.addr
	// Client-sent X-Forwarded-* are not trusted: the client is who connected.
	ip, _, err := net.SplitHostPort(pr.In.RemoteAddr)
	hdr := pr.Out.Header
	if err != nil || len(hdr["X-Forwarded-For"]) > 0 {
		// Not the usual case (the proxy removed the client's): as it is.
		pr.SetXForwarded()
		hdr.Set("X-Real-IP", ip)
		hdr.Set("Forwarded", forwarded(ip, pr.In))
		return
	}
	// What SetXForwarded and Header.Set do, with one backing array for
	// the values.
	proto := "http"
	if pr.In.TLS != nil {
		proto = "https"
	}
	vals := []string{ip, pr.In.Host, proto, ip, forwarded(ip, pr.In)}
	hdr["X-Forwarded-For"] = vals[0:1:1]
	hdr["X-Forwarded-Host"] = vals[1:2:2]
	hdr["X-Forwarded-Proto"] = vals[2:3:3]
	hdr["X-Real-Ip"] = vals[3:4:4]
	hdr["Forwarded"] = vals[4:5:5]
}

// forwarded renders RFC 7239's Forwarded header for the client; built on
// the stack, it takes one allocation (the string) for usual hosts.
func forwarded(ip string, r *http.Request) string {
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	var arr [160]byte
	b := append(arr[:0], "for="...)
	if strings.IndexByte(ip, ':') >= 0 {
		b = append(append(append(b, `"[`...), ip...), `]"`...)
	} else {
		b = append(b, ip...)
	}
	b = strconv.AppendQuote(append(b, ";host="...), r.Host)
	b = append(append(b, ";proto="...), proto...)
	return string(b)
}

func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	c, _ := r.Context().Value(callKey{}).(*call)
	code := http.StatusBadGateway
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		if c != nil && c.rawBody != nil {
			tooLarge(w, c.rawBody)
			return
		}
		code = http.StatusRequestEntityTooLarge
	case r.Context().Err() != nil:
		code = 499 // the client went away (nginx's code); nothing is written
	case c != nil && c.errCode != 0:
		code = c.errCode
	}
	h.log.Debug("ingress upstream error", "host", r.Host, "path", r.URL.Path, "upstream", upstreamAddr(c), "code", code, "err", err)
	if code == 499 {
		w.WriteHeader(code)
		return
	}
	if c != nil && c.rawBody != nil && r.ContentLength != 0 {
		// The upstream failed while the client may still be sending
		// (a send timeout, say): answer, then drain, as after a 413.
		lingerAnswer(w, code, c.rawBody)
		return
	}
	http.Error(w, strconv.Itoa(code)+" "+http.StatusText(code), code)
}

func upstreamAddr(c *call) string {
	if c == nil || c.up == nil {
		return ""
	}
	return c.up.addr
}

func (h *Handler) finish(rec *recorder, r *http.Request, c *call, st *state, start time.Time) {
	code := rec.status
	if code == 0 && c != nil {
		code = c.status // an upgrade: the proxy wrote the response itself
	}
	elapsed := time.Since(start)
	var s *stats
	if c != nil {
		s = c.stats
	}
	if s == nil {
		s = st.notFound
	}
	s.count(code)
	s.duration.Observe(elapsed.Seconds())
	if c != nil && c.upTime > 0 {
		s.upstream.Observe(c.upTime.Seconds())
	}
	if !h.opts.Load().AccessLog {
		return
	}
	e := accessEntry{remote: r.RemoteAddr, method: r.Method, host: r.Host, uri: r.RequestURI, proto: r.Proto,
		status: code, bytes: rec.bytes, duration: elapsed}
	if c != nil {
		e.ingress, e.service, e.upstream, e.upstreamTime = c.route.Ingress, s.key.service, upstreamAddr(c), c.upTime
	}
	h.access.add(e)
}

// buffers recycles the response copy buffers; without a pool the reverse
// proxy allocates 32 KiB per request, most of its garbage.
var buffers = &bufferPool{sync.Pool{New: func() any { return new([32 << 10]byte) }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte { return b.p.Get().(*[32 << 10]byte)[:] }
func (b *bufferPool) Put(buf []byte) {
	if cap(buf) == 32<<10 {
		b.p.Put((*[32 << 10]byte)(buf[:32<<10]))
	}
}

// Lingering after a 413, as nginx's lingering_close: the client is
// probably still sending; closing at once would reset the connection and
// the client could lose the answer.
const (
	lingerTime = 5 * time.Second
	lingerMax  = 64 << 20
)

// tooLarge answers 413, then reads and discards what the client still sends
// (bounded) before the connection closes.
func tooLarge(w http.ResponseWriter, body io.Reader) {
	lingerAnswer(w, http.StatusRequestEntityTooLarge, body)
}

// lingerAnswer answers code on a connection that closes afterwards, then
// reads and discards what the client still sends of body (bounded), so
// that the client reads the answer instead of a reset.
func lingerAnswer(w http.ResponseWriter, code int, body io.Reader) {
	rc := http.NewResponseController(w)
	_ = rc.EnableFullDuplex() // HTTP/1: read the body after answering
	w.Header().Set("Connection", "close")
	http.Error(w, strconv.Itoa(code)+" "+strings.ToLower(http.StatusText(code)), code)
	if rc.Flush() != nil || body == nil {
		return
	}
	_ = rc.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.CopyN(io.Discard, body, lingerMax)
}

func allowed(ranges []netip.Prefix, remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range ranges {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func httpsURL(r *http.Request, port int) string {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
		if strings.IndexByte(h, ':') >= 0 {
			host = "[" + h + "]"
		}
	}
	if port != 0 && port != 443 {
		host = net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))
	}
	return "https://" + host + r.URL.RequestURI()
}

func cookiePath(r *routes.Route) string {
	if r.PathType == routes.Regex || r.Path == "" {
		return "/"
	}
	return r.Path
}

func idempotent(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// recorder notes the status and size of the response for logs and metrics.
// Unwrap lets http.ResponseController reach Flush and Hijack (upgrades).
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
