// Package cni is the nodenet binary acting as a CNI plugin: the container
// runtime executes /opt/cni/bin/nodenet with CNI_COMMAND in the environment
// and the network config on stdin. The plugin is thin; the daemon does the
// work (see the pod networking design in the README).
package cni

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// SupportedVersions are the CNI spec versions the plugin answers to.
var SupportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// Main runs the plugin for the verb in CNI_COMMAND and returns the exit code.
func Main(about string) int {
	notYet := func(verb string) func(*skel.CmdArgs) error {
		return func(*skel.CmdArgs) error {
			return types.NewError(types.ErrTryAgainLater,
				fmt.Sprintf("nodenet: CNI %s is not available in this build", verb),
				"pod networking is not implemented yet; VERSION is the only verb answered")
		}
	}
	e := skel.PluginMainFuncsWithError(skel.CNIFuncs{
		Add:    notYet("ADD"),
		Del:    notYet("DEL"),
		Check:  notYet("CHECK"),
		GC:     notYet("GC"),
		Status: notYet("STATUS"),
	}, version.PluginSupports(SupportedVersions...), about)
	if e != nil {
		_ = e.Print()
		return 1
	}
	return 0
}
