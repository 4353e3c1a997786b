package routes

import (
	"cmp"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/nodenet/nodenet/ingress/annotations"
)

// Controller is the IngressClass spec.controller nodenet serves.
const Controller = "nodenet.io/ingress"

const (
	// ClassAnnotation is the pre-IngressClass way of naming a class.
	ClassAnnotation = "kubernetes.io/ingress.class"
	// DefaultClassAnnotation marks the class of Ingresses that name none.
	DefaultClassAnnotation = "ingressclass.kubernetes.io/is-default-class"
)

// Event reasons.
const (
	ReasonConflict   = "RuleConflict"
	ReasonAnnotation = "InvalidAnnotation"
	ReasonInvalid    = "InvalidRule"
	ReasonTLS        = "TLSSecret"
)

// Input is what Build reads, straight from the listers.
type Input struct {
	Ingresses []*networkingv1.Ingress
	Classes   []*networkingv1.IngressClass
	Services  []*corev1.Service
	Slices    []*discoveryv1.EndpointSlice
	// Secrets: only their existence is checked here; tlsstore loads them.
	Secrets []*corev1.Secret
}

// Problem is something wrong with one Ingress, for a Warning Event.
type Problem struct {
	Namespace, Name string
	Reason          string
	Message         string
}

// Build compiles the served Ingresses into a table. Conflicts are resolved
// oldest Ingress first (creation time, then namespace/name); each loser and
// every invalid annotation or rule is reported as a Problem. Build never
// fails: what it cannot serve it reports and leaves out.
func Build(in Input) (*Table, []Problem) {
	b := &builder{
		t:        &Table{exact: map[string]*hostRules{}, wildcard: map[string]*hostRules{}, Certs: map[string]string{}},
		in:       in,
		owners:   map[ruleKey]*Route{},
		backends: map[string]*Backend{},
		certOwn:  map[string]string{},
		tlsHosts: map[string]bool{},
	}
	ings := Served(in.Ingresses, in.Classes)
	var canaries []parsed
	for _, ing := range ings {
		settings, problems := annotations.Parse(ing.Annotations)
		for _, p := range problems {
			b.problem(ing, ReasonAnnotation, "%s", p)
		}
		b.t.Served = append(b.t.Served, key(ing))
		if settings.Canary {
			canaries = append(canaries, parsed{ing, settings})
			continue
		}
		b.addIngress(ing, settings)
	}
	for _, c := range canaries {
		b.addCanary(c.ing, c.settings)
	}
	// A host served over TLS by any Ingress redirects plain HTTP (unless
	// the Ingress of the route says ssl-redirect: false).
	for _, r := range b.t.Routes {
		r.TLS = b.hasTLS(r.Host)
	}
	for _, h := range b.allGroups() {
		slices.SortStableFunc(h.regex, func(x, y *Route) int { return len(y.Path) - len(x.Path) })
	}
	slices.Sort(b.t.Served)
	return b.t, b.problems
}

type parsed struct {
	ing      *networkingv1.Ingress
	settings annotations.Config
}

// ruleKey identifies a rule for conflict detection.
type ruleKey struct{ host, pathType, path string }

type builder struct {
	t  *Table
	in Input
	// The indexes of in, by "namespace/name", made on first use: every
	// EndpointSlice change in the cluster rebuilds the table, and at
	// 10,000 Services indexing them all cost megabytes each time, also
	// on nodes that serve no Ingress at all.
	services map[string]*corev1.Service
	slices   map[string][]*discoveryv1.EndpointSlice
	secrets  map[string]bool
	owners   map[ruleKey]*Route
	backends map[string]*Backend
	certOwn  map[string]string // TLS host -> owning Ingress
	tlsHosts map[string]bool
	problems []Problem
}

func key(ing *networkingv1.Ingress) string { return ing.Namespace + "/" + ing.Name }

// service is the Service "namespace/name", or nil.
func (b *builder) service(k string) *corev1.Service {
	if b.services == nil {
		b.services = make(map[string]*corev1.Service, len(b.in.Services))
		for _, s := range b.in.Services {
			b.services[s.Namespace+"/"+s.Name] = s
		}
	}
	return b.services[k]
}

