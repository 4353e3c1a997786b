// Package metrics holds the daemon-wide Prometheus registry and the metrics
// every component shares. Component-specific metrics register themselves on
// Registry under the nodenet_ prefix.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is the daemon's metric set.
type Metrics struct {
	Registry *prometheus.Registry

	APIUp             prometheus.Gauge
	Ready             prometheus.Gauge
	ReconcileDuration *prometheus.HistogramVec
	ReconcileErrors   *prometheus.CounterVec
	LastSuccess       *prometheus.GaugeVec
	ConfigReloads     *prometheus.CounterVec
	ConfigGeneration  prometheus.Gauge
}

// New creates and registers the shared metrics plus Go and process collectors.
func New(version string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		APIUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodenet_apiserver_up", Help: "1 while the API server answers, 0 while nodenet runs on its last known state."}),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodenet_ready", Help: "1 once caches synced and every component synced once."}),
		ReconcileDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nodenet_reconcile_duration_seconds",
			Help:    "Time of one sync of a component, successful or not.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"component", "kind"}),
		ReconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodenet_reconcile_errors_total", Help: "Failed syncs per component."}, []string{"component"}),
		LastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodenet_reconcile_last_success_timestamp_seconds", Help: "Unix time of the last successful sync."}, []string{"component"}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodenet_config_reloads_total", Help: "Config reloads (SIGHUP) by result."}, []string{"result"}),
		ConfigGeneration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodenet_config_generation", Help: "1 at start, +1 per applied reload."}),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nodenet_build_info", Help: "Always 1; the version as a label."}, []string{"version"})
	build.WithLabelValues(version).Set(1)
	reg.MustRegister(m.APIUp, m.Ready, m.ReconcileDuration, m.ReconcileErrors, m.LastSuccess, m.ConfigReloads, m.ConfigGeneration, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.ConfigReloads.WithLabelValues("success")
	m.ConfigReloads.WithLabelValues("failure")
	return m
}
