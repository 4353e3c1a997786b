package proxy

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	networkingv1 "k8s.io/api/networking/v1"
)

// counters returns "name{labels} value" for every sample of family name.
func counters(t *testing.T, reg *prometheus.Registry, name string) []string {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			s := ""
			for _, l := range m.GetLabel() {
				s += fmt.Sprintf("%s=%q,", l.GetName(), l.GetValue())
			}
			switch {
			case m.Counter != nil:
				out = append(out, fmt.Sprintf("{%s} %v", s, m.GetCounter().GetValue()))
			case m.Histogram != nil:
				out = append(out, fmt.Sprintf("{%s} %d", s, m.GetHistogram().GetSampleCount()))
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestMetrics(t *testing.T) {
	be := echo(t, "be")
	reg := prometheus.NewRegistry()
	h := New(testOptions(), NewMetrics(reg), discard())
	t.Cleanup(h.Close)
	h.Swap(build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web"), ingress("gone", 1, "b.test", "/", "none")},
		svc{"web", []string{addrOf(be)}}, svc{"none", nil}))
	for range 3 {
		do(h, "GET", "http://a.test/", nil)
	}
	do(h, "GET", "http://b.test/", nil)
	do(h, "GET", "http://c.test/", nil)
	want := []string{
		`{code="200",ingress="default/web",service="default/web",} 3`,
		`{code="404",ingress="",service="",} 1`,
		`{code="503",ingress="default/gone",service="default/none",} 1`,
	}
	if diff := cmp.Diff(want, counters(t, reg, "nodenet_ingress_requests_total")); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{`{service="default/none",} 0`, `{service="default/web",} 3`}, counters(t, reg, "nodenet_ingress_upstream_duration_seconds")); diff != "" {
		t.Errorf("upstream durations (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{`{ingress="",} 1`, `{ingress="default/gone",} 1`, `{ingress="default/web",} 3`},
		counters(t, reg, "nodenet_ingress_request_duration_seconds")); diff != "" {
		t.Errorf("request durations (-want +got):\n%s", diff)
	}
	// A table without the Ingress drops its series.
	h.Swap(build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{addrOf(be)}}))
	if diff := cmp.Diff(want[:2], counters(t, reg, "nodenet_ingress_requests_total")); diff != "" {
		t.Errorf("after the swap (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{`{service="default/web",} 3`}, counters(t, reg, "nodenet_ingress_upstream_duration_seconds")); diff != "" {
		t.Errorf("upstream durations after the swap (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{`{ingress="",} 1`, `{ingress="default/web",} 3`}, counters(t, reg, "nodenet_ingress_request_duration_seconds")); diff != "" {
		t.Errorf("request durations after the swap (-want +got):\n%s", diff)
	}
}
