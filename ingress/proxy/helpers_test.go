package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/nodenet/nodenet/ingress/annotations"
	"github.com/nodenet/nodenet/ingress/routes"
)

var nodenetClass = &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "nodenet"},
	Spec: networkingv1.IngressClassSpec{Controller: routes.Controller}}

// echo is a backend that answers with its name and what it received.
func echo(t testing.TB, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(echoHandler(name))
	t.Cleanup(s.Close)
	return s
}

func echoHandler(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		w.Header().Set("X-Path", r.URL.RequestURI())
		w.Header().Set("X-Host", r.Host)
		for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "X-Real-Ip"} {
			w.Header().Set("Echo-"+h, r.Header.Get(h))
		}
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %d", name, n)
	}
}

// svc is a Service named name whose endpoints are the given servers.
type svc struct {
	name  string
	addrs []string
}

func addrOf(s *httptest.Server) string { return s.Listener.Addr().String() }

// deadAddr is an address nothing listens on.
func deadAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

// objects returns the Service and one EndpointSlice per endpoint (their ports differ).
func (s svc) objects() (*corev1.Service, []*discoveryv1.EndpointSlice) {
	service := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: s.name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}}
	var slices []*discoveryv1.EndpointSlice
	for i, a := range s.addrs {
		ap := netip.MustParseAddrPort(a)
		slices = append(slices, &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: s.name + "-" + strconv.Itoa(i), Labels: map[string]string{discoveryv1.LabelServiceName: s.name}},
			Ports:      []discoveryv1.EndpointPort{{Name: ptr.To(""), Port: ptr.To(int32(ap.Port())), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{ap.Addr().String()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		})
	}
	return service, slices
}

// ingress is one Ingress: host, Prefix path, service, annotations (without prefix).
func ingress(name string, age int, host, path, service string, ann ...string) *networkingv1.Ingress {
	i := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Annotations: map[string]string{},
		CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, age, 0, 0, time.UTC))},
		Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("nodenet"), Rules: []networkingv1.IngressRule{{Host: host,
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
				Path: path, PathType: ptr.To(networkingv1.PathTypeImplementationSpecific),
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: service, Port: networkingv1.ServiceBackendPort{Number: 80}}},
			}}}}}}}}
	for i2 := 0; i2+1 < len(ann); i2 += 2 {
		i.Annotations[annotations.Prefix+ann[i2]] = ann[i2+1]
	}
	return i
}

func build(t testing.TB, ings []*networkingv1.Ingress, svcs ...svc) *routes.Table {
	t.Helper()
	in := routes.Input{Ingresses: ings, Classes: []*networkingv1.IngressClass{nodenetClass}}
	for _, s := range svcs {
		service, slices := s.objects()
		in.Services = append(in.Services, service)
		in.Slices = append(in.Slices, slices...)
	}
	tb, problems := routes.Build(in)
	if len(problems) > 0 {
		t.Fatalf("Build problems: %v", problems)
	}
	return tb
}

func testOptions() Options {
	return Options{MaxBodySize: 1 << 20, EjectionTime: time.Minute, HTTPSPort: 443}
}

// newHandler returns a handler serving tb, closed with the test.
func newHandler(t testing.TB, o Options, tb *routes.Table) *Handler {
	h := New(o, NewMetrics(nil), discard())
	h.Swap(tb)
	t.Cleanup(h.Close)
	return h
}

// front serves h on a real listener.
func front(t testing.TB, h http.Handler) *httptest.Server {
	s := httptest.NewUnstartedServer(h)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	s.Config.Protocols = &p
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// do sends one request through h without a network listener.
func do(h http.Handler, method, target string, body io.Reader, hdr ...string) *http.Response {
	r := httptest.NewRequest(method, target, body)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			r.Host = hdr[i+1]
			continue
		}
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

// testServer is a backend on a real listener.
type testServer struct{ addr string }

func newServer(t testing.TB, h http.Handler) *testServer {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return &testServer{addr: addrOf(s)}
}

func newServerH2C(t testing.TB, h http.Handler) *testServer {
	s := httptest.NewUnstartedServer(h)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	s.Config.Protocols = &p
	s.Start()
	t.Cleanup(s.Close)
	return &testServer{addr: addrOf(s)}
}

func httptestTLSRequest(target string) *http.Request {
	r := httptest.NewRequest("GET", target, nil)
	r.TLS = &tls.ConnectionState{HandshakeComplete: true}
	return r
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
