package benchkit

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

func TestParallelRunsEachOnce(t *testing.T) {
	const n = 1000
	var seen [n]atomic.Int32
	if err := Parallel(context.Background(), n, 8, func(i int) error {
		seen[i].Add(1)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i := range seen {
		if c := seen[i].Load(); c != 1 {
			t.Fatalf("fn(%d) ran %d times", i, c)
		}
	}
}

func TestParallelStopsAtFirstError(t *testing.T) {
	boom := errors.New("boom")
	var ran atomic.Int32
	err := Parallel(context.Background(), 1000, 1, func(i int) error {
		ran.Add(1)
		if i == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || err.Error() != "boom" {
		t.Errorf("err = %v; want boom alone", err)
	}
	if r := ran.Load(); r != 4 {
		t.Errorf("fn ran %d times after the error at 3; want 4", r)
	}
}

func TestParallelStopsWhenCtxEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var ran atomic.Int32
	err := Parallel(ctx, 1000, 2, func(i int) error {
		if ran.Add(1) == 10 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v; want context.Canceled", err)
	}
	if r := ran.Load(); r >= 1000 {
		t.Errorf("fn ran for every index after the cancel")
	}
}
