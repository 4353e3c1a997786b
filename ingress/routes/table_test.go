package routes

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/nodenet/nodenet/ingress/annotations"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// path is one rule path: "Exact /foo svc" style.
type path struct {
	typ, path, svc string
}

type ingOpt func(*networkingv1.Ingress)

func ing(name string, age int, opts ...ingOpt) *networkingv1.Ingress {
	i := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name,
		CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Minute)), Annotations: map[string]string{}},
		Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("nodenet")}}
	for _, o := range opts {
		o(i)
	}
	return i
}

func rule(host string, paths ...path) ingOpt {
	return func(i *networkingv1.Ingress) {
		r := networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{}}}
		for _, p := range paths {
			hp := networkingv1.HTTPIngressPath{Path: p.path, Backend: svcBackend(p.svc)}
			if p.typ != "" {
				hp.PathType = ptr.To(networkingv1.PathType(p.typ))
			}
			r.HTTP.Paths = append(r.HTTP.Paths, hp)
		}
		i.Spec.Rules = append(i.Spec.Rules, r)
	}
}

func svcBackend(svc string) networkingv1.IngressBackend {
	return networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Number: 80}}}
}

func ann(k, v string) ingOpt { return func(i *networkingv1.Ingress) { i.Annotations[k] = v } }

func class(name *string) ingOpt {
	return func(i *networkingv1.Ingress) { i.Spec.IngressClassName = name }
}

func defaultBackend(svc string) ingOpt {
	return func(i *networkingv1.Ingress) { b := svcBackend(svc); i.Spec.DefaultBackend = &b }
}

func tls(secret string, hosts ...string) ingOpt {
	return func(i *networkingv1.Ingress) {
		i.Spec.TLS = append(i.Spec.TLS, networkingv1.IngressTLS{Hosts: hosts, SecretName: secret})
	}
}

func ourClass(name string, isDefault bool) *networkingv1.IngressClass {
	c := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: networkingv1.IngressClassSpec{Controller: Controller}}
	if isDefault {
		c.Annotations = map[string]string{DefaultClassAnnotation: "true"}
	}
	return c
}

var classes = []*networkingv1.IngressClass{ourClass("nodenet", false),
	{ObjectMeta: metav1.ObjectMeta{Name: "nginx"}, Spec: networkingv1.IngressClassSpec{Controller: "k8s.io/ingress-nginx"}}}

// served returns "svc" of the route that serves host+path, or "404".
func served(tb *Table, host, p string) string {
	r := tb.Match(host, p)
	if r == nil {
		return "404"
	}
	return r.Backend.Service[len("default/"):]
}

func TestMatch(t *testing.T) {
	ings := []*networkingv1.Ingress{
		ing("main", 0, rule("foo.example.com",
			path{"Prefix", "/foo", "foo"},
			path{"Exact", "/exact", "exact"},
			path{"Prefix", "/exact", "exact-prefix"},
			path{"Prefix", "/long/er/", "longer"},
			path{"Prefix", "/long", "long"},
			path{"ImplementationSpecific", "/impl", "impl"},
			path{"Exact", "/", "root-exact"},
		)),
		ing("wild", 1, rule("*.example.com", path{"Prefix", "/", "wild"})),
		ing("anyhost", 2, rule("", path{"Prefix", "/any", "any"}, path{"Exact", "/x/", "x-slash"})),
		ing("dflt", 3, defaultBackend("default-be")),
		ing("regex", 4, ann(annotations.Prefix+"use-regex", "true"),
			rule("re.example.org", path{"ImplementationSpecific", "/api/v[0-9]+", "api-re"}, path{"Prefix", "/api", "api"})),
	}
	tb, problems := Build(Input{Ingresses: ings, Classes: classes})
	if len(problems) != 0 {
		t.Fatalf("problems: %v", problems)
	}
	tests := []struct{ host, path, want string }{
		{"foo.example.com", "/foo", "foo"},
		{"foo.example.com", "/foo/", "foo"},
		{"foo.example.com", "/foo/bar", "foo"},
		{"foo.example.com", "/foobar", "wild"}, // not /foo; falls to nothing in the group → default? no: group has no "/" prefix
		{"FOO.Example.COM:8080", "/foo", "foo"},
		{"foo.example.com.", "/foo", "foo"},
		{"foo.example.com", "/exact", "exact"},         // Exact beats Prefix at equal length
		{"foo.example.com", "/exact/", "exact-prefix"}, // Exact does not match a trailing slash
		{"foo.example.com", "/exact/a", "exact-prefix"},
		{"foo.example.com", "/long/er", "longer"}, // trailing slash of the rule ignored
		{"foo.example.com", "/long/er/x", "longer"},
		{"foo.example.com", "/long/e", "long"}, // longest match, element-wise
		{"foo.example.com", "/longer", "default-be"},
		{"foo.example.com", "/impl/x", "impl"},
		{"foo.example.com", "/", "root-exact"},
		{"foo.example.com", "/nothing", "default-be"}, // no fall-through to the wildcard group
		{"bar.example.com", "/anything", "wild"},      // wildcard: one label
		{"a.bar.example.com", "/any", "any"},          // two labels: not the wildcard, host-less rules
		{"example.com", "/any", "any"},                // the parent itself is not matched by *.
		{"other.test", "/any/thing", "any"},
		{"other.test", "/x/", "x-slash"},
		{"other.test", "/x", "default-be"},
		{"other.test", "/anything", "default-be"},
		{"[2001:db8::1]:80", "/any", "any"},
		{"re.example.org", "/api/v1/users", "api-re"}, // regex longer than /api
		{"re.example.org", "/API/V2", "api-re"},       // case-insensitive
		{"re.example.org", "/api/vx", "api"},
	}
	// The wildcard group has a "/" rule, so /foobar on foo.example.com stays in foo's group.
	tests[3].want = "default-be"
	for _, tt := range tests {
		if got := served(tb, tt.host, tt.path); got != tt.want {
			t.Errorf("Match(%q, %q) = %s, want %s", tt.host, tt.path, got, tt.want)
		}
	}
}

