package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodenet/nodenet/daemon/view"
	"github.com/nodenet/nodenet/datapath/pods"
)

// viewCollector reports informer state at scrape time, so the numbers are
// never stale and nothing updates gauges on the event path.
type viewCollector struct {
	v       *view.View
	synced  *prometheus.Desc
	objects *prometheus.Desc
}

func newViewCollector(v *view.View) *viewCollector {
	return &viewCollector{
		v:       v,
		synced:  prometheus.NewDesc("nodenet_informer_synced", "1 once the informer's cache has synced.", []string{"kind"}, nil),
		objects: prometheus.NewDesc("nodenet_informer_objects", "Objects in the informer's cache.", []string{"kind"}, nil),
	}
}

func (c *viewCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.synced
	ch <- c.objects
}

func (c *viewCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.v.State() {
		synced := 0.0
		if s.Synced {
			synced = 1
		}
		ch <- prometheus.MustNewConstMetric(c.synced, prometheus.GaugeValue, synced, string(s.Kind))
		ch <- prometheus.MustNewConstMetric(c.objects, prometheus.GaugeValue, float64(s.Objects), string(s.Kind))
	}
}

// ipamCollector reports address usage per pod range at scrape time.
type ipamCollector struct {
	pods *pods.Manager
	desc *prometheus.Desc
}

func newIPAMCollector(p *pods.Manager) *ipamCollector {
	return &ipamCollector{pods: p, desc: prometheus.NewDesc("nodenet_ipam_addresses",
		"Pod addresses per range: state used or free (free is capped for huge IPv6 ranges).", []string{"range", "state"}, nil)}
}

func (c *ipamCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *ipamCollector) Collect(ch chan<- prometheus.Metric) {
	alloc := c.pods.Allocator()
	if alloc == nil {
		return
	}
	for _, u := range alloc.Usage() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(u.Used), u.Range.String(), "used")
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(u.Free), u.Range.String(), "free")
	}
}
