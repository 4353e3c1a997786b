// Package routes compiles Ingresses, IngressClasses, Services,
// EndpointSlices and TLS Secrets into an immutable route table and answers
// "which route serves this host and path". It is pure: no I/O, no clock,
// no locks; the proxy swaps whole tables atomically.
//
// Matching (the Ingress API reference, plus what it leaves open):
//   - The host picks one group of rules: the exact host if any rule names
//     it, else the wildcard "*.parent" (one label only), else the host-less
//     rules. Like ingress-nginx (a server per host), a request never falls
//     through to a less specific host group.
//   - Within the group: an Exact path equal to the request path wins;
//     otherwise the longest matching Prefix (element-wise on "/", trailing
//     slash ignored) or regex path (use-regex, anchored at the start, case
//     insensitive), by the length of the rule's path, Prefix before regex
//     at equal length. ImplementationSpecific is Prefix unless use-regex is on.
//   - Nothing matched: the defaultBackend (of the oldest Ingress that has
//     one), else no route (404).
package routes

import (
	"regexp"
	"strings"

	"github.com/nodenet/nodenet/ingress/annotations"
)

// Backend is one Service port and its endpoints.
type Backend struct {
	// Key identifies the backend across tables ("ns/service:port").
	Key       string
	Service   string // "ns/name", the metrics label
	Endpoints []string
	// Protocol is the backend-protocol of the Ingress using the backend.
	Protocol string
}

// Canary is the alternative backend of a route (from a canary Ingress).
type Canary struct {
	Ingress     string // "ns/name" of the canary Ingress
	Backend     *Backend
	Weight      int
	WeightTotal int
	Header      string
	HeaderValue string
}

// Route is one rule path (or a defaultBackend) and how to serve it.
type Route struct {
	Ingress  string // "ns/name"
	Host     string // "" for host-less rules
	Path     string
	PathType string // Exact, Prefix or Regex (as matched); "" for a defaultBackend
	Backend  *Backend
	Canary   *Canary
	Settings annotations.Config
	// TLS: the rule's host is listed in the Ingress's spec.tls.
	TLS bool

	re *regexp.Regexp // Regex routes, and the rewrite of every route with a rewrite-target
}

// Path types as matched.
const (
	Exact  = "Exact"
	Prefix = "Prefix"
	Regex  = "Regex"
)

// Rewrite returns the path to send upstream: unchanged without
// rewrite-target; else the target with $1..$n expanded from the rule's regex
// (use-regex). As in ingress-nginx the whole path is replaced, so without
// captures every path becomes the target.
func (r *Route) Rewrite(path string) string {
	if r.Settings.RewriteTarget == "" || r.re == nil {
		return path
	}
	m := r.re.FindStringSubmatchIndex(path)
	if m == nil {
		return path
	}
	return string(r.re.ExpandString(nil, r.Settings.RewriteTarget, path, m))
}

// hostRules are the paths of one host group.
type hostRules struct {
	exact  map[string]*Route
	prefix map[string]*Route // key: path without trailing slashes ("" for "/")
	// regex routes, longest pattern first.
	regex []*Route
}

// Table is an immutable route table.
type Table struct {
	exact    map[string]*hostRules
	wildcard map[string]*hostRules // key: the parent domain of "*.parent"
	anyHost  *hostRules
	// Default serves what no rule matches; nil: 404.
	Default *Route
	// Routes lists every route (canary backends included through Canary).
	Routes []*Route
	// Certs maps each TLS host (exact or "*.parent") to its Secret "ns/name".
	Certs map[string]string
	// Served lists the "ns/name" of every Ingress this table serves.
	Served []string
}

// Empty is a table that serves nothing.
func Empty() *Table { return &Table{Certs: map[string]string{}} }

// Match returns the route for a request's host (any case, port allowed) and
// path, or nil.
func (t *Table) Match(host, path string) *Route {
	h := t.hostGroup(NormalizeHost(host))
	if h != nil {
		if r := h.match(path); r != nil {
			return r
		}
	}
	return t.Default
}

func (t *Table) hostGroup(host string) *hostRules {
	if h := t.exact[host]; h != nil {
		return h
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		if h := t.wildcard[host[i+1:]]; h != nil {
			return h
		}
	}
	return t.anyHost
}

func (h *hostRules) match(path string) *Route {
	if r := h.exact[path]; r != nil {
		return r
	}
	var best *Route
	bestLen := -1
	// Walk the path's element prefixes, longest first: the first hit is
	// the longest matching Prefix rule, whatever the number of rules.
	for p := path; ; {
		p = strings.TrimRight(p, "/")
		if r := h.prefix[p]; r != nil {
			best, bestLen = r, len(p)
			break
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			break
		}
		p = p[:i]
	}
	for _, r := range h.regex {
		if len(r.Path) <= bestLen {
			break
		}
		if r.re.MatchString(path) {
			return r
		}
	}
	return best
}

// NormalizeHost lowercases host and strips a port and a trailing dot. It
// allocates only when host has upper case letters.
func NormalizeHost(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		// "[v6]:port", "v4:port" or "host:port"; a bare IPv6 literal has
		// more than one colon and no brackets.
		if host[0] == '[' {
			if j := strings.IndexByte(host, ']'); j > 0 {
				host = host[1:j]
			}
		} else if strings.IndexByte(host, ':') == i {
			host = host[:i]
		}
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}
