package main

import (
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/nodenet/nodenet/test/harness"
)

const cniHistogram = "nodenet_cni_request_duration_seconds"

// metrics fetches the daemon's /metrics page.
func metrics(n *harness.Node) (string, error) {
	code, body, err := n.Admin("/metrics")
	if err != nil {
		return "", fmt.Errorf("%s /metrics: %w", n.Name, err)
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("%s /metrics: HTTP %d", n.Name, code)
	}
	return body, nil
}

// histDelta is the growth of one histogram series between two scrapes.
type histDelta struct {
	count   int64
	sum     float64
	buckets map[float64]float64 // cumulative count per upper bound
}

// histogram reads the series command=<verb>,result="ok" of the CNI request
// histogram from a Prometheus text page.
func histogram(page, verb string) (histDelta, error) {
	h := histDelta{buckets: map[float64]float64{}}
	want := fmt.Sprintf(`command="%s"`, verb)
	for _, line := range strings.Split(page, "\n") {
		if !strings.HasPrefix(line, cniHistogram) || !strings.Contains(line, want) || !strings.Contains(line, `result="ok"`) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return h, fmt.Errorf("metrics line %q: %w", line, err)
		}
		switch name := line[:strings.IndexAny(line, "{ ")]; name {
		case cniHistogram + "_count":
			h.count = int64(v)
		case cniHistogram + "_sum":
			h.sum = v
		case cniHistogram + "_bucket":
			_, le, _ := strings.Cut(line, `le="`)
			le, _, _ = strings.Cut(le, `"`)
			bound := math.Inf(1)
			if le != "+Inf" {
				if bound, err = strconv.ParseFloat(le, 64); err != nil {
					return h, fmt.Errorf("metrics line %q: %w", line, err)
				}
			}
			h.buckets[bound] = v
		}
	}
	return h, nil
}

func (h *histDelta) add(before, after histDelta) {
	h.count += after.count - before.count
	h.sum += after.sum - before.sum
	if h.buckets == nil {
		h.buckets = map[float64]float64{}
	}
	for le, v := range after.buckets {
		h.buckets[le] += v - before.buckets[le]
	}
}

// quantile interpolates linearly inside the bucket, as histogram_quantile
// does; the buckets double, so this is an estimate.
func (h histDelta) quantile(q float64) float64 {
	bounds := make([]float64, 0, len(h.buckets))
	for le := range h.buckets {
		bounds = append(bounds, le)
	}
	sort.Float64s(bounds)
	rank := q * float64(h.count)
	lower, below := 0.0, 0.0
	for _, le := range bounds {
		c := h.buckets[le]
		if c < rank {
			lower, below = le, c
			continue
		}
		if math.IsInf(le, 1) || c == below {
			return lower
		}
		return lower + (le-lower)*(rank-below)/(c-below)
	}
	return lower
}

// syncDelta is how many syncs a component ran between scrapes, and their time.
type syncDelta struct {
	count, seconds float64
}

const reconcileHistogram = "nodenet_reconcile_duration_seconds"

// syncs reads count and sum of every reconcile series, by labels.
func syncs(page string) (map[string]syncDelta, error) {
	out := map[string]syncDelta{}
	for _, line := range strings.Split(page, "\n") {
		suffix, ok := strings.CutPrefix(line, reconcileHistogram)
		if !ok {
			continue
		}
		kind, rest, ok := strings.Cut(suffix, "{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		d := out[labels]
		switch kind {
		case "_count":
			d.count = v
		case "_sum":
			d.seconds = v
		}
		out[labels] = d
	}
	return out, nil
}

// addDaemon adds the ADD and DEL requests, and the daemon's syncs, between
// two scrapes to the report.
func (rep *report) addDaemon(before, after string) error {
	sb, err := syncs(before)
	if err != nil {
		return err
	}
	sa, err := syncs(after)
	if err != nil {
		return err
	}
	if rep.syncs == nil {
		rep.syncs = map[string]syncDelta{}
	}
	for labels, a := range sa {
		d := rep.syncs[labels]
		d.count += a.count - sb[labels].count
		d.seconds += a.seconds - sb[labels].seconds
		rep.syncs[labels] = d
	}
	for _, s := range []struct {
		verb string
		into *histDelta
	}{{"ADD", &rep.daemonAdd}, {"DEL", &rep.daemonDel}} {
		b, err := histogram(before, s.verb)
		if err != nil {
			return err
		}
		a, err := histogram(after, s.verb)
		if err != nil {
			return err
		}
		s.into.add(b, a)
	}
	return nil
}
