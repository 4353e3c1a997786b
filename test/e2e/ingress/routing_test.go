package ingress

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

var (
	web = []string{"web-a", "web-b"}
	api = []string{"api-b"}
)

// testPaths: Exact vs Prefix, longest match, element-wise prefixes, a
// backend port by name.
func testPaths(t *testing.T, w *world) {
	named := toPort(prefix("/named", "other"), "http")
	createIngress(t, newIngress("paths", rule("paths.test",
		exact("/exact", "api"),
		prefix("/foo", "web"),
		prefix("/foo/bar", "other"),
		exact("/same", "api"),
		prefix("/same", "web"),
		named,
	)))
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true})
	defer c.close()
	c.servedBy(t, get("http://paths.test/exact"), api...) // barrier: the Ingress is in
	for _, tc := range []struct {
		path string
		want []string // nil: 404
	}{
		{"/exact", api},
		{"/exact/", nil}, // Exact is exact
		{"/exactly", nil},
		{"/foo", web},
		{"/foo/", web},
		{"/foo/x", web},
		{"/foobar", nil}, // element-wise: /foo is no prefix of /foobar
		{"/foo/bar", []string{"other-a"}},
		{"/foo/bar/baz", []string{"other-a"}}, // longest match
		{"/foo/barbaz", web},
		{"/same", api}, // Exact beats Prefix at equal length
		{"/same/x", web},
		{"/named/x", []string{"other-a"}},
		{"/", nil},
		{"/unrouted", nil},
	} {
		if tc.want == nil {
			c.once(t, tc.path+" is not routed", get("http://paths.test"+tc.path), is(http.StatusNotFound))
		} else {
			c.once(t, tc.path, get("http://paths.test"+tc.path), is(http.StatusOK, tc.want...))
		}
	}
	// Host names match in any case and with the port.
	c.once(t, "host in capitals", get("http://paths.test/foo", "Host", "PATHS.Test"), is(http.StatusOK, web...))
	c.once(t, "host with port", get("http://paths.test/foo", "Host", "paths.test:80"), is(http.StatusOK, web...))
	// The query string is no part of the path.
	r := c.once(t, "query", get("http://paths.test/exact?x=/foo"), is(http.StatusOK, api...))
	if r.reply.URI != "/exact?x=/foo" {
		t.Errorf("backend got %q, want the request target unchanged", r.reply.URI)
	}
}

// testTrailingSlashes: a Prefix rule's trailing slash is ignored; a
// request's trailing slash matters only to Exact.
func testTrailingSlashes(t *testing.T, w *world) {
	createIngress(t, newIngress("slashes", rule("slashes.test",
		prefix("/dir/", "web"),
		exact("/file/", "api"),
	)))
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true})
	defer c.close()
	c.servedBy(t, get("http://slashes.test/dir/"), web...)
	c.once(t, "Prefix /dir/ matches /dir", get("http://slashes.test/dir"), is(http.StatusOK, web...))
	c.once(t, "Prefix /dir/ matches /dir/x", get("http://slashes.test/dir/x"), is(http.StatusOK, web...))
	c.once(t, "Prefix /dir/ does not match /directory", get("http://slashes.test/directory"), is(http.StatusNotFound))
	c.once(t, "Exact /file/ matches /file/", get("http://slashes.test/file/"), is(http.StatusOK, api...))
	c.once(t, "Exact /file/ does not match /file", get("http://slashes.test/file"), is(http.StatusNotFound))
}

// testWildcardHosts: "*.wild.test" matches one label; an exact host wins
// over the wildcard and never falls through to it.
func testWildcardHosts(t *testing.T, w *world) {
	createIngress(t, newIngress("wild",
		rule("*.wild.test", prefix("/", "web")),
		rule("exact.wild.test", prefix("/only", "api")),
	))
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true})
	defer c.close()
	c.servedBy(t, get("http://a.wild.test/"), web...)
	c.once(t, "another label", get("http://b.wild.test/x"), is(http.StatusOK, web...))
	c.once(t, "two labels", get("http://x.y.wild.test/"), is(http.StatusNotFound))
	c.once(t, "the parent itself", get("http://wild.test/"), is(http.StatusNotFound))
	c.once(t, "exact host beats wildcard", get("http://exact.wild.test/only"), is(http.StatusOK, api...))
	c.once(t, "exact host does not fall through to the wildcard", get("http://exact.wild.test/other"), is(http.StatusNotFound))
}

