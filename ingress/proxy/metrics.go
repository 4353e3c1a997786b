package proxy

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the proxy's Prometheus metrics. Request counting uses plain
// atomic counters per (ingress, service) and status code, collected on
// scrape, so the request path takes no lock.
type Metrics struct {
	requests        *requestCollector
	requestDuration *prometheus.HistogramVec
	upstreamTime    *prometheus.HistogramVec
	// Active counts open client connections (the server's ConnState hook).
	Active prometheus.Gauge
}

// NewMetrics creates the metrics and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	m := &Metrics{
		requests: &requestCollector{stats: map[statsKey]*stats{}, desc: prometheus.NewDesc("nodenet_ingress_requests_total",
			"Requests served by the ingress proxy, by Ingress (namespace/name), Service and status code.", []string{"ingress", "service", "code"}, nil)},
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nodenet_ingress_request_duration_seconds",
			Help: "Time from the request's arrival to the end of the response, by Ingress.", Buckets: buckets}, []string{"ingress"}),
		upstreamTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nodenet_ingress_upstream_duration_seconds",
			Help: "Time from sending a request upstream to its response headers, by Service.", Buckets: buckets}, []string{"service"}),
		Active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodenet_ingress_active_connections",
			Help: "Open client connections of the ingress listeners."}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.requestDuration, m.upstreamTime, m.Active)
	}
	return m
}

type statsKey struct{ ingress, service string }

// stats are the counters of one (ingress, service) pair; index 0 counts
// codes outside 100-599 (none written, e.g. the client went away).
type stats struct {
	key      statsKey
	codes    [600]atomic.Uint64
	duration prometheus.Observer
	upstream prometheus.Observer
}

func (s *stats) count(code int) {
	if code < 100 || code >= 600 {
		code = 0
	}
	s.codes[code].Add(1)
}

type requestCollector struct {
	desc *prometheus.Desc

	mu    sync.Mutex // guards stats; taken on table swaps and scrapes only
	stats map[statsKey]*stats
}

// get returns the stats of key, creating them.
func (m *Metrics) get(ingress, service string) *stats {
	c := m.requests
	k := statsKey{ingress, service}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats[k]
	if s == nil {
		s = &stats{key: k, duration: m.requestDuration.WithLabelValues(ingress)}
		if service == "" { // unmatched requests go nowhere upstream
			s.upstream = prometheus.ObserverFunc(func(float64) {})
		} else {
			s.upstream = m.upstreamTime.WithLabelValues(service)
		}
		c.stats[k] = s
	}
	return s
}

// retain drops the series of pairs no longer served.
func (m *Metrics) retain(keep map[statsKey]bool) {
	c := m.requests
	c.mu.Lock()
	defer c.mu.Unlock()
	ingresses, services := map[string]bool{}, map[string]bool{}
	for k := range keep {
		ingresses[k.ingress], services[k.service] = true, true
	}
	for k := range c.stats {
		if keep[k] {
			continue
		}
		delete(c.stats, k)
		if !ingresses[k.ingress] {
			m.requestDuration.DeleteLabelValues(k.ingress)
		}
		if !services[k.service] {
			m.upstreamTime.DeleteLabelValues(k.service)
		}
	}
}

func (c *requestCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *requestCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, s := range c.stats {
		for code := range s.codes {
			if n := s.codes[code].Load(); n > 0 {
				label := strconv.Itoa(code)
				if code == 0 {
					label = "000"
				}
				ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), k.ingress, k.service, label)
			}
		}
	}
}
