package ingress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

// handshake opens a TLS connection from the client host to node:443 with
// cfg and returns the server's leaf certificate.
func (w *world) handshake(node *harness.Node, cfg *tls.Config) (*tls.Conn, *x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := w.dialer(node)(ctx, "tcp", "x:443")
	if err != nil {
		return nil, nil, err
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, nil, err
	}
	return conn, conn.ConnectionState().PeerCertificates[0], nil
}

// testTLS: certificates by SNI for two hosts, the default certificate for
// other names (configured on node a, self-signed on node b), TLS 1.2 at
// least, and a certificate swapped live when its Secret changes.
func testTLS(t *testing.T, w *world) {
	w.tlsSecret(t, "tls-a", "a.tls.test")
	w.tlsSecret(t, "tls-b", "b.tls.test")
	createIngress(t, newIngress("tls",
		tlsHosts("tls-a", "a.tls.test"), tlsHosts("tls-b", "b.tls.test"),
		rule("a.tls.test", prefix("/", "web")),
		rule("b.tls.test", prefix("/", "api")),
	))
	a, b := w.c.Nodes[0], w.c.Nodes[1]
	c := w.newClient(a, clientOpts{keepAlive: true, h2: true})
	defer c.close()
	for _, tc := range []struct {
		host string
		pods []string
	}{{"a.tls.test", web}, {"b.tls.test", api}} {
		r := c.servedBy(t, get("https://"+tc.host+"/"), tc.pods...) // verified against the CA
		if got := r.tls.PeerCertificates[0].DNSNames; !slices.Equal(got, []string{tc.host}) {
			t.Errorf("%s: certificate for %v", tc.host, got)
		}
		if r.tls.Version < tls.VersionTLS12 {
			t.Errorf("%s: TLS version %x", tc.host, r.tls.Version)
		}
	}
	// Unknown names, and no name at all, get the default certificate.
	for _, sni := range []string{"unknown.tls.test", ""} {
		conn, cert, err := w.handshake(a, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("node a, SNI %q: %v", sni, err)
		}
		conn.Close()
		if cert.Subject.CommonName != defaultCN || cert.CheckSignatureFrom(w.ca.Cert) != nil {
			t.Errorf("node a, SNI %q: certificate %q, want the configured default %q", sni, cert.Subject.CommonName, defaultCN)
		}
		conn, cert, err = w.handshake(b, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("node b, SNI %q: %v", sni, err)
		}
		conn.Close()
		if cert.CheckSignatureFrom(w.ca.Cert) == nil || cert.Subject.CommonName == defaultCN {
			t.Errorf("node b, SNI %q: certificate %q from our CA, want its self-signed default", sni, cert.Subject.CommonName)
		}
	}
	insecure := w.newClient(a, clientOpts{tls: &tls.Config{InsecureSkipVerify: true}})
	insecure.once(t, "an unknown host over TLS", get("https://unknown.tls.test/"), is(http.StatusNotFound))
	// The client offers TLS 1.0 and 1.1 only (its default minimum is 1.2):
	// the server must refuse with a protocol_version alert.
	conn, _, err := w.handshake(a, &tls.Config{ServerName: "a.tls.test", RootCAs: w.ca.Pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		conn.Close()
		t.Error("a TLS 1.1 handshake succeeded; the minimum is 1.2")
	} else if !strings.Contains(err.Error(), "remote error: tls: protocol version not supported") {
		t.Errorf("TLS 1.1 handshake: %v, want the server's protocol_version alert", err)
	}
	// A new certificate in the Secret is served without a restart.
	old := w.servedCert(t, a, "a.tls.test")
	w.tlsSecret(t, "tls-a", "a.tls.test")
	var got *x509.Certificate
	err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		got = w.servedCert(t, a, "a.tls.test")
		return got.SerialNumber.Cmp(old.SerialNumber) != 0, nil
	})
	if err != nil {
		t.Errorf("Secret tls-a changed, still serving serial %v", got.SerialNumber)
	}
}

func (w *world) servedCert(t *testing.T, node *harness.Node, host string) *x509.Certificate {
	t.Helper()
	conn, cert, err := w.handshake(node, &tls.Config{ServerName: host, RootCAs: w.ca.Pool()})
	if err != nil {
		t.Fatalf("TLS to %s: %v", host, err)
	}
	conn.Close()
	return cert
}

