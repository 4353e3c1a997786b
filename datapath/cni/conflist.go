package cni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// ConflistOptions describe the conflist the daemon installs.
type ConflistOptions struct {
	Name   string   // network name
	Socket string   // the daemon's control socket, passed to the plugin
	Chain  []string // further plugins, each a JSON object, run after nodenet
}

// Conflist renders the network config list the runtime reads.
func Conflist(o ConflistOptions) ([]byte, error) {
	plugins := []json.RawMessage{}
	self, err := json.Marshal(map[string]any{"type": PluginType, "socket": o.Socket})
	if err != nil {
		return nil, err
	}
	plugins = append(plugins, self)
	for i, c := range o.Chain {
		var obj map[string]any
		if err := json.Unmarshal([]byte(c), &obj); err != nil {
			return nil, fmt.Errorf("chain[%d]: %w", i, err)
		}
		plugins = append(plugins, json.RawMessage(c))
	}
	out, err := json.MarshalIndent(map[string]any{
		"cniVersion": "1.1.0",
		// Older runtimes read only the first supported version they know.
		"cniVersions": SupportedVersions,
		"name":        o.Name,
		"plugins":     plugins,
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// WriteConflist installs content at path atomically (temp file, fsync,
// rename), so a runtime never reads half a file. It does nothing when the
// file already holds content. It reports whether it wrote.
func WriteConflist(path string, content []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, content) {
		return false, nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("cni conf dir: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".nodenet-*.tmp")
	if err != nil {
		return false, fmt.Errorf("write conflist: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write conflist: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write conflist: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write conflist: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("write conflist: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, fmt.Errorf("install conflist: %w", err)
	}
	return true, nil
}
