package config

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// maxIfName is IFNAMSIZ less the terminating NUL.
const maxIfName = 15

func (c CNI) validate(s *section) {
	absDir(s, "conf_dir", c.ConfDir)
	absDir(s, "state_dir", c.StateDir)
	switch {
	case c.ConfFile == "" || strings.ContainsRune(c.ConfFile, '/'):
		s.add("conf_file", "must be a file name without a directory, got %q", c.ConfFile)
	case !strings.HasSuffix(c.ConfFile, ".conflist"):
		s.add("conf_file", "must end in .conflist (runtimes read it as a plugin list), got %q", c.ConfFile)
	}
	if c.NetworkName == "" || strings.ContainsAny(c.NetworkName, "/ \t\n") {
		s.add("network_name", "must be a non-empty name without slashes or spaces, got %q", c.NetworkName)
	}
	if c.Bridge == "" || len(c.Bridge) > maxIfName || strings.ContainsAny(c.Bridge, "/ \t\n:") {
		s.add("bridge", "must be a Linux interface name (1-%d characters, no '/', ':' or spaces), got %q", maxIfName, c.Bridge)
	}
	if c.LeakGrace < time.Second {
		// Shorter, and a pod the informer has not delivered yet could lose
		// its address while its ADD is still running.
		s.add("leak_grace", "must be at least 1s, got %s", c.LeakGrace)
	}
	if len(c.PodCIDRs) > 0 {
		cidrs(s, "pod_cidrs", c.PodCIDRs)
	}
	for i, p := range c.Chain {
		var plugin map[string]any
		key := fmt.Sprintf("chain[%d]", i)
		if err := json.Unmarshal([]byte(p), &plugin); err != nil {
			s.add(key, "is not a JSON object: %v", err)
			continue
		}
		if t, _ := plugin["type"].(string); t == "" {
			s.add(key, `has no "type" naming the plugin`)
		}
	}
}

func absDir(s *section, key, dir string) {
	if dir == "" || !filepath.IsAbs(dir) {
		s.add(key, "must be an absolute path, got %q", dir)
	}
}
