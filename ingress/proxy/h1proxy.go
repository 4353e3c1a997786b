package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// serveH1 does what httputil.ReverseProxy.ServeHTTP does (with rewrite,
// our retry and h1 transports, buffers and proxyError), for the requests
// the hot path sees: no body or one of known length, no protocol upgrade,
// a query ReverseProxy
// would pass as it is (see h1Eligible). It skips the work our h1
// transport has no use for: the client trace (h1Transport does not report
// 1xx), a second request copy for it, cloning headers and then deleting
// the hop-by-hop ones (they are left out of the copy instead), and parsing
// every response's Content-Type. TestH1FastPathSameAsReverseProxy keeps
// the two paths byte for byte the same.
func (h *Handler) serveH1(rp *httputil.ReverseProxy, w http.ResponseWriter, r *http.Request, c *call) {
	// The outgoing request: ReverseProxy's req.Clone with Close false and
	// Body nil when there is none.
	out := r.WithContext(c)
	c.url = *r.URL
	if r.URL.User != nil {
		u := *r.URL.User
		c.url.User = &u
	}
	out.URL = &c.url
	out.Header = outHeader(r.Header)
	out.Body = nil
	if r.ContentLength != 0 {
		// The transport closes the body it sent; the server's must stay
		// open (ReverseProxy's noopCloseReader).
		body := &keepOpenBody{rc: r.Body}
		out.Body = body
		defer body.Close()
	}
	out.Close = false
	if hasToken(r.Header["Te"], "trailers") {
		out.Header["Te"] = []string{"trailers"}
	}
	pr := httputil.ProxyRequest{In: r, Out: out}
	rewriteCall(&pr, c)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = noUserAgent
	}

	res, err := rp.Transport.RoundTrip(out)
	if err != nil {
		h.proxyError(w, out, err)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// None was asked for: ReverseProxy's answers to that.
		up := ""
		if hasToken(res.Header["Connection"], "upgrade") {
			up = res.Header.Get("Upgrade")
		}
		switch {
		case !isPrint(up):
			err = fmt.Errorf("backend tried to switch to invalid protocol %q", up)
		case up != "":
			err = fmt.Errorf("backend tried to switch protocol %q when %q was requested", up, "")
		default:
			err = fmt.Errorf("internal error: 101 switching protocols response with non-writable body")
		}
		h.proxyError(w, out, err)
		return
	}
	removeHopByHop(res.Header)
	copyHeader(w.Header(), res.Header)
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		w.Header().Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(res.StatusCode)
	if err := copyResponse(rp, w, res); err != nil {
		defer res.Body.Close()
		if r.Context().Value(http.ServerContextKey) == nil {
			rp.ErrorLog.Printf("suppressing panic for copyResponse error in test; copy error: %v", err)
			return
		}
		panic(http.ErrAbortHandler) // as ReverseProxy: abort the response
	}
	res.Body.Close() // now, to fill res.Trailer
	if len(res.Trailer) > 0 {
		// Chunked, so that net/http does not add a Content-Length.
		http.NewResponseController(w).Flush()
	}
	if len(res.Trailer) == announced {
		copyHeader(w.Header(), res.Trailer)
		return
	}
	for k, vv := range res.Trailer {
		k = http.TrailerPrefix + k
		for _, v := range vv {
			w.Header().Add(k, v)
		}
	}
}

// h1Eligible reports whether serveH1 handles r exactly as ReverseProxy
// would; the rest goes through ReverseProxy.
func h1Eligible(r *http.Request) bool {
	return r.ContentLength >= 0 && r.TransferEncoding == nil && r.Trailer == nil && !hasToken(r.Header["Connection"], "upgrade") && queryAsIs(r.URL.RawQuery)
}

// keepOpenBody is ReverseProxy's noopCloseReader: Close stops reads
// without closing the server's body.
type keepOpenBody struct {
	rc     io.ReadCloser
	closed atomic.Bool
}

func (b *keepOpenBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errors.New("ReverseProxy does an invalid Read on closed Body")
	}
	return b.rc.Read(p)
}

func (b *keepOpenBody) Close() error {
	b.closed.Store(true)
	return nil
}

// noUserAgent keeps the transport from sending Go's User-Agent, as
// ReverseProxy does; shared (cap 1: an Add copies, nothing writes in place).
var noUserAgent = []string{""}

// hopHeaders are the hop-by-hop headers ReverseProxy removes both ways.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// outDropped: the request headers ReverseProxy (with Rewrite) does not
// pass on: hop-by-hop ones and the client's forwarding headers.
func outDropped(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return true
	}
	return false
}

