package ipam

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash test re-executes the test binary as a child that allocates and
// releases in a loop on a small dual-stack range, printing one line per
// completed operation, and SIGKILLs it at random moments. After each kill
// the parent reopens the state and checks it against what the child
// reported.
const (
	crashDirEnv   = "NODENET_IPAM_CRASH_DIR"
	crashRoundEnv = "NODENET_IPAM_CRASH_ROUND"
	crashRounds   = 20
	crashLive     = 8 // the child keeps this many allocations alive
)

var crashRanges = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/28"), netip.MustParsePrefix("fd00::/124")}

func TestCrashSafety(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir, os.Getenv(crashRoundEnv))
		return
	}
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	dir := t.TempDir()
	// model: containerID -> addresses, as the child reported them.
	model := map[string]string{}
	var stats struct{ rounds, cleaned, torn int }
	defer func() {
		t.Logf("%d of %d kills left debris: %d files removed at Open, %d of them half-done allocations or releases",
			stats.rounds, crashRounds, stats.cleaned, stats.torn)
	}()
	for round := range crashRounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashSafety$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, fmt.Sprint(crashRoundEnv, "=", round))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Mostly kill once the child is busy (first line seen) after a
		// random further delay; every fourth round at a random moment
		// from exec on, which may hit Open's own clean-up.
		lines := bufio.NewScanner(out)
		var got []string
		if round%4 != 3 && lines.Scan() {
			got = append(got, lines.Text())
		}
		time.Sleep(time.Duration(rand.IntN(150_000)) * time.Microsecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for lines.Scan() {
			got = append(got, lines.Text())
		}
		if err := cmd.Wait(); err == nil || !cmd.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
			t.Fatalf("round %d: child exited on its own (%v); it should run until killed", round, err)
		}
		// The child may have finished one more operation than it reported.
		var inflight []string
		for _, line := range got {
			f := strings.Fields(line)
			switch f[0] {
			case "start":
			case "ok":
				model[f[1]] = strings.Join(f[2:], " ")
			case "rel":
				delete(model, f[1])
			case "next":
				inflight = append(inflight, f[1])
			default:
				t.Fatalf("round %d: unexpected line %q", round, line)
			}
		}
		var log bytes.Buffer
		a, err := Open(dir, crashRanges, Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
		if err != nil {
			t.Fatalf("round %d: Open after kill: %v", round, err)
		}
		cleaned := strings.Count(log.String(), "removing invalid state file")
		torn := strings.Count(log.String(), "incomplete allocation")
		stats.cleaned += cleaned
		stats.torn += torn
		if cleaned > 0 {
			stats.rounds++
		}
		checkInvariants(t, a)
		present := map[string]string{}
		for _, al := range a.List() {
			present[al.ContainerID] = strings.Join(addrsOf(al), " ")
		}
		for cid, addrs := range model {
			if _, ok := present[cid]; !ok && slices.Contains(inflight, cid) {
				continue // release done but not reported
			}
			if present[cid] != addrs {
				t.Errorf("round %d: %s reported with %s, after restart has %q", round, cid, addrs, present[cid])
			}
		}
		for cid := range present {
			if _, ok := model[cid]; !ok && !slices.Contains(inflight, cid) {
				t.Errorf("round %d: %s present but never reported", round, cid)
			}
		}
		if files := len(diskLeases(t, dir)); files != 2*len(present) {
			t.Errorf("round %d: %d lease files for %d allocations", round, files, len(present))
		}
		// Adopt what survived: an in-flight op may or may not have.
		model = present
		t.Logf("round %d: %d lines, %d allocations, Open removed %d files (%d of interrupted ops)",
			round, len(got), len(present), cleaned, torn)
		if t.Failed() {
			t.Fatalf("state:\n%s", dump(a))
		}
	}
}

// crashChild runs until killed: it keeps crashLive allocations alive,
// releasing the oldest before each new one, so addresses cycle.
func crashChild(dir, round string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	a, err := Open(dir, crashRanges, Options{Node: "crash"})
	if err != nil {
		fail(err)
	}
	live := a.List()
	slices.SortFunc(live, func(x, y Allocation) int { return x.Since.Compare(y.Since) })
	fmt.Println("start")
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		if len(live) >= crashLive {
			old := live[0]
			live = live[1:]
			fmt.Println("next", old.ContainerID)
			if _, err := a.Release(old.ContainerID, old.IfName); err != nil {
				fail(err)
			}
			fmt.Println("rel", old.ContainerID)
		}
		cid := fmt.Sprintf("r%s-%d", round, i)
		fmt.Println("next", cid)
		al, err := a.Allocate(Owner{ContainerID: cid, IfName: "eth0"})
		if err != nil {
			fail(err)
		}
		live = append(live, al)
		fmt.Println("ok", cid, strings.Join(addrsOf(al), " "))
	}
}
