package benchkit

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/nodenet/nodenet/test/harness"
)

// InNS runs a command inside ns and returns its combined output. It does
// not use `ip netns exec` (which also remounts /sys): the child is forked
// from an OS thread switched into the namespace, and inherits it. This
// keeps millisecond polls cheap.
func InNS(ns *harness.NS, argv ...string) (string, error) {
	var out []byte
	err := ns.Do(func() error {
		var err error
		out, err = exec.Command(argv[0], argv[1:]...).CombinedOutput()
		return err
	})
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", ns.Name, strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
