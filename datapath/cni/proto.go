package cni

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// Route is where the plugin process posts requests on the control socket.
const Route = "/v1/cni"

// DefaultSocket is used when the network config names none.
const DefaultSocket = "/run/nodenet/nodenet.sock"

// PluginType is the "type" of nodenet's entry in a conflist.
const PluginType = "nodenet"

// Request is one CNI invocation, forwarded as the runtime made it.
type Request struct {
	Command     string `json:"command"`
	ContainerID string `json:"containerID"`
	Netns       string `json:"netns"`
	IfName      string `json:"ifName"`
	Args        string `json:"args"` // CNI_ARGS
	Path        string `json:"path"` // CNI_PATH
	StdinData   []byte `json:"stdinData"`
}

// Response carries the result (already in the requested version) or an error.
type Response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *types.Error    `json:"error,omitempty"`
}

// NetConf is nodenet's network config: the standard fields plus where the
// daemon listens.
type NetConf struct {
	types.NetConf
	Socket string `json:"socket,omitempty"`
}

// Parsed is a validated request.
type Parsed struct {
	Request
	Conf NetConf
	// K8s identifies the pod when the runtime passes the usual CNI_ARGS.
	PodNamespace, PodName, PodUID string
}

// commands lists every verb and the first spec version that has it.
var commands = map[string]string{
	"ADD": "0.1.0", "DEL": "0.1.0", "CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0",
}

// maxStdin bounds a network config; real ones are a few KiB.
const maxStdin = 1 << 20

// Parse validates a request. Errors are CNI errors with the spec's codes so
// the plugin can hand them to the runtime as they are.
func Parse(r *Request) (*Parsed, error) {
	since, ok := commands[r.Command]
	if !ok {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI_COMMAND %q", r.Command), "")
	}
	if len(r.StdinData) > maxStdin {
		return nil, types.NewError(types.ErrDecodingFailure, "network config too large", fmt.Sprintf("%d bytes", len(r.StdinData)))
	}
	p := &Parsed{Request: *r}
	if err := json.Unmarshal(r.StdinData, &p.Conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode network config", err.Error())
	}
	if err := checkVersion(p.Conf.CNIVersion, since, r.Command); err != nil {
		return nil, err
	}
	if p.Conf.Type != PluginType {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("network config type is %q, want %q", p.Conf.Type, PluginType), "")
	}
	if p.Conf.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "network config has no name", "")
	}
	switch r.Command {
	case "ADD", "DEL", "CHECK":
		if r.ContainerID == "" {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID is required", "")
		}
		if err := checkIfName(r.IfName); err != nil {
			return nil, err
		}
		if r.Command != "DEL" && r.Netns == "" {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required for "+r.Command, "")
		}
	}
	if err := p.parseArgs(); err != nil {
		return nil, err
	}
	return p, nil
}

func checkVersion(v, since, cmd string) error {
	if v == "" {
		return types.NewError(types.ErrIncompatibleCNIVersion, "network config has no cniVersion", "")
	}
	if !slices.Contains(SupportedVersions, v) {
		return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("cniVersion %q is not supported", v),
			"supported: "+strings.Join(SupportedVersions, ", "))
	}
	if ok, err := version.GreaterThanOrEqualTo(v, since); err != nil || !ok {
		return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("%s needs cniVersion %s or later, got %s", cmd, since, v), "")
	}
	return nil
}

// checkIfName applies the kernel's rules for an interface name.
func checkIfName(n string) error {
	if n == "" || len(n) > 15 || n == "." || n == ".." || strings.ContainsAny(n, "/: \t\n") {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_IFNAME %q is not a valid interface name", n), "")
	}
	return nil
}

// parseArgs reads CNI_ARGS (K=V;K=V), keeping the pod identity.
func (p *Parsed) parseArgs() error {
	if p.Args == "" {
		return nil
	}
	for _, kv := range strings.Split(p.Args, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: %q is not KEY=VALUE", kv), "")
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			p.PodNamespace = v
		case "K8S_POD_NAME":
			p.PodName = v
		case "K8S_POD_UID":
			p.PodUID = v
		}
	}
	return nil
}