// slicesOf are the EndpointSlices of the Service "namespace/name".
func (b *builder) slicesOf(k string) []*discoveryv1.EndpointSlice {
	if b.slices == nil {
		b.slices = map[string][]*discoveryv1.EndpointSlice{}
		for _, s := range b.in.Slices {
			if svc := s.Labels[discoveryv1.LabelServiceName]; svc != "" {
				k := s.Namespace + "/" + svc
				b.slices[k] = append(b.slices[k], s)
			}
		}
	}
	return b.slices[k]
}

// hasSecret reports whether the TLS Secret "namespace/name" exists.
func (b *builder) hasSecret(k string) bool {
	if b.secrets == nil {
		b.secrets = make(map[string]bool, len(b.in.Secrets))
		for _, s := range b.in.Secrets {
			b.secrets[s.Namespace+"/"+s.Name] = true
		}
	}
	return b.secrets[k]
}

func (b *builder) problem(ing *networkingv1.Ingress, reason, format string, args ...any) {
	b.problems = append(b.problems, Problem{Namespace: ing.Namespace, Name: ing.Name, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

// Served returns the Ingresses of nodenet's class, oldest first.
func Served(ings []*networkingv1.Ingress, classes []*networkingv1.IngressClass) []*networkingv1.Ingress {
	ours := map[string]bool{}
	defaultOurs := false
	for _, c := range classes {
		if c.Spec.Controller != Controller {
			continue
		}
		ours[c.Name] = true
		if c.Annotations[DefaultClassAnnotation] == "true" {
			defaultOurs = true
		}
	}
	var out []*networkingv1.Ingress
	for _, ing := range ings {
		var served bool
		if name := ing.Spec.IngressClassName; name != nil {
			served = ours[*name]
		} else if name, ok := ing.Annotations[ClassAnnotation]; ok {
			served = ours[name]
		} else {
			served = defaultOurs
		}
		if served {
			out = append(out, ing)
		}
	}
	slices.SortFunc(out, func(a, b *networkingv1.Ingress) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(key(a), key(b))
	})
	return out
}

func (b *builder) addIngress(ing *networkingv1.Ingress, s annotations.Config) {
	b.addTLS(ing)
	if db := ing.Spec.DefaultBackend; db != nil {
		switch {
		case db.Service == nil:
			b.problem(ing, ReasonInvalid, "defaultBackend: only Service backends are supported")
		case b.t.Default != nil:
			b.problem(ing, ReasonConflict, "defaultBackend: Ingress %s (older) already sets the default backend; ignored", b.t.Default.Ingress)
		default:
			r := &Route{Ingress: key(ing), Backend: b.backend(ing.Namespace, db.Service, s), Settings: s}
			b.t.Default = r
			b.t.Routes = append(b.t.Routes, r)
		}
	}
	b.eachPath(ing, s, func(rule networkingv1.IngressRule, p networkingv1.HTTPIngressPath, r *Route, where string) {
		k := ruleKey{r.Host, r.PathType, normPath(r)}
		if old := b.owners[k]; old != nil {
			b.problem(ing, ReasonConflict, "%s: host %q path %q (%s) is already served by Ingress %s (older); ignored",
				where, rule.Host, p.Path, r.PathType, old.Ingress)
			return
		}
		r.Backend = b.backend(ing.Namespace, p.Backend.Service, s)
		b.owners[k] = r
		b.insert(r)
	})
}

// eachPath calls fn with every rule path of ing that has a Service backend
// and validates into a Route (without backend); it reports the others.
func (b *builder) eachPath(ing *networkingv1.Ingress, s annotations.Config,
	fn func(rule networkingv1.IngressRule, p networkingv1.HTTPIngressPath, r *Route, where string)) {
	for i, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		host := strings.ToLower(rule.Host)
		for j, p := range rule.HTTP.Paths {
			where := fmt.Sprintf("rules[%d].http.paths[%d]", i, j)
			if p.Backend.Service == nil {
				b.problem(ing, ReasonInvalid, "%s: only Service backends are supported; ignored", where)
				continue
			}
			if r, ok := b.route(ing, host, p, s, where); ok {
				fn(rule, p, r, where)
			}
		}
	}
}

// route validates one rule path into a Route without backend.
func (b *builder) route(ing *networkingv1.Ingress, host string, p networkingv1.HTTPIngressPath, s annotations.Config, where string) (*Route, bool) {
	if host != "" && !validHost(host) {
		b.problem(ing, ReasonInvalid, "%s: host %q is not a DNS name or *.wildcard; ignored", where, host)
		return nil, false
	}
	path := p.Path
	if path == "" {
		path = "/"
	}
	r := &Route{Ingress: key(ing), Host: host, Path: path, Settings: s}
	pt := networkingv1.PathTypeImplementationSpecific
	if p.PathType != nil {
		pt = *p.PathType
	}
	switch {
	case s.UseRegex:
		re, err := regexp.Compile("(?i)^" + path)
		if err != nil {
			b.problem(ing, ReasonInvalid, "%s: path %q is not a valid regular expression (use-regex): %v; ignored", where, path, err)
			return nil, false
		}
		r.PathType, r.re = Regex, re
	case !strings.HasPrefix(path, "/"):
		b.problem(ing, ReasonInvalid, "%s: path %q must start with /; ignored", where, path)
		return nil, false
	case pt == networkingv1.PathTypeExact:
		r.PathType = Exact
	default:
		r.PathType = Prefix
	}
	if s.RewriteTarget != "" && r.re == nil {
		r.re = regexp.MustCompile("^" + regexp.QuoteMeta(strings.TrimRight(path, "/")))
	}
	return r, true
}

func normPath(r *Route) string {
	if r.PathType == Prefix {
		return strings.TrimRight(r.Path, "/")
	}
	return r.Path
}

func (b *builder) group(host string) *hostRules {
	var m map[string]*hostRules
	k := host
	switch {
	case host == "":
		if b.t.anyHost == nil {
			b.t.anyHost = newHostRules()
		}
		return b.t.anyHost
	case strings.HasPrefix(host, "*."):
		m, k = b.t.wildcard, host[2:]
	default:
		m = b.t.exact
	}
	if m[k] == nil {
		m[k] = newHostRules()
	}
	return m[k]
}

func newHostRules() *hostRules {
	return &hostRules{exact: map[string]*Route{}, prefix: map[string]*Route{}}
}

func (b *builder) allGroups() []*hostRules {
	var out []*hostRules
	for _, h := range b.t.exact {
		out = append(out, h)
	}
	for _, h := range b.t.wildcard {
		out = append(out, h)
	}
	if b.t.anyHost != nil {
		out = append(out, b.t.anyHost)
	}
	return out
}

func (b *builder) insert(r *Route) {
	h := b.group(r.Host)
	switch r.PathType {
	case Exact:
		h.exact[r.Path] = r
	case Prefix:
		h.prefix[normPath(r)] = r
	case Regex:
		h.regex = append(h.regex, r)
	}
	b.t.Routes = append(b.t.Routes, r)
}

// addCanary attaches a canary Ingress's paths to the routes with the same
// host, path and type.
func (b *builder) addCanary(ing *networkingv1.Ingress, s annotations.Config) {
	// The canary's own use-regex decides how its path reads.
	b.eachPath(ing, s, func(rule networkingv1.IngressRule, p networkingv1.HTTPIngressPath, probe *Route, where string) {
		main := b.owners[ruleKey{probe.Host, probe.PathType, normPath(probe)}]
		switch {
		case main == nil:
			b.problem(ing, ReasonInvalid, "%s: canary for host %q path %q (%s) but no Ingress serves that rule; ignored", where, rule.Host, p.Path, probe.PathType)
		case main.Canary != nil:
			b.problem(ing, ReasonConflict, "%s: host %q path %q already has canary Ingress %s (older); ignored", where, rule.Host, p.Path, main.Canary.Ingress)
		default:
			main.Canary = &Canary{Ingress: key(ing), Backend: b.backend(ing.Namespace, p.Backend.Service, s),
				Weight: s.CanaryWeight, WeightTotal: s.CanaryWeightTotal, Header: s.CanaryByHeader, HeaderValue: s.CanaryByHeaderValue}
		}
	})
}

// hasTLS reports whether host is a TLS host: listed itself, or an exact
// host covered by a listed "*.parent".
func (b *builder) hasTLS(host string) bool {
	if host == "" {
		return false
	}
	if b.tlsHosts[host] {
		return true
	}
	if _, parent, ok := strings.Cut(host, "."); ok && !strings.HasPrefix(host, "*.") {
		return b.tlsHosts["*."+parent]
	}
	return false
}

// addTLS records the certificates and TLS hosts of ing's spec.tls.
func (b *builder) addTLS(ing *networkingv1.Ingress) {
	for i, t := range ing.Spec.TLS {
		secret := ""
		if t.SecretName != "" {
			secret = ing.Namespace + "/" + t.SecretName
			if !b.hasSecret(secret) {
				b.problem(ing, ReasonTLS, "tls[%d]: Secret %s of type kubernetes.io/tls not found; the default certificate is served for %s",
					i, secret, strings.Join(t.Hosts, ", "))
			}
		}
		for _, h := range t.Hosts {
			h = strings.ToLower(h)
			b.tlsHosts[h] = true
			if secret == "" {
				continue
			}
			if owner, ok := b.certOwn[h]; ok && b.t.Certs[h] != secret {
				b.problem(ing, ReasonConflict, "tls[%d]: host %q already has a certificate from Ingress %s (older); ignored", i, h, owner)
				continue
			}
			b.certOwn[h] = key(ing)
			b.t.Certs[h] = secret
		}
	}
}

// backend resolves a Service port to its ready endpoints; shared between
// the routes that name the same port with the same protocol.
func (b *builder) backend(ns string, sb *networkingv1.IngressServiceBackend, s annotations.Config) *Backend {
	port := sb.Port.Name
	if sb.Port.Number != 0 {
		port = strconv.Itoa(int(sb.Port.Number))
	}
	k := ns + "/" + sb.Name + ":" + port + "/" + s.BackendProtocol
	if be := b.backends[k]; be != nil {
		return be
	}
	be := &Backend{Key: k, Service: ns + "/" + sb.Name, Protocol: s.BackendProtocol}
	be.Endpoints = b.endpoints(ns, sb)
	b.backends[k] = be
	return be
}

func (b *builder) endpoints(ns string, sb *networkingv1.IngressServiceBackend) []string {
	svc := b.service(ns + "/" + sb.Name)
	if svc == nil {
		return nil
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if (sb.Port.Number != 0 && p.Port == sb.Port.Number) || (sb.Port.Number == 0 && p.Name == sb.Port.Name) {
			sp = p
			break
		}
	}
	if sp == nil || (sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP) {
		return nil
	}
	var ready, terminating []string
	for _, sl := range b.slicesOf(ns + "/" + sb.Name) {
		var port int32
		for _, p := range sl.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if name == sp.Name && proto == corev1.ProtocolTCP && p.Port != nil {
				port = *p.Port
				break
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range sl.Endpoints {
			c := ep.Conditions
			isReady := c.Ready == nil || *c.Ready
			fallback := !isReady && c.Serving != nil && *c.Serving && c.Terminating != nil && *c.Terminating
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				addr := netip.AddrPortFrom(ip, uint16(port)).String()
				switch {
				case isReady:
					ready = append(ready, addr)
				case fallback:
					terminating = append(terminating, addr)
				}
			}
		}
	}
	// Serving-but-terminating endpoints only when none is ready, as the
	// Service proxy does.
	if len(ready) == 0 {
		ready = terminating
	}
	slices.Sort(ready)
	return slices.Compact(ready)
}

var hostRE = regexp.MustCompile(`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func validHost(h string) bool { return len(h) <= 253 && hostRE.MatchString(h) }