func TestMatchNoDefault(t *testing.T) {
	tb, _ := Build(Input{Ingresses: []*networkingv1.Ingress{ing("a", 0, rule("a.test", path{"Prefix", "/a", "a"}))}, Classes: classes})
	for _, tt := range []struct{ host, path, want string }{{"a.test", "/a", "a"}, {"a.test", "/b", "404"}, {"b.test", "/a", "404"}} {
		if got := served(tb, tt.host, tt.path); got != tt.want {
			t.Errorf("Match(%q, %q) = %s, want %s", tt.host, tt.path, got, tt.want)
		}
	}
	if got := served(Empty(), "a.test", "/"); got != "404" {
		t.Errorf("Empty().Match = %s", got)
	}
}

func TestClassSelection(t *testing.T) {
	tests := []struct {
		name    string
		classes []*networkingv1.IngressClass
		ing     *networkingv1.Ingress
		want    bool
	}{
		{"our class", classes, ing("x", 0), true},
		{"other controller", classes, ing("x", 0, class(ptr.To("nginx"))), false},
		{"unknown class", classes, ing("x", 0, class(ptr.To("missing"))), false},
		{"no class, no default", classes, ing("x", 0, class(nil)), false},
		{"no class, our default", []*networkingv1.IngressClass{ourClass("nodenet", true)}, ing("x", 0, class(nil)), true},
		{"no class, other default", []*networkingv1.IngressClass{ourClass("nodenet", false),
			{ObjectMeta: metav1.ObjectMeta{Name: "nginx", Annotations: map[string]string{DefaultClassAnnotation: "true"}}, Spec: networkingv1.IngressClassSpec{Controller: "k8s.io/ingress-nginx"}}},
			ing("x", 0, class(nil)), false},
		{"old annotation ours", classes, ing("x", 0, class(nil), ann(ClassAnnotation, "nodenet")), true},
		{"old annotation other", []*networkingv1.IngressClass{ourClass("nodenet", true)}, ing("x", 0, class(nil), ann(ClassAnnotation, "nginx")), false},
		{"spec wins over annotation", classes, ing("x", 0, ann(ClassAnnotation, "nginx")), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := len(Served([]*networkingv1.Ingress{tt.ing}, tt.classes)) == 1
			if got != tt.want {
				t.Errorf("served = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestConflictsOldestWins(t *testing.T) {
	ings := []*networkingv1.Ingress{
		ing("newer", 5, rule("a.test", path{"Prefix", "/app/", "new"}, path{"Exact", "/app", "new-exact"}), defaultBackend("new-default"),
			tls("new-cert", "a.test")),
		ing("older", 1, rule("a.test", path{"Prefix", "/app", "old"}), defaultBackend("old-default"), tls("old-cert", "a.test")),
	}
	secrets := []*corev1.Secret{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "old-cert"}}, {ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "new-cert"}}}
	tb, problems := Build(Input{Ingresses: ings, Classes: classes, Secrets: secrets})
	if got := served(tb, "a.test", "/app/x"); got != "old" {
		t.Errorf("/app/x served by %s, want old", got)
	}
	if got := served(tb, "a.test", "/app"); got != "new-exact" { // Exact and Prefix do not conflict
		t.Errorf("/app served by %s, want new-exact", got)
	}
	if got := served(tb, "z.test", "/"); got != "old-default" {
		t.Errorf("default served by %s, want old-default", got)
	}
	if tb.Certs["a.test"] != "default/old-cert" {
		t.Errorf("cert = %q", tb.Certs["a.test"])
	}
	want := []Problem{
		{"default", "newer", ReasonConflict, `tls[0]: host "a.test" already has a certificate from Ingress default/older (older); ignored`},
		{"default", "newer", ReasonConflict, "defaultBackend: Ingress default/older (older) already sets the default backend; ignored"},
		{"default", "newer", ReasonConflict, `rules[0].http.paths[0]: host "a.test" path "/app/" (Prefix) is already served by Ingress default/older (older); ignored`},
	}
	if diff := cmp.Diff(want, problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	// The same objects in the other order give the same table.
	tb2, problems2 := Build(Input{Ingresses: []*networkingv1.Ingress{ings[1], ings[0]}, Classes: classes, Secrets: secrets})
	if served(tb2, "a.test", "/app/x") != "old" || !cmp.Equal(problems, problems2) {
		t.Errorf("Build depends on input order: %v", problems2)
	}
}

func TestProblems(t *testing.T) {
	ings := []*networkingv1.Ingress{
		ing("bad", 0, ann(annotations.Prefix+"configuration-snippet", "x"), rule("Bad_Host", path{"Prefix", "/", "a"}),
			tls("missing", "a.test"), rule("a.test", path{"Prefix", "nope", "a"})),
		ing("badre", 1, ann(annotations.Prefix+"use-regex", "true"), rule("b.test", path{"", "/(", "b"})),
		ing("canary", 2, ann(annotations.Prefix+"canary", "true"), rule("c.test", path{"Prefix", "/", "c"})),
	}
	_, problems := Build(Input{Ingresses: ings, Classes: classes})
	var got []string
	for _, p := range problems {
		got = append(got, fmt.Sprintf("%s %s: %s", p.Name, p.Reason, p.Message))
	}
	want := []string{
		"bad InvalidAnnotation: nginx.ingress.kubernetes.io/configuration-snippet: unsupported: configuration snippets are never executed",
		"bad TLSSecret: tls[0]: Secret default/missing of type kubernetes.io/tls not found; the default certificate is served for a.test",
		`bad InvalidRule: rules[0].http.paths[0]: host "bad_host" is not a DNS name or *.wildcard; ignored`,
		`bad InvalidRule: rules[1].http.paths[0]: path "nope" must start with /; ignored`,
		"badre InvalidRule: rules[0].http.paths[0]: path \"/(\" is not a valid regular expression (use-regex): error parsing regexp: missing closing ): `(?i)^/(`; ignored",
		`canary InvalidRule: rules[0].http.paths[0]: canary for host "c.test" path "/" (Prefix) but no Ingress serves that rule; ignored`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

func TestCanaryAndRewrite(t *testing.T) {
	ings := []*networkingv1.Ingress{
		ing("main", 0, ann(annotations.Prefix+"use-regex", "true"), ann(annotations.Prefix+"rewrite-target", "/$2"),
			rule("a.test", path{"ImplementationSpecific", "/app(/|$)(.*)", "main"})),
		ing("canary", 1, ann(annotations.Prefix+"canary", "true"), ann(annotations.Prefix+"canary-weight", "20"),
			ann(annotations.Prefix+"use-regex", "true"), rule("a.test", path{"ImplementationSpecific", "/app(/|$)(.*)", "canary"})),
		ing("plain", 2, ann(annotations.Prefix+"rewrite-target", "/new"), rule("b.test", path{"Prefix", "/old/", "plain"})),
	}
	tb, problems := Build(Input{Ingresses: ings, Classes: classes})
	if len(problems) != 0 {
		t.Fatal(problems)
	}
	r := tb.Match("a.test", "/app/users/7")
	if r == nil || r.Canary == nil || r.Canary.Weight != 20 || r.Canary.Backend.Service != "default/canary" {
		t.Fatalf("route = %+v", r)
	}
	for in, want := range map[string]string{"/app/users/7": "/users/7", "/app": "/", "/APP/x": "/x"} {
		if got := tb.Match("a.test", in).Rewrite(in); got != want {
			t.Errorf("Rewrite(%q) = %q, want %q", in, got, want)
		}
	}
	if got := tb.Match("b.test", "/old/x").Rewrite("/old/x"); got != "/new" {
		t.Errorf("plain Rewrite = %q, want /new (the whole path, as ingress-nginx)", got)
	}
	if !strings.HasSuffix(strings.Join(tb.Served, ","), "default/plain") || len(tb.Served) != 3 {
		t.Errorf("Served = %v", tb.Served)
	}
}

func TestEndpoints(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}, {Name: "admin", Port: 9000}}}}
	slice := func(name string, port int32, pname string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To(pname), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}}, Endpoints: eps}
	}
	ep := func(addr string, ready, serving, terminating bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(serving), Terminating: ptr.To(terminating)}}
	}
	byName := ing("byname", 0, rule("a.test", path{"Prefix", "/", "web"}))
	byName.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port = networkingv1.ServiceBackendPort{Name: "http"}
	tests := []struct {
		name   string
		slices []*discoveryv1.EndpointSlice
		want   []string
	}{
		{"ready only", []*discoveryv1.EndpointSlice{slice("a", 8080, "http", ep("10.0.0.2", true, true, false), ep("10.0.0.1", false, false, false)),
			slice("b", 8080, "http", ep("fd00::1", true, true, false)), slice("c", 9090, "admin", ep("10.0.0.9", true, true, false))},
			[]string{"10.0.0.2:8080", "[fd00::1]:8080"}},
		{"terminating when none ready", []*discoveryv1.EndpointSlice{slice("a", 8080, "http", ep("10.0.0.3", false, true, true), ep("10.0.0.4", false, false, true))},
			[]string{"10.0.0.3:8080"}},
		{"none", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, _ := Build(Input{Ingresses: []*networkingv1.Ingress{byName}, Classes: classes, Services: []*corev1.Service{svc}, Slices: tt.slices})
			if diff := cmp.Diff(tt.want, tb.Match("a.test", "/").Backend.Endpoints); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzMatch: matching never panics, and what it returns obeys the rules:
// an Exact route equals the path, a Prefix route is an element-wise prefix.
func FuzzMatch(f *testing.F) {
	tb, _ := Build(Input{Classes: classes, Ingresses: []*networkingv1.Ingress{
		ing("a", 0, rule("foo.example.com", path{"Prefix", "/foo", "foo"}, path{"Exact", "/foo/bar", "exact"}, path{"Prefix", "/", "root"})),
		ing("b", 1, rule("*.example.com", path{"Prefix", "/a/b/", "ab"})),
		ing("c", 2, rule("", path{"Prefix", "/x", "x"})),
		ing("r", 3, ann(annotations.Prefix+"use-regex", "true"), rule("re.test", path{"", "/v[0-9]+/.*", "re"})),
	}})
	f.Add("foo.example.com", "/foo/bar")
	f.Add("x.example.com:80", "/a/b//c")
	f.Add("[::1]:1", "/x/")
	f.Add("", "")
	f.Add("re.test", "/v1/")
	f.Fuzz(func(t *testing.T, host, p string) {
		r := tb.Match(host, p)
		if r == nil {
			return
		}
		switch r.PathType {
		case Exact:
			if p != r.Path {
				t.Fatalf("Exact %q matched %q", r.Path, p)
			}
		case Prefix:
			pre := strings.TrimRight(r.Path, "/")
			rest, ok := strings.CutPrefix(strings.TrimRight(p, "/"), pre)
			if !ok || (rest != "" && rest[0] != '/') {
				t.Fatalf("Prefix %q matched %q", r.Path, p)
			}
		case Regex:
			if !r.re.MatchString(p) {
				t.Fatalf("Regex %q matched %q", r.Path, p)
			}
		}
		h := NormalizeHost(host)
		if r.Host != "" && r.Host != h && !(strings.HasPrefix(r.Host, "*.") && strings.Count(h, ".") == strings.Count(r.Host, ".") && strings.HasSuffix(h, r.Host[1:])) {
			t.Fatalf("host %q (%q) matched rule host %q", host, h, r.Host)
		}
	})
}

func TestTLSHosts(t *testing.T) {
	tb, _ := Build(Input{Classes: classes, Ingresses: []*networkingv1.Ingress{
		ing("a", 0, rule("a.test", path{"Prefix", "/", "a"}), rule("a.wild.test", path{"Prefix", "/", "a"}),
			rule("x.y.wild.test", path{"Prefix", "/", "a"}), rule("plain.test", path{"Prefix", "/", "a"}), rule("", path{"Prefix", "/", "a"})),
		ing("b", 1, tls("", "a.test", "*.wild.test")),
	}})
	for host, want := range map[string]bool{"a.test": true, "a.wild.test": true, "x.y.wild.test": false, "plain.test": false, "other": false} {
		if got := tb.Match(host, "/").TLS; got != want {
			t.Errorf("%s: TLS = %v, want %v", host, got, want)
		}
	}
}
