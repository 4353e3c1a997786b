package ingress

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// testRewriteTarget: the whole path is replaced (query kept), with regex
// captures under use-regex, as in ingress-nginx.
func testRewriteTarget(t *testing.T, w *world) {
	createIngress(t, newIngress("rw", annotate("rewrite-target", "/"), rule("rw.test", prefix("/app", "other"))))
	createIngress(t, newIngress("rwre", annotate("rewrite-target", "/$2", "use-regex", "true"),
		rule("rwre.test", implSpecific("/something(/|$)(.*)", "other"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true})
	defer c.close()
	c.servedBy(t, get("http://rw.test/app"), "other-a")
	c.servedBy(t, get("http://rwre.test/something"), "other-a")
	for _, tc := range []struct{ url, want string }{
		{"http://rw.test/app", "/"},
		{"http://rw.test/app/x/y", "/"},
		{"http://rw.test/app?q=1", "/?q=1"},
		{"http://rwre.test/something", "/"},
		{"http://rwre.test/something/new", "/new"},
		{"http://rwre.test/something/a/b?q=1", "/a/b?q=1"},
	} {
		r := c.once(t, tc.url, get(tc.url), is(http.StatusOK, "other-a"))
		if r.reply.URI != tc.want {
			t.Errorf("%s reached the backend as %q, want %q", tc.url, r.reply.URI, tc.want)
		}
	}
}

// testUseRegex: regex paths, anchored at the start, case-insensitive; the
// annotation does not leak onto another Ingress of the same host.
func testUseRegex(t *testing.T, w *world) {
	createIngress(t, newIngress("re", annotate("use-regex", "true"), rule("re.test", implSpecific("/v[0-9]+/items", "api"))))
	createIngress(t, newIngress("re-literal", rule("re.test", implSpecific("/lit.x", "other"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true})
	defer c.close()
	c.servedBy(t, get("http://re.test/v2/items"), api...)
	c.servedBy(t, get("http://re.test/lit.x"), "other-a")
	c.once(t, "regex, longer path", get("http://re.test/v10/items/7"), is(http.StatusOK, api...))
	c.once(t, "regex, other case", get("http://re.test/V3/ITEMS"), is(http.StatusOK, api...))
	c.once(t, "regex does not match", get("http://re.test/vx/items"), is(http.StatusNotFound))
	c.once(t, "regex is anchored at the start", get("http://re.test/x/v2/items"), is(http.StatusNotFound))
	c.once(t, "the other Ingress's path is literal", get("http://re.test/litax"), is(http.StatusNotFound))
}

// testCanaryWeight: 30% of 1,000 requests go to the canary, within 5
// points (over 3 standard deviations); a canary is no conflict.
func testCanaryWeight(t *testing.T, w *world) {
	createIngress(t, newIngress("cw-main", rule("canary.test", prefix("/", "web"))))
	createIngress(t, newIngress("cw-canary", annotate("canary", "true", "canary-weight", "30"), rule("canary.test", prefix("/", "canary"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true})
	defer c.close()
	c.servedBy(t, get("http://canary.test/"), "canary-b")
	const total, workers = 1000, 4
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range total / workers {
				r := c.do(get("http://canary.test/"))
				mu.Lock()
				if r.err != nil || r.code != http.StatusOK {
					counts["failed: "+r.String()]++
				} else {
					counts[r.pod()]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("canary split over %d requests: %v", total, counts)
	if n := counts["canary-b"]; n < 250 || n > 350 || counts["web-a"]+counts["web-b"]+n != total {
		t.Errorf("canary got %d of %d (want 300 ± 50), all answers %v", n, total, counts)
	}
	if got, err := warnings(context.Background(), "cw-canary"); err != nil || len(got) > 0 {
		t.Errorf("canary Ingress warned: %q (%v)", got, err)
	}
}

// testCanaryByHeader: "always" and "never" with canary-by-header; an
// exact value with canary-by-header-value.
func testCanaryByHeader(t *testing.T, w *world) {
	createIngress(t, newIngress("ch-main", rule("canhdr.test", prefix("/", "web"))))
	createIngress(t, newIngress("ch-canary", annotate("canary", "true", "canary-by-header", "X-Canary"), rule("canhdr.test", prefix("/", "canary"))))
	createIngress(t, newIngress("cv-main", rule("canval.test", prefix("/", "web"))))
	createIngress(t, newIngress("cv-canary", annotate("canary", "true", "canary-by-header", "X-Env", "canary-by-header-value", "blue"),
		rule("canval.test", prefix("/", "canary"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true})
	defer c.close()
	c.servedBy(t, get("http://canhdr.test/", "X-Canary", "always"), "canary-b")
	c.servedBy(t, get("http://canval.test/", "X-Env", "blue"), "canary-b")
	for range 10 {
		c.once(t, "always", get("http://canhdr.test/", "X-Canary", "always"), is(http.StatusOK, "canary-b"))
		c.once(t, "never", get("http://canhdr.test/", "X-Canary", "never"), is(http.StatusOK, web...))
		c.once(t, "no header", get("http://canhdr.test/"), is(http.StatusOK, web...))
		c.once(t, "other value, weight 0", get("http://canhdr.test/", "X-Canary", "maybe"), is(http.StatusOK, web...))
		c.once(t, "the value", get("http://canval.test/", "X-Env", "blue"), is(http.StatusOK, "canary-b"))
		c.once(t, "another value", get("http://canval.test/", "X-Env", "green"), is(http.StatusOK, web...))
		c.once(t, "no header", get("http://canval.test/"), is(http.StatusOK, web...))
	}
}

// testCookieAffinity: the first answer sets the named cookie; requests with
// it stay on one pod; requests without spread.
func testCookieAffinity(t *testing.T, w *world) {
	createIngress(t, newIngress("sticky", annotate("affinity", "cookie", "session-cookie-name", "route"), rule("sticky.test", prefix("/", "web"))))
	createIngress(t, newIngress("sticky-default", annotate("affinity", "cookie"), rule("sticky2.test", prefix("/", "web"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true})
	defer c.close()
	first := c.servedBy(t, get("http://sticky.test/"), web...)
	var cookie *http.Cookie
	for _, ck := range (&http.Response{Header: first.header}).Cookies() {
		if ck.Name == "route" {
			cookie = ck
		}
	}
	if cookie == nil {
		t.Fatalf("no Set-Cookie route=...; headers %v", first.header)
	}
	for range 20 {
		c.once(t, "with the cookie", get("http://sticky.test/", "Cookie", "route="+cookie.Value), is(http.StatusOK, first.pod()))
	}
	seen := map[string]bool{}
	for range 20 {
		seen[c.once(t, "without cookie", get("http://sticky.test/"), is(http.StatusOK, web...)).pod()] = true
	}
	if len(seen) != 2 {
		t.Errorf("without the cookie 20 requests went to %v only", seen)
	}
	r := c.servedBy(t, get("http://sticky2.test/"), web...)
	if !strings.Contains(r.header.Get("Set-Cookie"), "INGRESSCOOKIE=") {
		t.Errorf("default cookie name: Set-Cookie %q, want INGRESSCOOKIE", r.header.Get("Set-Cookie"))
	}
}

// blackhole is an address on the underlay that nobody has: a connection
// attempt to it fails only when ARP gives up (about 3s).
const blackhole = "10.250.0.250"

// testConnectTimeout: proxy-connect-timeout "1" gives up on an endpoint
// that never answers after a second (504), not when the kernel does.
func testConnectTimeout(t *testing.T, w *world) {
	ctx := context.Background()
	if _, err := suite.CP.Client.CoreV1().Services(testNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "blackhole", Namespace: testNS},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready, port, name, proto := true, int32(httpPort), "http", corev1.ProtocolTCP
	if _, err := suite.CP.Client.DiscoveryV1().EndpointSlices(testNS).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "blackhole-1", Namespace: testNS, Labels: map[string]string{discoveryv1.LabelServiceName: "blackhole"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{blackhole}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createIngress(t, newIngress("ct", annotate("proxy-connect-timeout", "1"), rule("ct.test", prefix("/", "blackhole"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{})
	// Until the route is in, the answer is a quick 404.
	c.eventually(t, "a gateway error", get("http://ct.test/"), func(r result) bool { return r.err == nil && r.code != http.StatusNotFound })
	start := time.Now()
	r := c.do(get("http://ct.test/"))
	elapsed := time.Since(start)
	t.Logf("connect to a silent endpoint: %s after %s", r, elapsed.Round(time.Millisecond))
	// As nginx: an upstream that times out is a 504.
	if r.err != nil || r.code != http.StatusGatewayTimeout || elapsed > 2500*time.Millisecond {
		t.Errorf("want 504 within 2.5s, got %s after %s", r, elapsed)
	}
}

// testReadTimeout: proxy-read-timeout "1" answers 504 when the backend
// takes 3s, and waits for one that takes 200ms.
func testReadTimeout(t *testing.T, w *world) {
	createIngress(t, newIngress("rt", annotate("proxy-read-timeout", "1"), rule("rt.test", prefix("/", "slow"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{})
	c.servedBy(t, get("http://rt.test/", "X-Echo-Delay", "200ms"), "slow-a")
	start := time.Now()
	r := c.do(get("http://rt.test/", "X-Echo-Delay", "3s"))
	elapsed := time.Since(start)
	if r.err != nil || r.code != http.StatusGatewayTimeout || elapsed < 900*time.Millisecond || elapsed > 2500*time.Millisecond {
		t.Errorf("backend answering after 3s: got %s after %s, want 504 after about 1s", r, elapsed)
	}
}

// testSendTimeout: proxy-send-timeout "1" gives up (504) when the backend
// stops reading the request body for longer.
func testSendTimeout(t *testing.T, w *world) {
	createIngress(t, newIngress("st", annotate("proxy-send-timeout", "1", "proxy-body-size", "0"), rule("st.test", prefix("/", "hold"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{})
	c.servedBy(t, get("http://st.test/"), "hold-b")
	// 64 MiB is far more than the socket buffers between proxy and pod.
	const size = 64 << 20
	start := time.Now()
	r := c.do(request{method: "POST", url: "http://st.test/", header: map[string]string{"X-Echo-Hold-Body": "6s"},
		body: io.LimitReader(zeros{}, size), length: size})
	elapsed := time.Since(start)
	t.Logf("upload to a backend that does not read: %s after %s", r, elapsed.Round(time.Millisecond))
	// As nginx: an upstream that times out is a 504.
	if r.err != nil || r.code != http.StatusGatewayTimeout || elapsed > 4500*time.Millisecond {
		t.Errorf("want 504 well before the backend reads (6s), got %s after %s", r, elapsed)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// testBodySize: proxy-body-size per Ingress, with and without
// Content-Length; the [ingress] max_body_size (1m) otherwise.
func testBodySize(t *testing.T, w *world) {
	createIngress(t, newIngress("body", annotate("proxy-body-size", "1k"), rule("body.test", prefix("/", "other"))))
	createIngress(t, newIngress("body-default", rule("bodydef.test", prefix("/", "other"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{})
	c.servedBy(t, get("http://body.test/"), "other-a")
	c.servedBy(t, get("http://bodydef.test/"), "other-a")
	post := func(host string, n int, chunked bool) request {
		length := int64(n)
		if chunked {
			length = -1
		}
		return request{method: "POST", url: "http://" + host + "/", body: bytes.NewReader(make([]byte, n)), length: length}
	}
	for _, tc := range []struct {
		host    string
		n       int
		chunked bool
		code    int
	}{
		{"body.test", 500, false, 200},
		{"body.test", 500, true, 200},
		{"body.test", 2000, false, 413},
		{"body.test", 2000, true, 413},
		{"bodydef.test", 100 << 10, false, 200},
		{"bodydef.test", 2 << 20, false, 413},
		{"bodydef.test", 2 << 20, true, 413},
	} {
		r := c.do(post(tc.host, tc.n, tc.chunked))
		if r.err != nil || r.code != tc.code || (tc.code == 200 && r.reply.BodyBytes != int64(tc.n)) {
			t.Errorf("%s: %d bytes (chunked %v): got %s (backend read %d bytes), want %d", tc.host, tc.n, tc.chunked, r, r.reply.BodyBytes, tc.code)
		}
	}
}

// testSourceRanges: whitelist-source-range and allowlist-source-range
// admit listed clients only (403 otherwise).
func testSourceRanges(t *testing.T, w *world) {
	me := w.client.IP.String() + "/32"
	createIngress(t, newIngress("wl-deny", annotate("whitelist-source-range", "10.99.0.0/16"), rule("wl-deny.test", prefix("/", "web"))))
	createIngress(t, newIngress("wl-allow", annotate("whitelist-source-range", "10.99.0.0/16, "+me), rule("wl-allow.test", prefix("/", "web"))))
	createIngress(t, newIngress("al-deny", annotate("allowlist-source-range", "10.99.0.0/16"), rule("al-deny.test", prefix("/", "web"))))
	createIngress(t, newIngress("al-allow", annotate("allowlist-source-range", me), rule("al-allow.test", prefix("/", "web"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{})
	c.servedBy(t, get("http://wl-allow.test/"), web...)
	c.servedBy(t, get("http://al-allow.test/"), web...)
	c.status(t, get("http://wl-deny.test/"), http.StatusForbidden)
	c.status(t, get("http://al-deny.test/"), http.StatusForbidden)
}

// testUnsupportedAnnotations: a snippet is never executed, an unknown
// annotation and an invalid value are ignored; each gets a Warning Event
// and the Ingress is served otherwise.
func testUnsupportedAnnotations(t *testing.T, w *world) {
	createIngress(t, newIngress("snip", annotate("configuration-snippet", "return 200 'snippet ran';"), rule("snip.test", prefix("/", "web"))))
	createIngress(t, newIngress("unknown-ann", annotate("limit-rps", "5"), rule("unknown-ann.test", prefix("/", "web"))))
	createIngress(t, newIngress("badval", annotate("proxy-body-size", "huge", "canary-weight", "lots"), rule("badval.test", prefix("/", "web"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{})
	r := c.servedBy(t, get("http://snip.test/"), web...)
	if strings.Contains(r.body, "snippet ran") {
		t.Error("the configuration snippet ran")
	}
	c.servedBy(t, get("http://unknown-ann.test/"), web...)
	c.servedBy(t, request{method: "POST", url: "http://badval.test/", body: bytes.NewReader(make([]byte, 4000)), length: 4000}, web...)
	t.Logf("snippet: %s", waitWarning(t, "snip", "configuration-snippet"))
	t.Logf("unknown: %s", waitWarning(t, "unknown-ann", "limit-rps"))
	t.Logf("invalid: %s", waitWarning(t, "badval", "proxy-body-size"))
}
