package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Problem is one thing wrong with a config file.
type Problem struct {
	Key    string // dotted key path, list entries as key[i]; "" for syntax errors
	Line   int    // 1-based; 0 when unknown (e.g. a default, or Validate on a struct)
	Column int    // 1-based; 0 when unknown
	Msg    string
}

// String renders e.g. `network.mtu: must be ... (line 12, column 1)`.
func (p Problem) String() string {
	var b strings.Builder
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	switch {
	case p.Line > 0 && p.Column > 0:
		fmt.Fprintf(&b, " (line %d, column %d)", p.Line, p.Column)
	case p.Line > 0:
		fmt.Fprintf(&b, " (line %d)", p.Line)
	}
	return b.String()
}

// Errors is every problem found in a config, sorted by line then key.
type Errors struct {
	Problems []Problem
}

// Error lists the problems one per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// newErrors sorts problems by line, then key; equal ones keep their order.
func newErrors(problems []Problem) *Errors {
	slices.SortStableFunc(problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Key, b.Key))
	})
	return &Errors{Problems: problems}
}
