// Package e2e runs nodenet against a real control plane with nodes in network
// namespaces. One control plane serves the whole package; each test makes its
// own nodes.
package e2e

import (
	"os"
	"testing"

	"github.com/nodenet/nodenet/test/harness"
)

var suite harness.Suite

func TestMain(m *testing.M) { os.Exit(harness.RunSuite(m, harness.Options{}, &suite)) }

func requireCluster(t *testing.T) { suite.Require(t) }

func startNode(t *testing.T, name, extra string) *harness.Node {
	return suite.StartNode(t, name, extra)
}

func newNode(t *testing.T, name string) *harness.Node { return suite.NewNode(t, name) }
