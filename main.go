// Command nodenet is the node networking agent for bare-metal Kubernetes:
// `nodenet run` is the daemon systemd starts, and the same binary is the CNI
// plugin when a container runtime executes it with CNI_COMMAND set.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nodenet/nodenet/daemon"
	"github.com/nodenet/nodenet/daemon/buildinfo"
	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/daemon/control"
	"github.com/nodenet/nodenet/datapath/cni"
)

const defaultConfig = "/etc/nodenet/config.toml"

const usage = `nodenet: Kubernetes node networking agent

usage:
  nodenet run [--config FILE]                 run the daemon (what systemd starts)
  nodenet check-config FILE                   validate a config file; every problem is listed
  nodenet status [--json] [--socket PATH | --config FILE]
                                              ask the running daemon how it is doing
  nodenet explain SRC DST [--port P] [--proto tcp|udp|sctp] [--json] [--socket PATH | --config FILE]
                                              may SRC reach DST, and because of which NetworkPolicies?
  nodenet version                             print the version

Run with CNI_COMMAND set (as /opt/cni/bin/nodenet), it is the CNI plugin.
`

func main() {
	if os.Getenv("CNI_COMMAND") != "" {
		os.Exit(cni.Main("nodenet " + buildinfo.String()))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "check-config":
		return cmdCheckConfig(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "explain":
		return cmdExplain(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "nodenet", buildinfo.String())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "nodenet: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("nodenet "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := newFlags("run", stderr)
	path := fs.String("config", defaultConfig, "config file")
	if fs.Parse(args) != nil || fs.NArg() > 0 {
		return 2
	}
	if err := daemon.Run(context.Background(), *path); err != nil {
		var cerrs *config.Errors
		if errors.As(err, &cerrs) {
			printProblems(stderr, *path, cerrs)
		} else {
			fmt.Fprintln(stderr, "nodenet:", err)
		}
		return 1
	}
	return 0
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check-config", stderr)
	if fs.Parse(args) != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: nodenet check-config FILE")
		return 2
	}
	path := fs.Arg(0)
	if _, err := config.Load(path); err != nil {
		var cerrs *config.Errors
		if errors.As(err, &cerrs) {
			printProblems(stderr, path, cerrs)
		} else {
			fmt.Fprintln(stderr, "nodenet:", err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return 0
}

func printProblems(w io.Writer, path string, cerrs *config.Errors) {
	fmt.Fprintf(w, "%s: %d problem(s):\n", path, len(cerrs.Problems))
	for _, p := range cerrs.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
}

// clientFlags adds the flags that find the daemon's control socket.
func clientFlags(fs *flag.FlagSet) func() *control.Client {
	socket := fs.String("socket", "", "control socket (default: the config's admin.control_socket)")
	cfgPath := fs.String("config", defaultConfig, "config file to read the socket path from")
	return func() *control.Client {
		path := *socket
		if path == "" {
			path = config.Defaults().Admin.ControlSocket
			if cfg, err := config.Load(*cfgPath); err == nil {
				path = cfg.Admin.ControlSocket
			}
		}
		return control.NewClient(path)
	}
}

func cmdExplain(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("explain", stderr)
	port := fs.Int("port", 80, "destination port")
	proto := fs.String("proto", "tcp", "protocol: tcp, udp or sctp")
	asJSON := fs.Bool("json", false, "print JSON")
	client := clientFlags(fs)
	// Flags may follow the two addresses.
	var pos []string
	for len(args) > 0 {
		if fs.Parse(args) != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 2 {
		fmt.Fprintln(stderr, "usage: nodenet explain SRC DST [--port P] [--proto tcp|udp|sctp]")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := client().Explain(ctx, pos[0], pos[1], *proto, *port)
	return answer("explain", e, err, *asJSON, stdout, stderr)
}

// answer prints what the daemon said, readable or as JSON.
func answer(cmd string, v interface{ Render(io.Writer) }, err error, asJSON bool, stdout, stderr io.Writer) int {
	if err != nil {
		fmt.Fprintf(stderr, "nodenet %s: %v\n", cmd, err)
		return 1
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
		return 0
	}
	v.Render(stdout)
	return 0
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	client := clientFlags(fs)
	if fs.Parse(args) != nil || fs.NArg() > 0 {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := client().Status(ctx)
	return answer("status", st, err, *asJSON, stdout, stderr)
}
