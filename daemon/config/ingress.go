package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Ingress configures the HTTP/HTTPS reverse proxy serving Ingress objects.
type Ingress struct {
	// Enabled serves Ingresses of nodenet's IngressClass on this node.
	Enabled bool `toml:"enabled"`
	// HTTPListen and HTTPSListen are host:port; "" opens no such listener.
	HTTPListen  string `toml:"http_listen"`
	HTTPSListen string `toml:"https_listen"`
	// LoadBalancing picks an endpoint: round-robin or least-requests.
	LoadBalancing string `toml:"load_balancing"`
	// DefaultCertificate and DefaultKey are PEM files served to clients whose
	// SNI names no Ingress TLS host; both "" means a self-signed certificate
	// generated at start.
	DefaultCertificate string `toml:"default_certificate"`
	DefaultKey         string `toml:"default_key"`
	// AccessLog logs one line per request.
	AccessLog         bool          `toml:"access_log"`
	ReadHeaderTimeout time.Duration `toml:"read_header_timeout"`
	IdleTimeout       time.Duration `toml:"idle_timeout"`
	MaxHeaderBytes    int           `toml:"max_header_bytes"`
	// MaxBodySize limits request bodies (nginx size syntax: "1m", "512k",
	// "0" = unlimited); the proxy-body-size annotation overrides it.
	MaxBodySize string `toml:"max_body_size"`
	// EjectionTime: an endpoint that failed a connect or answered 502-504 is
	// skipped this long (passive health checking).
	EjectionTime time.Duration `toml:"ejection_time"`
	// StatusAddresses are written to status.loadBalancer.ingress of served
	// Ingresses; empty: the InternalIPs of the Ready nodes.
	StatusAddresses []string `toml:"status_addresses"`
}

// The load balancing policies of ingress.load_balancing.
const (
	RoundRobin    = "round-robin"
	LeastRequests = "least-requests"
)

func defaultIngress() Ingress {
	return Ingress{
		Enabled:           true,
		HTTPListen:        ":80",
		HTTPSListen:       ":443",
		LoadBalancing:     RoundRobin,
		AccessLog:         true,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    1 << 20,
		MaxBodySize:       "1m",
		EjectionTime:      30 * time.Second,
		StatusAddresses:   []string{},
	}
}

func (in Ingress) validate(s *section) {
	if in.HTTPListen != "" {
		listenKey(s, "http_listen", in.HTTPListen)
	}
	if in.HTTPSListen != "" {
		listenKey(s, "https_listen", in.HTTPSListen)
	}
	if in.HTTPListen != "" && in.HTTPListen == in.HTTPSListen {
		s.add("https_listen", "must differ from http_listen, both are %q", in.HTTPListen)
	}
	if in.LoadBalancing != RoundRobin && in.LoadBalancing != LeastRequests {
		s.add("load_balancing", "must be one of %s, %s, got %q", RoundRobin, LeastRequests, in.LoadBalancing)
	}
	if (in.DefaultCertificate == "") != (in.DefaultKey == "") {
		s.add("default_key", "default_certificate and default_key must be set together (or both empty for a self-signed certificate)")
	}
	if in.ReadHeaderTimeout <= 0 {
		s.add("read_header_timeout", "must be > 0 (it stops slowloris clients), got %s", in.ReadHeaderTimeout)
	}
	if in.IdleTimeout <= 0 {
		s.add("idle_timeout", "must be > 0, got %s", in.IdleTimeout)
	}
	if in.MaxHeaderBytes < 4096 {
		s.add("max_header_bytes", "must be at least 4096, got %d", in.MaxHeaderBytes)
	}
	if _, err := ParseSize(in.MaxBodySize); err != nil {
		s.add("max_body_size", "%v", err)
	}
	if in.EjectionTime <= 0 {
		s.add("ejection_time", "must be > 0, got %s", in.EjectionTime)
	}
	for i, a := range in.StatusAddresses {
		if ip, err := netip.ParseAddr(a); err != nil || ip.Zone() != "" {
			s.add(fmt.Sprintf("status_addresses[%d]", i), "%q is not an IP address without zone", a)
		}
	}
}

// ParseSize parses an nginx size: a non-negative integer with an optional
// unit k, m or g (either case, powers of 1024). 0 means unlimited.
func ParseSize(v string) (int64, error) {
	num, mult := v, int64(1)
	if n := len(v); n > 0 {
		switch v[n-1] {
		case 'k', 'K':
			num, mult = v[:n-1], 1<<10
		case 'm', 'M':
			num, mult = v[:n-1], 1<<20
		case 'g', 'G':
			num, mult = v[:n-1], 1<<30
		}
	}
	// ParseInt accepts a sign; nginx does not.
	if num == "" || strings.ContainsAny(num, "+-") {
		return 0, fmt.Errorf("size must be a number with an optional unit k, m or g, e.g. \"1m\", got %q", v)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > (1<<62)/mult {
		return 0, fmt.Errorf("size must be a number with an optional unit k, m or g, e.g. \"1m\", got %q", v)
	}
	return n * mult, nil
}
