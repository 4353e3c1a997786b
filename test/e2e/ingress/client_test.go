package ingress

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

// client sends requests from the client host to one node's ingress: any
// URL's host name is kept for the Host header and SNI, the connection goes
// to the node's address on the URL's port.
type client struct {
	*http.Client
	tr *http.Transport
}

type clientOpts struct {
	keepAlive bool
	tls       *tls.Config // nil: trust the world's CA
	h2        bool        // offer HTTP/2 over TLS (ALPN)
}

func (w *world) newClient(node *harness.Node, o clientOpts) *client {
	cfg := o.tls
	if cfg == nil {
		cfg = &tls.Config{RootCAs: w.ca.Pool()}
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(o.h2)
	tr := &http.Transport{
		DialContext:         w.dialer(node),
		TLSClientConfig:     cfg,
		Protocols:           &p,
		DisableKeepAlives:   !o.keepAlive,
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
	}
	return &client{tr: tr, Client: &http.Client{
		Timeout:       15 * time.Second,
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// dialer connects from the client host to node, on addr's port.
func (w *world) dialer(node *harness.Node) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		return w.client.NS.DialContext(ctx, "tcp", net.JoinHostPort(node.IP.String(), port))
	}
}

func (c *client) close() { c.tr.CloseIdleConnections() }

// result is one answer, decoded when it came from an echo backend.
type result struct {
	code   int
	header http.Header
	body   string
	reply  harness.EchoReply // zero unless a backend answered with JSON
	proto  string
	tls    *tls.ConnectionState
	err    error
}

func (r result) pod() string { return r.reply.Pod }

func (r result) String() string {
	if r.err != nil {
		return "error: " + r.err.Error()
	}
	body := r.body
	if len(body) > 200 {
		body = body[:200] + "..."
	}
	return fmt.Sprintf("%d %s from %q: %q", r.code, r.proto, r.reply.Pod, strings.TrimSpace(body))
}

// request is what to send; method GET and no body unless said.
type request struct {
	method string
	url    string
	header map[string]string
	body   io.Reader
	length int64 // Content-Length when body is set; -1: chunked
}

func get(u string, header ...string) request {
	r := request{method: "GET", url: u, header: map[string]string{}}
	for i := 0; i+1 < len(header); i += 2 {
		r.header[header[i]] = header[i+1]
	}
	return r
}

func (c *client) do(r request) result {
	method := r.method
	if method == "" {
		method = "GET"
	}
	req, err := http.NewRequest(method, r.url, r.body)
	if err != nil {
		return result{err: err}
	}
	if r.body != nil {
		req.ContentLength = r.length
	}
	for k, v := range r.header {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	res := result{code: resp.StatusCode, header: resp.Header, body: string(b), proto: resp.Proto, tls: resp.TLS, err: err}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(b, &res.reply)
	}
	return res
}

// eventually repeats r until ok accepts the answer (the ingress applies
// changes asynchronously) and returns that answer.
func (c *client) eventually(t testing.TB, what string, r request, ok func(result) bool) result {
	t.Helper()
	var last result
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		last = c.do(r)
		return ok(last), nil
	})
	if err != nil {
		t.Fatalf("%s: never; %s %s last answered %s", what, r.method, r.url, last)
	}
	return last
}

// servedBy waits until r is answered 200 by one of pods.
func (c *client) servedBy(t testing.TB, r request, pods ...string) result {
	t.Helper()
	return c.eventually(t, fmt.Sprintf("answered by %v", pods), r, func(res result) bool {
		return res.err == nil && res.code == http.StatusOK && slices.Contains(pods, res.pod())
	})
}

// status waits until r is answered with code.
func (c *client) status(t testing.TB, r request, code int) result {
	t.Helper()
	return c.eventually(t, fmt.Sprintf("status %d", code), r, func(res result) bool {
		return res.err == nil && res.code == code
	})
}

// once sends r one time and fails the test unless ok accepts the answer:
// for answers that must hold now, after a barrier showed the ingress has
// seen every object the check depends on.
func (c *client) once(t testing.TB, what string, r request, ok func(result) bool) result {
	t.Helper()
	res := c.do(r)
	if !ok(res) {
		t.Errorf("%s: %s %s answered %s", what, r.method, r.url, res)
	}
	return res
}

func is(code int, pods ...string) func(result) bool {
	return func(r result) bool {
		return r.err == nil && r.code == code && (len(pods) == 0 || slices.Contains(pods, r.pod()))
	}
}

// load sends requests from several workers until stopped and counts every
// answer that is not a 200 from an accepted pod as a failure.
type load struct {
	ok, failed atomic.Int64
	stopped    atomic.Bool
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	accept []string // pods whose answers count as success
	node   *harness.Node

	mu       sync.Mutex // guards failures
	failures []string   // the first few, with time
}

type loadOpts struct {
	url     string
	accept  []string
	workers int // half keep their connections, half open one per request
	node    *harness.Node
}

func (w *world) startLoad(o loadOpts) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, accept: o.accept, node: o.node}
	for i := range o.workers {
		c := w.newClient(o.node, clientOpts{keepAlive: i%2 == 0})
		l.wg.Go(func() {
			defer c.close()
			for ctx.Err() == nil {
				res := c.do(get(o.url))
				if ctx.Err() != nil && res.err != nil {
					return // cancelled mid-request by stop: not the proxy's doing
				}
				l.record(res)
			}
		})
	}
	return l
}

func (l *load) record(res result) {
	if res.err == nil && res.code == http.StatusOK && slices.Contains(l.accept, res.pod()) {
		l.ok.Add(1)
		return
	}
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.failures) < 10 {
		l.failures = append(l.failures, time.Now().Format("15:04:05.000")+" "+res.String())
	}
	l.mu.Unlock()
}

// waitMore waits until n more requests succeeded: traffic went on.
func (l *load) waitMore(t testing.TB, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return l.ok.Load() >= target, nil
	})
	if err != nil {
		t.Fatalf("load stalled: %d ok, %d failed, want %d ok", l.ok.Load(), l.failed.Load(), target)
	}
}

// stop ends the load and fails t on any failed request; only its first
// call counts (it is also deferred, for tests that end early).
func (l *load) stop(t testing.TB, what string) {
	t.Helper()
	if l.stopped.Swap(true) {
		return
	}
	l.cancel()
	l.wg.Wait()
	t.Logf("%s: %d requests ok, %d failed", what, l.ok.Load(), l.failed.Load())
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%s: %d of %d requests failed; first: %s\n%s", what, n, n+l.ok.Load(), strings.Join(l.failures, "; "), l.daemonTrouble())
	}
}

// daemonTrouble is what the ingress node's daemon logged about failed
// requests and warnings: the access log says which upstream failed how.
func (l *load) daemonTrouble() string {
	var out []string
	for line := range strings.SplitSeq(l.node.Daemon.Log(), "\n") {
		if strings.Contains(line, " status=5") || strings.Contains(line, "upstream error") || strings.Contains(line, " WRN ") || strings.Contains(line, " ERR ") {
			out = append(out, line)
		}
	}
	if len(out) > 30 {
		out = out[len(out)-30:]
	}
	return "daemon log, failed requests and warnings:\n" + strings.Join(out, "\n")
}