// testRedirects: HTTP to HTTPS with 308 for TLS hosts, off with
// ssl-redirect "false", on for a host without TLS with force-ssl-redirect.
func testRedirects(t *testing.T, w *world) {
	w.tlsSecret(t, "tls-rd", "rd.test", "rd-off.test")
	createIngress(t, newIngress("rd", tlsHosts("tls-rd", "rd.test"), rule("rd.test", prefix("/", "web"))))
	createIngress(t, newIngress("rd-off", annotate("ssl-redirect", "false"), tlsHosts("tls-rd", "rd-off.test"), rule("rd-off.test", prefix("/", "web"))))
	createIngress(t, newIngress("rd-force", annotate("force-ssl-redirect", "true"), rule("rd-force.test", prefix("/", "web"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true})
	defer c.close()
	for _, host := range []string{"rd.test", "rd-force.test"} {
		r := c.status(t, get("http://"+host+"/p/q?x=1&y=2"), http.StatusPermanentRedirect)
		if loc := r.header.Get("Location"); loc != "https://"+host+"/p/q?x=1&y=2" {
			t.Errorf("%s: redirect to %q", host, loc)
		}
	}
	c.servedBy(t, get("http://rd-off.test/"), web...)
	c.servedBy(t, get("https://rd.test/"), web...)
	c.servedBy(t, get("https://rd-off.test/"), web...)
}

// testHTTP2: HTTP/2 over TLS (ALPN), many streams on one connection, and
// HTTP/1.1 still offered.
func testHTTP2(t *testing.T, w *world) {
	w.tlsSecret(t, "tls-h2", "h2.test")
	createIngress(t, newIngress("h2", tlsHosts("tls-h2", "h2.test"), rule("h2.test", prefix("/", "web"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{keepAlive: true, h2: true})
	defer c.close()
	r := c.servedBy(t, get("https://h2.test/"), web...)
	if r.proto != "HTTP/2.0" || r.tls.NegotiatedProtocol != "h2" {
		t.Fatalf("over TLS: %s, ALPN %q; want HTTP/2.0, h2", r.proto, r.tls.NegotiatedProtocol)
	}
	var wg sync.WaitGroup
	results := make([]result, 50)
	for i := range results {
		wg.Go(func() { results[i] = c.do(get(fmt.Sprintf("https://h2.test/stream/%d", i))) })
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil || r.code != 200 || r.proto != "HTTP/2.0" || r.reply.URI != fmt.Sprintf("/stream/%d", i) {
			t.Errorf("stream %d: %s (uri %q)", i, r, r.reply.URI)
		}
	}
	h1 := w.newClient(w.c.Nodes[0], clientOpts{})
	if r := h1.do(get("https://h2.test/")); r.err != nil || r.proto != "HTTP/1.1" || r.code != 200 {
		t.Errorf("HTTP/1.1 over TLS: %s", r)
	}
}

// testWebSocket: an upgrade through the proxy, plain and over TLS, with
// messages echoed both ways.
func testWebSocket(t *testing.T, w *world) {
	w.tlsSecret(t, "tls-ws", "ws.test")
	createIngress(t, newIngress("ws", tlsHosts("tls-ws", "ws.test"), annotate("ssl-redirect", "false"), rule("ws.test", prefix("/chat", "web"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{})
	c.servedBy(t, get("http://ws.test/chat"), web...)
	for _, secure := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		port := "80"
		if secure {
			port = "443"
		}
		raw, err := w.dialer(w.c.Nodes[0])(ctx, "tcp", "x:"+port)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		conn := raw
		if secure {
			conn = tls.Client(raw, &tls.Config{ServerName: "ws.test", RootCAs: w.ca.Pool(), NextProtos: []string{"http/1.1"}})
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		rw := bufio.NewReadWriter(bufio.NewReader(conn), bufio.NewWriter(conn))
		resp, err := harness.WSHandshake(rw, "ws.test", "/chat/room")
		if err != nil {
			conn.Close()
			t.Fatalf("tls=%v: %v", secure, err)
		}
		if pod := resp.Header.Get("X-Pod-Name"); !slices.Contains(web, pod) {
			t.Errorf("tls=%v: upgrade answered by %q", secure, pod)
		}
		for i, msg := range []string{"hello", string(bytes.Repeat([]byte("z"), 100000)), "bye"} {
			op := byte(harness.WSText)
			if i == 1 {
				op = harness.WSBinary
			}
			if err := harness.WriteWSFrame(rw, harness.WSFrame{Opcode: op, Payload: []byte(msg)}, true); err != nil {
				t.Fatal(err)
			}
			if err := rw.Flush(); err != nil {
				t.Fatal(err)
			}
			f, err := harness.ReadWSFrame(rw)
			if err != nil || f.Opcode != op || string(f.Payload) != msg {
				t.Fatalf("tls=%v: echo of a %d-byte message: opcode %x, %d bytes, %v", secure, len(msg), f.Opcode, len(f.Payload), err)
			}
		}
		if err := harness.WriteWSFrame(rw, harness.WSFrame{Opcode: harness.WSClose, Payload: []byte{0x03, 0xE8}}, true); err == nil {
			_ = rw.Flush()
			if f, err := harness.ReadWSFrame(rw); err != nil || f.Opcode != harness.WSClose {
				t.Errorf("tls=%v: close handshake: opcode %x, %v", secure, f.Opcode, err)
			}
		}
		conn.Close()
	}
}

// testGRPC: gRPC from the client over h2 (TLS) or h2c to h2c backends
// (backend-protocol GRPC) and h2-over-TLS backends (GRPCS), with messages
// and trailers both ways. The Service "api" also serves plain HTTP
// Ingresses: the protocol belongs to the Ingress, not the Service.
func testGRPC(t *testing.T, w *world) {
	w.tlsSecret(t, "tls-grpc", "grpc.test", "grpcs.test")
	createIngress(t, newIngress("grpc", annotate("backend-protocol", "GRPC"), tlsHosts("tls-grpc", "grpc.test"), rule("grpc.test", prefix("/", "api"))))
	createIngress(t, newIngress("grpcs", annotate("backend-protocol", "GRPCS"), tlsHosts("tls-grpc", "grpcs.test"), rule("grpcs.test", toPort(prefix("/", "api"), "https"))))
	createIngress(t, newIngress("grpc-plain", annotate("backend-protocol", "GRPC"), rule("grpc-plain.test", prefix("/", "api"))))
	createIngress(t, newIngress("grpc-peer", rule("grpc-peer.test", prefix("/", "api"))))
	// HTTP/2 only: h2 over TLS, h2c (prior knowledge) without.
	var p http.Protocols
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		DialContext: w.dialer(w.c.Nodes[0]), Protocols: &p,
		TLSClientConfig: &tls.Config{RootCAs: w.ca.Pool()},
	}}
	defer c.CloseIdleConnections()
	call := func(url string) (string, error) {
		body := append(harness.GRPCFrame([]byte("hello")), harness.GRPCFrame([]byte("again"))...)
		req, err := http.NewRequest("POST", url, bytes.NewReader(body))
		if err != nil {
			return "", err
		}
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("TE", "trailers")
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		msgs, err := harness.ReadGRPCMessages(resp.Body)
		if err != nil {
			return "", err
		}
		_, _ = io.Copy(io.Discard, resp.Body) // trailers arrive after the body
		want := []string{"api-b:hello", "api-b:again"}
		var got []string
		for _, m := range msgs {
			got = append(got, string(m))
		}
		if resp.StatusCode != 200 || resp.Proto != "HTTP/2.0" || !slices.Equal(got, want) ||
			resp.Trailer.Get("Grpc-Status") != "0" || resp.Header.Get("X-Echo-Proto") != "HTTP/2.0" {
			return "", fmt.Errorf("%s %d, messages %q (want %q), trailers %v, backend saw %q",
				resp.Proto, resp.StatusCode, got, want, resp.Trailer, resp.Header.Get("X-Echo-Proto"))
		}
		return resp.Header.Get("X-Pod-Name"), nil
	}
	for _, url := range []string{"https://grpc.test/echo.Echo/Say", "https://grpcs.test/echo.Echo/Say", "http://grpc-plain.test/echo.Echo/Say"} {
		var lastErr error
		err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			_, lastErr = call(url)
			return lastErr == nil, nil
		})
		if err != nil {
			t.Errorf("gRPC %s: %v", url, lastErr)
		}
	}
	hc := w.newClient(w.c.Nodes[0], clientOpts{})
	if r := hc.servedBy(t, get("http://grpc-peer.test/"), api...); r.reply.Proto != "HTTP/1.1" {
		t.Errorf("plain Ingress on the gRPC Service: backend saw %s", r.reply.Proto)
	}
}

// testBackendHTTPS: backend-protocol HTTPS speaks TLS to the pod; HTTP
// (also the default) does not.
func testBackendHTTPS(t *testing.T, w *world) {
	createIngress(t, newIngress("bhttps", annotate("backend-protocol", "HTTPS"), rule("bhttps.test", toPort(prefix("/", "other"), "https"))))
	createIngress(t, newIngress("bhttp", annotate("backend-protocol", "HTTP"), rule("bhttp.test", prefix("/", "other"))))
	c := w.newClient(w.c.Nodes[0], clientOpts{})
	if r := c.servedBy(t, get("http://bhttps.test/"), "other-a"); !r.reply.TLS {
		t.Errorf("backend-protocol HTTPS: the backend got plain HTTP")
	}
	if r := c.servedBy(t, get("http://bhttp.test/"), "other-a"); r.reply.TLS {
		t.Errorf("backend-protocol HTTP: the backend got TLS")
	}
}
