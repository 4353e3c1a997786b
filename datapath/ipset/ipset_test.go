package ipset

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	got, err := Render([]Set{
		{Name: "NODENET-PS-A-4", Type: "hash:ip", Family: "inet", Members: []string{"10.244.0.2", "10.244.1.3"}},
		{Name: "NODENET-PS-B-4", Type: "hash:net", Family: "inet", Members: []string{"10.0.0.0/8", "10.1.0.0/16 nomatch"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `create NODENET-PS-A-4 hash:ip family inet -exist
create NODENET-PS-A-4~ hash:ip family inet -exist
flush NODENET-PS-A-4~
add NODENET-PS-A-4~ 10.244.0.2 -exist
add NODENET-PS-A-4~ 10.244.1.3 -exist
swap NODENET-PS-A-4~ NODENET-PS-A-4
destroy NODENET-PS-A-4~
create NODENET-PS-B-4 hash:net family inet -exist
create NODENET-PS-B-4~ hash:net family inet -exist
flush NODENET-PS-B-4~
add NODENET-PS-B-4~ 10.0.0.0/8 -exist
add NODENET-PS-B-4~ 10.1.0.0/16 nomatch -exist
swap NODENET-PS-B-4~ NODENET-PS-B-4
destroy NODENET-PS-B-4~
`
	if string(got) != want {
		t.Errorf("Render:\n%s\nwant:\n%s", got, want)
	}
	if _, err := Render([]Set{{Name: strings.Repeat("N", MaxName+1)}}); err == nil {
		t.Error("an over-long name was accepted")
	}
}

// TestKernel applies and prunes sets in a throwaway network namespace (IP
// sets are per namespace).
func TestKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	if _, err := exec.LookPath("ipset"); err != nil {
		t.Skip("ipset is not installed")
	}
	ns := fmt.Sprintf("nnt%d-ipset", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	r := nsRunner{ns}
	ctx := context.Background()
	a := Set{Name: "NODENET-PS-A-4", Type: "hash:ip", Family: "inet", Members: []string{"10.244.0.2"}}
	b := Set{Name: "NODENET-PS-B-4", Type: "hash:net", Family: "inet", Members: []string{"10.0.0.0/8", "10.1.0.0/16 nomatch"}}
	if err := Apply(ctx, r, []Set{a, b}); err != nil {
		t.Fatal(err)
	}
	a.Members = []string{"10.244.0.3"}
	if err := Apply(ctx, r, []Set{a}); err != nil {
		t.Fatal(err)
	}
	if err := Prune(ctx, r, "NODENET-PS-", []Set{a}); err != nil {
		t.Fatal(err)
	}
	out, err := r.Run(ctx, nil, "save")
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if !strings.Contains(s, "add NODENET-PS-A-4 10.244.0.3") || strings.Contains(s, "10.244.0.2") || strings.Contains(s, "NODENET-PS-B-4") || strings.Contains(s, "~") {
		t.Errorf("kernel sets after apply and prune:\n%s", s)
	}
}

type nsRunner struct{ ns string }

func (n nsRunner) Run(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.ns, "ipset"}, args...)...)
	cmd.Stdin = strings.NewReader(string(stdin))
	return cmd.Output()
}
