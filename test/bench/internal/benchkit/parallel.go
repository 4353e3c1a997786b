package benchkit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Parallel runs fn(0..n-1) on workers goroutines. The first error stops
// handing out work, and so does ctx ending; it returns the errors fn
// returned joined with ctx's. Pass context.Background() where the work
// must run to the end regardless (cleanup, or a timed phase that only its
// own calls may stop).
func Parallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var mu sync.Mutex // guards errs
	var errs []error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					next.Store(int64(n))
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(append(errs, ctx.Err())...)
}
