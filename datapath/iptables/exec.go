package iptables

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Mode is the iptables backend: both ship in iptables >= 1.8 and program
// different kernel subsystems (x_tables vs nf_tables). Rules in one are
// invisible to the other's save command, so every component on a node must
// use the same one.
type Mode string

const (
	ModeNFT    Mode = "nft"
	ModeLegacy Mode = "legacy"
)

// DefaultWaitSeconds is how long iptables-restore waits for the xtables
// lock (/run/xtables.lock, used by legacy; nft accepts -w and ignores it).
// Bounded rather than "-w" alone so a stuck holder fails the sync, which
// is then retried, instead of hanging it. iptables >= 1.8 ignores -W.
const DefaultWaitSeconds = 5

// ExecRunner runs the iptables binaries of one backend.
type ExecRunner struct {
	Mode Mode
	// Wrap prefixes every command, e.g. {"ip", "netns", "exec", "ns1"}
	// in tests. Empty in production.
	Wrap []string
	// WaitSeconds is passed as "-w" to iptables-restore; 0 means
	// DefaultWaitSeconds.
	WaitSeconds int

	// saveSizes is the last output size of each save command: the next
	// read is sized from it instead of doubling its way up (at 10,000
	// Services the dump is 25 MB, and growing a buffer to it made as much
	// garbage again).
	saveSizes sync.Map // string -> int
}

var _ StreamRunner = (*ExecRunner)(nil)

// NewExecRunner returns a Runner for the iptables-<mode>-save/-restore
// binaries.
func NewExecRunner(mode Mode) *ExecRunner { return &ExecRunner{Mode: mode} }

func binary(fam Family, mode Mode, tool string) string {
	base := "iptables"
	if fam == IPv6 {
		base = "ip6tables"
	}
	return base + "-" + string(mode) + "-" + tool
}

func (r *ExecRunner) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if len(r.Wrap) > 0 {
		args = append(append(append([]string(nil), r.Wrap[1:]...), name), args...)
		name = r.Wrap[0]
	}
	return exec.CommandContext(ctx, name, args...)
}

// Save runs iptables-<mode>-save [-t table]. iptables-save takes no lock.
func (r *ExecRunner) Save(ctx context.Context, fam Family, table Table) ([]byte, error) {
	bin := binary(fam, r.Mode, "save")
	var args []string
	if table != "" {
		args = []string{"-t", string(table)}
	}
	cmd := r.command(ctx, bin, args...)
	key := bin + " " + string(table)
	var stdout, stderr bytes.Buffer
	if n, ok := r.saveSizes.Load(key); ok {
		stdout.Grow(n.(int) + n.(int)/8 + 512)
	}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", bin, err, strings.TrimSpace(stderr.String()))
	}
	r.saveSizes.Store(key, stdout.Len())
	return stdout.Bytes(), nil
}

// SaveCounters is Save of one table with packet and byte counters
// (iptables-save -c): "[packets:bytes] -A CHAIN ..." lines.
func (r *ExecRunner) SaveCounters(ctx context.Context, fam Family, table Table) ([]byte, error) {
	bin := binary(fam, r.Mode, "save")
	cmd := r.command(ctx, bin, "-c", "-t", string(table))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s -c: %w: %s", bin, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Restore runs iptables-<mode>-restore -w N [--noflush] with payload on
// stdin.
func (r *ExecRunner) Restore(ctx context.Context, fam Family, payload []byte, noflush bool) error {
	bin := binary(fam, r.Mode, "restore")
	cmd := r.command(ctx, bin, r.restoreArgs(noflush)...)
	cmd.Stdin = bytes.NewReader(payload)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", bin, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// RestoreFunc is Restore with the payload written by write straight into
// iptables-restore's standard input.
func (r *ExecRunner) RestoreFunc(ctx context.Context, fam Family, write func(io.Writer) error, noflush bool) error {
	bin := binary(fam, r.Mode, "restore")
	cmd := r.command(ctx, bin, r.restoreArgs(noflush)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	bw := bufio.NewWriterSize(stdin, 256<<10)
	werr := write(bw)
	if werr == nil {
		werr = bw.Flush()
	}
	stdin.Close()
	// The command's own failure explains a failed write (it stopped
	// reading), so it comes first.
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%s: %w: %s", bin, err, strings.TrimSpace(out.String()))
	}
	if werr != nil {
		return fmt.Errorf("%s: write payload: %w", bin, werr)
	}
	return nil
}

func (r *ExecRunner) restoreArgs(noflush bool) []string {
	wait := r.WaitSeconds
	if wait <= 0 {
		wait = DefaultWaitSeconds
	}
	args := []string{"-w", strconv.Itoa(wait)}
	if noflush {
		args = append(args, "--noflush")
	}
	return args
}

// DetectMode picks the backend the node already uses, reading (never
// writing) both. Save commands are run without -t because
// `iptables-legacy-save -t T` makes the kernel create table T. wrap
// prefixes the commands as ExecRunner.Wrap does. The rule, first match
// wins:
//
//  1. a backend holding kubelet's hint chains (KUBE-IPTABLES-HINT,
//     KUBE-KUBELET-CANARY in mangle), nft checked first, as kube-proxy's
//     iptables-wrapper does: kubelet knows the host's choice;
//  2. a backend holding NODENET- chains (an earlier nodenet run), the one
//     with more if both do, nft on a tie;
//  3. legacy if it has more rules ("-A" lines) than nft;
//  4. nft.
//
// A backend whose save commands fail counts as empty; it is an error only
// if both fail.
func DetectMode(ctx context.Context, wrap ...string) (Mode, error) {
	dump := func(mode Mode) ([]byte, error) {
		r := &ExecRunner{Mode: mode, Wrap: wrap}
		var all []byte
		var errs []error
		for _, fam := range []Family{IPv4, IPv6} {
			out, err := r.Save(ctx, fam, "")
			if err != nil {
				errs = append(errs, err)
				continue
			}
			all = append(all, out...)
		}
		if len(errs) == 2 {
			return nil, errors.Join(errs...)
		}
		return all, nil
	}
	legacy, lerr := dump(ModeLegacy)
	nft, nerr := dump(ModeNFT)
	switch {
	case lerr != nil && nerr != nil:
		return "", fmt.Errorf("detect iptables mode: %w", errors.Join(lerr, nerr))
	case lerr != nil:
		return ModeNFT, nil
	case nerr != nil:
		return ModeLegacy, nil
	}
	return chooseMode(legacy, nft), nil
}

var (
	kubeletHintRE = regexp.MustCompile(`(?m)^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) `)
	ourChainRE    = regexp.MustCompile(`(?m)^:` + ChainPrefix)
	ruleRE        = regexp.MustCompile(`(?m)^-A `)
)

// chooseMode applies DetectMode's rule to the two backends' dumps.
func chooseMode(legacy, nft []byte) Mode {
	switch {
	case kubeletHintRE.Match(nft):
		return ModeNFT
	case kubeletHintRE.Match(legacy):
		return ModeLegacy
	}
	ol, on := len(ourChainRE.FindAll(legacy, -1)), len(ourChainRE.FindAll(nft, -1))
	if ol+on > 0 {
		if ol > on {
			return ModeLegacy
		}
		return ModeNFT
	}
	if len(ruleRE.FindAll(legacy, -1)) > len(ruleRE.FindAll(nft, -1)) {
		return ModeLegacy
	}
	return ModeNFT
}
