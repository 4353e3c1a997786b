package proxy

import (
	"sync"

	"github.com/nodenet/nodenet/ingress/routes"
)

// link is what the handler adds to a route: its balancers and counters.
type link struct {
	bal         *balancer
	stats       *stats
	canaryBal   *balancer
	canaryStats *stats
}

// state is one route table with its links; immutable once published.
type state struct {
	table    *routes.Table
	links    map[*routes.Route]*link
	notFound *stats // requests no route matched
}

// pool keeps the state that must outlive a table swap, keyed by address and
// backend: requests in flight, ejections, round-robin positions.
type pool struct {
	mu        sync.Mutex // guards both maps; taken only while linking a table
	upstreams map[string]*upstream
	balancers map[string]*balancer
}

func newPool() *pool {
	return &pool{upstreams: map[string]*upstream{}, balancers: map[string]*balancer{}}
}

// link builds the state of t, reusing what earlier tables had and dropping
// what t no longer uses.
func (p *pool) link(t *routes.Table, m *Metrics) *state {
	p.mu.Lock()
	defer p.mu.Unlock()
	usedUp := map[string]bool{}
	usedBal := map[string]bool{}
	usedStats := map[statsKey]bool{}
	bal := func(b *routes.Backend) *balancer {
		bl := p.balancers[b.Key]
		if bl == nil {
			bl = &balancer{}
			p.balancers[b.Key] = bl
		}
		if !usedBal[b.Key] {
			usedBal[b.Key] = true
			list := make([]*upstream, 0, len(b.Endpoints))
			for _, a := range b.Endpoints {
				u := p.upstreams[a]
				if u == nil {
					u = newUpstream(a)
					p.upstreams[a] = u
				}
				usedUp[a] = true
				list = append(list, u)
			}
			bl.set(list)
		}
		return bl
	}
	st := func(ingress string, b *routes.Backend) *stats {
		usedStats[statsKey{ingress, b.Service}] = true
		return m.get(ingress, b.Service)
	}
	s := &state{table: t, links: make(map[*routes.Route]*link, len(t.Routes)), notFound: m.get("", "")}
	for _, r := range t.Routes {
		l := &link{bal: bal(r.Backend), stats: st(r.Ingress, r.Backend)}
		if c := r.Canary; c != nil {
			l.canaryBal, l.canaryStats = bal(c.Backend), st(c.Ingress, c.Backend)
		}
		s.links[r] = l
	}
	for k, u := range p.upstreams {
		if !usedUp[k] {
			delete(p.upstreams, k)
			u.closeIdle()
		}
	}
	for k := range p.balancers {
		if !usedBal[k] {
			delete(p.balancers, k)
		}
	}
	usedStats[statsKey{}] = true // requests no route matched
	m.retain(usedStats)
	return s
}

// closeIdle closes every kept-alive upstream connection.
func (p *pool) closeIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.upstreams {
		u.closeIdle()
	}
}
