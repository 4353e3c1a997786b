package proxy

import (
	"io"
	"net/http"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

// BenchmarkProxy: one keep-alive client through the handler to a loopback
// backend; the per-request cost of the proxy, allocations included.
func BenchmarkProxy(b *testing.B) {
	be := echo(b, "be")
	h := newHandler(b, testOptions(), build(b, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{addrOf(be)}}))
	srv := front(b, h)
	req, _ := http.NewRequest("GET", srv.URL+"/x", nil)
	req.Host = "a.test"
	client := srv.Client()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
