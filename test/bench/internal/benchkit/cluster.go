package benchkit

import (
	"context"
	"fmt"
	"os"

	"github.com/nodenet/nodenet/test/harness"
)

// Cluster is what every benchmark starts from: a work directory, the
// nodenet binary built into it and a running control plane.
type Cluster struct {
	Work    string // temporary; removed by Stop
	Nodenet string // the nodenet binary
	CP      *harness.ControlPlane
}

// StartCluster makes the work directory (harness.Prefix + workPrefix +
// random, so the leak check knows it), builds nodenet into it, prints
// progress to stderr and starts the control plane. On error nothing is
// left behind.
func StartCluster(ctx context.Context, workPrefix, progress string) (c *Cluster, err error) {
	work, err := os.MkdirTemp("", harness.Prefix+workPrefix)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(work) // left behind, the leak check names it
		}
	}()
	bin, err := harness.NodenetBinary(work)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(os.Stderr, progress)
	cp, err := harness.StartControlPlane(ctx, harness.Options{})
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	return &Cluster{Work: work, Nodenet: bin, CP: cp}, nil
}

// Stop removes everything the control plane and its nodes created, then
// the work directory. A directory that cannot be removed is not
// an error here: the leak check, which Main runs last, names it.
func (c *Cluster) Stop() error {
	defer os.RemoveAll(c.Work)
	if err := c.CP.Stop(); err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	return nil
}
