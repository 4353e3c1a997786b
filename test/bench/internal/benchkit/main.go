package benchkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nodenet/nodenet/test/harness"
)

// RequireRoot exits with status 1 unless the program runs as root; why
// says what prog needs root for. Call it from main only.
func RequireRoot(prog, why string) {
	if os.Geteuid() != 0 {
		fmt.Fprintf(os.Stderr, "%s: needs root (%s)\n", prog, why)
		os.Exit(1)
	}
}

// Main is the rest of a benchmark's main(): run with a context that ends
// on SIGINT or SIGTERM, then the harness' leak check, which runs also
// after an error or Ctrl-C so nothing is left behind unnoticed. Any error
// is printed as "prog: ..." and the program exits with status 1. Call it
// from main only.
func Main(prog string, run func(ctx context.Context) error) {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	err := run(ctx)
	if lerr := harness.LeakCheck(); lerr != nil {
		err = errors.Join(err, fmt.Errorf("leak check: %w", lerr))
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, prog+": interrupted")
		}
		fmt.Fprintln(os.Stderr, prog+":", err)
		cancel()
		os.Exit(1)
	}
}
