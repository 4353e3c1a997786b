package routes

import (
	"fmt"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

// BenchmarkMatch: 1,000 hosts with 10 paths each; the lookup cost must not
// depend on the number of rules, and must not allocate.
func BenchmarkMatch(b *testing.B) {
	var ings []*networkingv1.Ingress
	for i := range 1000 {
		var paths []path
		for j := range 10 {
			paths = append(paths, path{"Prefix", fmt.Sprintf("/svc%d/api", j), "s"})
		}
		ings = append(ings, ing(fmt.Sprintf("i%d", i), i, rule(fmt.Sprintf("host%d.example.com", i), paths...)))
	}
	tb, _ := Build(Input{Ingresses: ings, Classes: classes})
	b.ReportAllocs()
	for b.Loop() {
		if tb.Match("host517.example.com", "/svc7/api/v1/users/42") == nil {
			b.Fatal("no match")
		}
	}
}