// outHeader copies in as Header.Clone does (one backing array for the
// values), leaving out what ReverseProxy would delete from the clone.
func outHeader(in http.Header) http.Header {
	var named []string // the headers the Connection header names
	for _, f := range in["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				named = append(named, http.CanonicalHeaderKey(sf))
			}
		}
	}
	nv := 0
	for _, vv := range in {
		nv += len(vv)
	}
	sv := make([]string, nv)
	out := make(http.Header, len(in)+6) // room for the forwarding headers
	for k, vv := range in {
		if outDropped(k) || slices.Contains(named, k) {
			continue
		}
		if vv == nil {
			out[k] = nil
			continue
		}
		n := copy(sv, vv)
		out[k] = sv[:n:n]
		sv = sv[n:]
	}
	return out
}

// removeHopByHop is ReverseProxy's removal of hop-by-hop headers from a
// response.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, f := range hopHeaders {
		delete(h, f) // canonical already: Del without the canonicalizing
	}
}

func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		for _, v := range vv {
			dst.Add(k, v)
		}
	}
}

// hasToken reports whether a comma-separated list in vals holds token
// (ASCII, lower case), as httpguts.HeaderValuesContainsToken.
func hasToken(vals []string, token string) bool {
	for _, v := range vals {
		for t := range strings.SplitSeq(v, ",") {
			if asciiEqualFold(strings.Trim(t, " \t"), token) {
				return true
			}
		}
	}
	return false
}

// asciiEqualFold compares s with lower, an ASCII lower-case string,
// ignoring ASCII case only.
func asciiEqualFold(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if b != lower[i] {
			return false
		}
	}
	return true
}

func isPrint(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// plainQueries: ReverseProxy passes a well-formed query as it is, unless
// GODEBUG urlmaxqueryparams is set (then it re-encodes every query).
var plainQueries = func() bool {
	if strings.Contains(os.Getenv("GODEBUG"), "urlmaxqueryparams") {
		return false
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "DefaultGODEBUG" && strings.Contains(s.Value, "urlmaxqueryparams") {
			return false
		}
	}
	return true
}()

// maxQueryParams is ReverseProxy's limit: more get re-encoded.
const maxQueryParams = 10000

// queryAsIs reports whether ReverseProxy's query cleaning (Rewrite mode)
// leaves q as it is: no ';', no bad escape, not too many parameters.
func queryAsIs(q string) bool {
	if q == "" {
		return true
	}
	if !plainQueries || strings.Count(q, "&")+1 > maxQueryParams {
		return false
	}
	for i := 0; i < len(q); {
		switch q[i] {
		case ';':
			return false
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return false
			}
			i += 3
		default:
			i++
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// copyResponse is ReverseProxy's: streams (no length, or server-sent
// events) are flushed at once, the rest when the handler returns.
func copyResponse(rp *httputil.ReverseProxy, w http.ResponseWriter, res *http.Response) error {
	var dst io.Writer = w
	if streaming(res) {
		f := &flushingWriter{dst: w, flush: http.NewResponseController(w).Flush, pending: true}
		defer f.stop()
		// The headers go out at once even if the body takes its time.
		f.t = time.AfterFunc(-1, f.delayedFlush)
		dst = f
	}
	buf := buffers.Get()
	defer buffers.Put(buf)
	for {
		nr, rerr := res.Body.Read(buf)
		if rerr != nil && rerr != io.EOF && rerr != context.Canceled {
			rp.ErrorLog.Printf("httputil: ReverseProxy read error during body copy: %v", rerr)
		}
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			if werr != nil {
				return werr
			}
			if nr != nw {
				return io.ErrShortWrite
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil
			}
			return rerr
		}
	}
}

// streaming is ReverseProxy's flushInterval < 0 (ours is 0 for HTTP).
func streaming(res *http.Response) bool {
	// Parsing only what may be text/event-stream: most types cannot.
	if ct := res.Header.Get("Content-Type"); containsFold(ct, "event-stream") {
		if base, _, _ := mime.ParseMediaType(ct); base == "text/event-stream" {
			return true
		}
	}
	return res.ContentLength == -1
}

// containsFold: s holds sub (ASCII lower case) ignoring ASCII case.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if asciiEqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// flushingWriter is ReverseProxy's maxLatencyWriter with a negative
// latency: every write is flushed, and a timer flushes the headers at once.
type flushingWriter struct {
	dst   io.Writer
	flush func() error

	mu      sync.Mutex // guards the fields below and the flushes
	t       *time.Timer
	pending bool
}

func (f *flushingWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.dst.Write(p)
	f.flush()
	return n, err
}

func (f *flushingWriter) delayedFlush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.pending { // stopped, but the timer had already fired
		return
	}
	f.flush()
	f.pending = false
}

func (f *flushingWriter) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = false
	if f.t != nil {
		f.t.Stop()
	}
}
