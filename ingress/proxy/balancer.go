package proxy

import (
	"hash/fnv"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"
)

// upstream is one endpoint address. Its state (requests in flight, ejection)
// lives in the pool, so it survives table swaps and endpoint list changes.
type upstream struct {
	addr string
	id   string // affinity cookie value: a hash of addr, not the address itself

	inflight     atomic.Int64
	ejectedUntil atomic.Int64 // unix nanoseconds
	// idle holds kept-alive HTTP/1.1 connections (h1Transport); made on
	// first use, since most endpoints of a large cluster never see one.
	idle atomic.Pointer[chan *pconn]
}

func newUpstream(addr string) *upstream {
	h := fnv.New64a()
	h.Write([]byte(addr))
	return &upstream{addr: addr, id: strconv.FormatUint(h.Sum64(), 16)}
}

func (u *upstream) ejected(now int64) bool { return u.ejectedUntil.Load() > now }

// endpointSet is one immutable list of a backend's upstreams.
type endpointSet struct {
	list []*upstream
	byID map[string]*upstream
}

// balancer picks upstreams for one backend. The endpoint set is swapped
// atomically; picking takes no lock.
type balancer struct {
	rr  atomic.Uint64
	eps atomic.Pointer[endpointSet]
}

func (b *balancer) set(list []*upstream) {
	s := &endpointSet{list: list, byID: make(map[string]*upstream, len(list))}
	for _, u := range list {
		s.byID[u.id] = u
	}
	b.eps.Store(s)
}

// pick returns an upstream not in skip, preferring ones not ejected; nil
// when there is none. leastRequests picks the one with the fewest requests
// in flight (ties by rotation), else round robin.
func (b *balancer) pick(leastRequests bool, now int64, skip []*upstream) *upstream {
	s := b.eps.Load()
	n := len(s.list)
	if n == 0 {
		return nil
	}
	start := int(b.rr.Add(1) % uint64(n))
	var best, fallback *upstream
	for i := range n {
		u := s.list[(start+i)%n]
		if contains(skip, u) {
			continue
		}
		if u.ejected(now) {
			if fallback == nil {
				fallback = u
			}
			continue
		}
		if !leastRequests {
			return u
		}
		if best == nil || u.inflight.Load() < best.inflight.Load() {
			best = u
		}
	}
	if best != nil {
		return best
	}
	// Every candidate is ejected: trying one beats failing for sure.
	return fallback
}

// byID returns the upstream an affinity cookie names, if it is usable.
func (b *balancer) byID(id string, now int64) *upstream {
	u := b.eps.Load().byID[id]
	if u == nil || u.ejected(now) {
		return nil
	}
	return u
}

func (b *balancer) size() int { return len(b.eps.Load().list) }

func contains(list []*upstream, u *upstream) bool {
	for _, x := range list {
		if x == u {
			return true
		}
	}
	return false
}

// canaryRoll decides a weighted canary split.
func canaryRoll(weight, total int) bool {
	if weight <= 0 {
		return false
	}
	if weight >= total {
		return true
	}
	return rand.IntN(total) < weight
}

func nowNano() int64 { return time.Now().UnixNano() }
