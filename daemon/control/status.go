package control

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nodenet/nodenet/daemon/view"
)

// Status is what `nodenet status` shows. The JSON form is stable for scripts.
type Status struct {
	Version   string    `json:"version"`
	Node      string    `json:"node"`
	Pid       int       `json:"pid"`
	StartTime time.Time `json:"start_time"`
	Now       time.Time `json:"now"`

	Ready       bool   `json:"ready"`
	ReadyReason string `json:"ready_reason,omitempty"`

	Config ConfigStatus `json:"config"`

	API        view.APIHealth    `json:"api"`
	Informers  []view.KindState  `json:"informers"`
	Components []ComponentStatus `json:"components"`
}

// ConfigStatus says which config is in force.
type ConfigStatus struct {
	File            string    `json:"file"`
	Generation      int       `json:"generation"` // 1 at start, +1 per applied reload
	LoadedAt        time.Time `json:"loaded_at"`
	LastReloadError string    `json:"last_reload_error,omitempty"`
	// RestartRequired lists changed keys that take effect only on restart.
	RestartRequired []string `json:"restart_required,omitempty"`
}

// ComponentStatus is one reconciler's record.
type ComponentStatus struct {
	Name         string            `json:"name"`
	Syncs        int64             `json:"syncs"`
	Errors       int64             `json:"errors"`
	LastSync     time.Time         `json:"last_sync"`
	LastSuccess  time.Time         `json:"last_success"`
	LastDuration time.Duration     `json:"last_duration_ns"`
	LastError    string            `json:"last_error,omitempty"`
	Details      map[string]string `json:"details,omitempty"`
}

// Render writes the readable summary.
func (s *Status) Render(w io.Writer) {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return s.Now.Sub(t).Round(time.Millisecond).String() + " ago"
	}
	state := "ready"
	if !s.Ready {
		state = "NOT READY: " + s.ReadyReason
	}
	fmt.Fprintf(w, "nodenet %s on node %s (pid %d): %s\n", s.Version, s.Node, s.Pid, state)
	fmt.Fprintf(w, "uptime:  %s (since %s)\n", s.Now.Sub(s.StartTime).Round(time.Second), s.StartTime.Format(time.RFC3339))
	fmt.Fprintf(w, "config:  %s, generation %d, loaded %s\n", s.Config.File, s.Config.Generation, ago(s.Config.LoadedAt))
	if s.Config.LastReloadError != "" {
		fmt.Fprintf(w, "         last reload FAILED (old config kept):\n")
		for _, l := range strings.Split(s.Config.LastReloadError, "\n") {
			fmt.Fprintf(w, "           %s\n", l)
		}
	}
	if len(s.Config.RestartRequired) > 0 {
		fmt.Fprintf(w, "         changed, needs a restart: %s\n", strings.Join(s.Config.RestartRequired, ", "))
	}
	api := "connected"
	if !s.API.Connected {
		api = "UNREACHABLE"
	}
	fmt.Fprintf(w, "api:     %s %s since %s, last contact %s\n", s.API.Server, api, ago(s.API.Since), ago(s.API.LastContact))
	if !s.API.Connected && s.API.LastError != "" {
		fmt.Fprintf(w, "         last error: %s\n", s.API.LastError)
	}

	fmt.Fprintln(w, "\nobjects:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  KIND\tSYNCED\tCOUNT")
	for _, k := range s.Informers {
		fmt.Fprintf(tw, "  %s\t%v\t%d\n", k.Kind, k.Synced, k.Objects)
	}
	tw.Flush()

	fmt.Fprintln(w, "\ncomponents:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tLAST SUCCESS\tSYNCS\tERRORS\tLAST DURATION\tLAST ERROR")
	for _, c := range s.Components {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%s\t%s\n", c.Name, ago(c.LastSuccess), c.Syncs, c.Errors, c.LastDuration, c.LastError)
	}
	tw.Flush()
	for _, c := range s.Components {
		if len(c.Details) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", c.Name)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, k := range sortedKeys(c.Details) {
			fmt.Fprintf(tw, "  %s:\t%s\n", k, c.Details[k])
		}
		tw.Flush()
	}
}
