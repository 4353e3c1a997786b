// Package buildinfo holds the version stamped into the binary.
package buildinfo

import "runtime/debug"

// Version is set at build time with -ldflags "-X github.com/nodenet/nodenet/daemon/buildinfo.Version=...".
var Version = ""

// String returns the version, falling back to the module's VCS information.
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}
