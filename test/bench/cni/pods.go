package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
	"github.com/nodenet/nodenet/test/harness"
)

// parallel runs fn(0..n-1) on workers goroutines and returns the wall
// time. The first error stops handing out work; ctx does not: it reaches
// the calls themselves (create checks it per pod), and a delete must run
// to the end.
func parallel(n, workers int, fn func(i int) error) (time.Duration, error) {
	start := time.Now()
	err := benchkit.Parallel(context.Background(), n, workers, fn)
	return time.Since(start), err
}

// podPool creates pod namespaces and remembers the live ones, so an error or
// Ctrl-C anywhere still removes them all.
type podPool struct {
	mu   sync.Mutex // guards live and seq
	live map[string]*harness.NS
	seq  int
}

// create makes n fresh pod namespaces (untimed), several at a time.
func (pp *podPool) create(ctx context.Context, n, workers int) ([]pod, error) {
	pods := make([]pod, n)
	_, err := parallel(n, workers, func(i int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		pp.mu.Lock()
		pp.seq++
		name := fmt.Sprintf("%sp%d", harness.Prefix, pp.seq)
		pp.mu.Unlock()
		ns, err := harness.NewNS(name)
		if err != nil {
			return err
		}
		pp.mu.Lock()
		if pp.live == nil {
			pp.live = map[string]*harness.NS{}
		}
		pp.live[name] = ns
		pp.mu.Unlock()
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		pods[i] = pod{ns: ns, id: hex.EncodeToString(b)}
		return nil
	})
	return pods, err
}

// deleteWorkers bounds concurrent `ip netns delete`s (not timed).
const deleteWorkers = 8

// delete removes the pods' namespaces.
func (pp *podPool) delete(pods []pod) error {
	_, err := parallel(len(pods), deleteWorkers, func(i int) error {
		if err := pods[i].ns.Delete(); err != nil {
			return err
		}
		pp.mu.Lock()
		delete(pp.live, pods[i].ns.Name)
		pp.mu.Unlock()
		return nil
	})
	return err
}

// deleteAll removes every pod namespace still there; independent failures
// are gathered.
func (pp *podPool) deleteAll() error {
	pp.mu.Lock()
	var errs []error
	for name, ns := range pp.live {
		errs = append(errs, ns.Delete())
		delete(pp.live, name)
	}
	pp.mu.Unlock()
	return errors.Join(errs...)
}
