// Package ipset keeps the kernel's IP sets equal to a desired list, through
// `ipset restore`: every set is filled under a temporary name and swapped in,
// so a rule matching it never sees it half-filled; sets of ours that are no
// longer wanted are destroyed only after the rules stopped using them.
package ipset

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
)

// Set is one IP set: Type "hash:ip" or "hash:net", Family "inet" or "inet6";
// a member may carry options ("10.0.0.0/8 nomatch").
type Set struct {
	Name, Type, Family string
	Members            []string
}

// tmpSuffix names the temporary twin of a set while it is filled; set names
// are limited to 31 characters, so owners keep theirs at 30 or fewer.
const tmpSuffix = "~"

// MaxName is the longest name a Set may have here.
const MaxName = 31 - len(tmpSuffix)

// Runner runs the ipset binary; a seam for tests.
type Runner interface {
	Run(ctx context.Context, stdin []byte, args ...string) ([]byte, error)
}

// ExecRunner runs /usr/sbin/ipset in the current network namespace.
type ExecRunner struct{}

// Run executes ipset with args.
func (ExecRunner) Run(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ipset", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("ipset %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.Bytes(), nil
}

// Render is the `ipset restore` payload that brings sets in: create each
// set if missing, fill its temporary twin, swap, destroy the twin.
func Render(sets []Set) ([]byte, error) {
	var b bytes.Buffer
	for _, s := range sets {
		if len(s.Name) > MaxName {
			return nil, fmt.Errorf("ipset: name %q longer than %d", s.Name, MaxName)
		}
		create := fmt.Sprintf("%s family %s -exist", s.Type, s.Family)
		tmp := s.Name + tmpSuffix
		fmt.Fprintf(&b, "create %s %s\n", s.Name, create)
		fmt.Fprintf(&b, "create %s %s\n", tmp, create)
		fmt.Fprintf(&b, "flush %s\n", tmp)
		for _, m := range s.Members {
			fmt.Fprintf(&b, "add %s %s -exist\n", tmp, m)
		}
		fmt.Fprintf(&b, "swap %s %s\n", tmp, s.Name)
		fmt.Fprintf(&b, "destroy %s\n", tmp)
	}
	return b.Bytes(), nil
}

// Apply brings every desired set in, in one `ipset restore`.
func Apply(ctx context.Context, r Runner, sets []Set) error {
	payload, err := Render(sets)
	if err != nil {
		return err
	}
	if len(payload) == 0 {
		return nil
	}
	_, err = r.Run(ctx, payload, "restore")
	return err
}

// Prune destroys sets whose name starts with prefix and that are not in
// keep. Call it after the rules referencing them are gone.
func Prune(ctx context.Context, r Runner, prefix string, keep []Set) error {
	out, err := r.Run(ctx, nil, "list", "-n")
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, s := range keep {
		want[s.Name] = true
	}
	var stale []string
	for _, name := range strings.Fields(string(out)) {
		if strings.HasPrefix(name, prefix) && !want[name] {
			stale = append(stale, name)
		}
	}
	sort.Strings(stale)
	var errs []error
	for _, name := range stale {
		if _, err := r.Run(ctx, nil, "destroy", name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
