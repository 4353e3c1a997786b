// Package cni is nodenet's CNI plugin and the daemon's side of it. The
// container runtime executes /opt/cni/bin/nodenet with CNI_COMMAND set; that
// process only forwards the request over the daemon's control socket and
// prints the answer. The daemon owns IPAM and the interfaces, so one process
// serialises allocations and can gate a pod on its policy rules.
package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/nodenet/nodenet/daemon/control"
)

// SupportedVersions are the CNI spec versions the plugin answers to.
var SupportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// requestTimeout bounds one forwarded request; runtimes time out on their own
// too, but a stuck daemon must not hang the plugin process forever.
const requestTimeout = 2 * time.Minute

// Main runs the plugin for the verb in CNI_COMMAND and returns the exit code.
func Main(about string) int {
	fwd := func(cmd string) func(*skel.CmdArgs) error {
		return func(a *skel.CmdArgs) error { return forward(cmd, a, os.Stdout) }
	}
	e := skel.PluginMainFuncsWithError(skel.CNIFuncs{
		Add: fwd("ADD"), Del: fwd("DEL"), Check: fwd("CHECK"), GC: fwd("GC"), Status: fwd("STATUS"),
	}, version.PluginSupports(SupportedVersions...), about)
	if e != nil {
		_ = e.Print()
		return 1
	}
	return 0
}

// forward sends one request to the daemon and writes its result to out.
func forward(cmd string, a *skel.CmdArgs, out io.Writer) error {
	var conf NetConf
	_ = json.Unmarshal(a.StdinData, &conf) // the daemon reports decode errors
	socket := conf.Socket
	if socket == "" {
		socket = DefaultSocket
	}
	req := Request{Command: cmd, ContainerID: a.ContainerID, Netns: a.Netns, IfName: a.IfName,
		Args: a.Args, Path: a.Path, StdinData: a.StdinData}
	body, err := json.Marshal(req)
	if err != nil {
		return types.NewError(types.ErrInternal, "encode request", err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var resp Response
	if err := control.NewClient(socket).Do(ctx, http.MethodPost, Route, bytes.NewReader(body), &resp); err != nil {
		if cmd == "STATUS" {
			// STATUS asks "can you serve ADD now?": no.
			return types.NewError(types.ErrPluginNotAvailable, "nodenet daemon is not running", err.Error())
		}
		if errors.Is(err, control.ErrDaemonDown) {
			return types.NewError(types.ErrTryAgainLater, "nodenet daemon is not running", err.Error())
		}
		return types.NewError(types.ErrTryAgainLater, "nodenet daemon did not answer", err.Error())
	}
	if resp.Error != nil {
		return resp.Error
	}
	if len(resp.Result) > 0 {
		if _, err := out.Write(append(resp.Result, '\n')); err != nil {
			return types.NewError(types.ErrIOFailure, "write result", err.Error())
		}
	}
	return nil
}

// errorFor turns any error into a CNI error; backends return *types.Error
// where the code matters.
func errorFor(cmd string, err error) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("nodenet %s", cmd), err.Error())
}