// testHostlessRules: a rule without host serves hosts no rule names.
func testHostlessRules(t *testing.T, w *world) {
	createIngress(t, newIngress("hostless", rule("", prefix("/hostless-only", "other"))))
	createIngress(t, newIngress("hostless-named", rule("named.hostless.test", prefix("/x", "web"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true})
	defer c.close()
	c.servedBy(t, get("http://anything.test/hostless-only"), "other-a")
	c.servedBy(t, get("http://named.hostless.test/x"), web...)
	c.once(t, "by IP, no host name", get("http://"+w.c.Nodes[0].IP.String()+"/hostless-only/y"), is(http.StatusOK, "other-a"))
	c.once(t, "a named host does not fall through to host-less rules", get("http://named.hostless.test/hostless-only"), is(http.StatusNotFound))
}

// testClassSelection: spec.ingressClassName, the legacy annotation, and
// the default class for Ingresses that name none.
func testClassSelection(t *testing.T, w *world) {
	createIngress(t, newIngress("cls-other", class("other"), rule("cls-other.test", prefix("/", "web"))))
	createIngress(t, newIngress("cls-none", class(""), rule("cls-none.test", prefix("/", "web"))))
	createIngress(t, newIngress("cls-legacy", legacyClass(className), rule("cls-legacy.test", prefix("/", "web"))))
	createIngress(t, newIngress("cls-legacy-other", legacyClass("other"), rule("cls-legacy-other.test", prefix("/", "web"))))
	createIngress(t, newIngress("cls-unknown", class("no-such-class"), rule("cls-unknown.test", prefix("/", "web"))))
	createIngress(t, newIngress("cls-mine", rule("cls-mine.test", prefix("/", "web"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true})
	defer c.close()
	c.servedBy(t, get("http://cls-mine.test/"), web...) // barrier: created last
	c.once(t, "legacy annotation naming our class", get("http://cls-legacy.test/"), is(http.StatusOK, web...))
	for _, h := range []string{"cls-other", "cls-none", "cls-legacy-other", "cls-unknown"} {
		c.once(t, h+" is not ours", get("http://"+h+".test/"), is(http.StatusNotFound))
	}
	// Our class becomes the default: class-less Ingresses are ours.
	setDefaultClass(t, className, "true")
	t.Cleanup(func() { setDefaultClass(t, className, "false") })
	c.servedBy(t, get("http://cls-none.test/"), web...)
	c.once(t, "another controller's class stays another's", get("http://cls-other.test/"), is(http.StatusNotFound))
	// And back.
	setDefaultClass(t, className, "false")
	c.status(t, get("http://cls-none.test/"), http.StatusNotFound)
}

func setDefaultClass(t *testing.T, name, value string) {
	t.Helper()
	ctx := context.Background()
	ics := suite.CP.Client.NetworkingV1().IngressClasses()
	ic, err := ics.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ic.Annotations == nil {
		ic.Annotations = map[string]string{}
	}
	ic.Annotations["ingressclass.kubernetes.io/is-default-class"] = value
	if _, err := ics.Update(ctx, ic, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// testConflicts: two Ingresses claim one host and path; the older wins,
// the newer gets a Warning Event, and takes over once the older goes.
func testConflicts(t *testing.T, w *world) {
	// Named so that a tie broken by name would pick the newer one.
	older := createIngress(t, newIngress("z-conflict-older", rule("conflict.test", prefix("/", "web"))))
	// Creation timestamps have whole seconds: make "older" strictly older.
	if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 3*time.Second, true, func(context.Context) (bool, error) {
		return time.Now().Truncate(time.Second).After(older.CreationTimestamp.Time), nil
	}); err != nil {
		t.Fatal(err)
	}
	createIngress(t, newIngress("a-conflict-newer", rule("conflict.test", prefix("/", "api"), prefix("/own", "api"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true})
	defer c.close()
	c.servedBy(t, get("http://conflict.test/own"), api...) // the newer one's other rule merges in
	for range 10 {
		c.once(t, "the older Ingress wins the conflict", get("http://conflict.test/"), is(http.StatusOK, web...))
	}
	t.Logf("warning: %s", waitWarning(t, "a-conflict-newer", "conflict"))
	if got, err := warnings(context.Background(), "z-conflict-older"); err != nil || len(got) > 0 {
		t.Errorf("the winner got warnings %q (%v)", got, err)
	}
	deleteIngress(t, "z-conflict-older")
	c.servedBy(t, get("http://conflict.test/"), api...)
}

// testForwardedHeaders: X-Forwarded-For/Proto/Host and Forwarded reach the
// backend with the client's address; the Host header is kept.
func testForwardedHeaders(t *testing.T, w *world) {
	createIngress(t, newIngress("fwd", rule("fwd.test", prefix("/", "other"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{})
	r := c.servedBy(t, get("http://fwd.test/x", "X-Forwarded-For", "192.0.2.99"), "other-a")
	h := r.reply.Header
	client := w.client.IP.String()
	xff := h.Get("X-Forwarded-For")
	if parts := strings.Split(xff, ","); strings.TrimSpace(parts[len(parts)-1]) != client {
		t.Errorf("X-Forwarded-For %q: last hop must be the client %s", xff, client)
	}
	if !strings.Contains(xff, "192.0.2.99") {
		t.Logf("X-Forwarded-For %q does not keep the client's own value (allowed: untrusted)", xff)
	}
	if got := h.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("X-Forwarded-Proto %q, want http", got)
	}
	if got := h.Get("X-Forwarded-Host"); got != "fwd.test" {
		t.Errorf("X-Forwarded-Host %q, want fwd.test", got)
	}
	fwd := strings.ToLower(h.Get("Forwarded"))
	if !strings.Contains(fwd, "for="+client) && !strings.Contains(fwd, `for="`+client) || !strings.Contains(fwd, "proto=http") || !strings.Contains(fwd, "host=fwd.test") && !strings.Contains(fwd, `host="fwd.test"`) {
		t.Errorf("Forwarded %q: want for=%s, proto=http, host=fwd.test", h.Get("Forwarded"), client)
	}
	if r.reply.Host != "fwd.test" {
		t.Errorf("backend saw Host %q, want fwd.test", r.reply.Host)
	}
	tc := w.newClient(w.c.Nodes[0], clientOpts{h2: true})
	createIngress(t, newIngress("fwd-tls", tlsHosts("fwd-tls", "fwd-tls.test"), rule("fwd-tls.test", prefix("/", "other"))))
	w.tlsSecret(t, "fwd-tls", "fwd-tls.test")
	r = tc.servedBy(t, get("https://fwd-tls.test/"), "other-a")
	if got := r.reply.Header.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("over TLS: X-Forwarded-Proto %q, want https", got)
	}
}

// testEveryNodeServes: the second node serves the same table.
func testEveryNodeServes(t *testing.T, w *world) {
	createIngress(t, newIngress("both-nodes", rule("both.test", prefix("/", "api"))))
	for _, n := range w.c.Nodes {
		c := w.newClient(n, clientOpts{})
		c.servedBy(t, get("http://both.test/"), api...)
	}
}

// testNoEndpoints: a Service without ready endpoints gives 503, a missing
// Service too (nothing to proxy to).
func testNoEndpoints(t *testing.T, w *world) {
	w.service(t, "empty", "nobody")
	createIngress(t, newIngress("noep", rule("noep.test", prefix("/empty", "empty"), prefix("/missing", "no-such-service"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{})
	c.status(t, get("http://noep.test/empty"), http.StatusServiceUnavailable)
	c.status(t, get("http://noep.test/missing"), http.StatusServiceUnavailable)
}

// testDefaultBackend: the defaultBackend serves what no rule matches, on
// any host. It changes every host's unmatched answer, so it runs alone.
func testDefaultBackend(t *testing.T, w *world) {
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true})
	defer c.close()
	c.once(t, "without a default backend", get("http://nobody.test/"), is(http.StatusNotFound))
	createIngress(t, newIngress("default-peer", rule("peer.default.test", prefix("/x", "api"))))
	defer deleteIngress(t, "default-peer")
	createIngress(t, newIngress("default", defaultBackend("other"), rule("default.test", prefix("/app", "web"))))
	defer deleteIngress(t, "default")
	c.servedBy(t, get("http://nobody.test/"), "other-a")
	c.once(t, "its own rule", get("http://default.test/app"), is(http.StatusOK, web...))
	c.once(t, "its host, unmatched path", get("http://default.test/else"), is(http.StatusOK, "other-a"))
	c.once(t, "another Ingress's host, unmatched path", get("http://peer.default.test/y"), is(http.StatusOK, "other-a"))
	c.once(t, "rules still win", get("http://peer.default.test/x"), is(http.StatusOK, api...))
	// Only one default backend: the younger Ingress's is reported.
	createIngress(t, newIngress("default-2", defaultBackend("api")))
	defer deleteIngress(t, "default-2")
	waitWarning(t, "default-2", "default")
	c.once(t, "the older default backend stays", get("http://nobody.test/"), is(http.StatusOK, "other-a"))
}

// testMalformedRequests: garbage gets 400 and headers over max_header_bytes
// (1 MiB by default) get 431, from the proxy itself.
func testMalformedRequests(t *testing.T, w *world) {
	createIngress(t, newIngress("malformed", rule("malformed.test", prefix("/", "web"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{})
	c.servedBy(t, get("http://malformed.test/"), web...)
	for _, tc := range []struct {
		name, req string
		code      string
	}{
		// At least 14 bytes: with h2c on, Go's server first waits for as
		// many as the HTTP/2 preface's "PRI * HTTP/2.0" (until the
		// read-header timeout) before it parses HTTP/1.
		{"garbage request line", "GARBAGE REQUEST LINE\r\n\r\n", "400"},
		{"no Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", "400"},
		{"headers over the limit", "GET / HTTP/1.1\r\nHost: malformed.test\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n", "431"},
	} {
		start := time.Now()
		status, err := w.rawRequest(w.c.Nodes[0], tc.req)
		t.Logf("%s: %q after %s", tc.name, status, time.Since(start).Round(time.Millisecond))
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 "+tc.code) {
			t.Errorf("%s: status line %q (%v), want %s", tc.name, status, err, tc.code)
		}
	}
}

// rawRequest writes req to node:80 and returns the status line.
func (w *world) rawRequest(node *harness.Node, req string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := w.dialer(node)(ctx, "tcp", "x:80")
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	// The server may answer and close before reading everything: the
	// status line is what counts, not the write.
	go func() { _, _ = io.WriteString(conn, req) }()
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}
