package savefmt

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// splitReference is the plain character-by-character Split the fast one
// replaced; both must agree on every input.
func splitReference(line string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		inQuote bool
		inArg   bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			inQuote = !inQuote
			inArg = true
		case !inQuote && (c == ' ' || c == '\t'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

var splitSeeds = []string{
	"", " ", "\t \t", "a", " a ", "a b\tc", `""`, `"" ""`, `a""`, `""a`, `"a"b`, `a"b"`, `a"b c"d e`,
	`"a b"`, `"a b" c`, `"a\"b"`, `"a\\b"`, `a\b`, `"a\`, `"abc`, `a "b`, `"a" "b"`, `"a"` + "\t" + `"b"`,
	`-A X -m comment --comment "default/web:http -> 10.244.1.5:8080" -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 10.244.1.5:8080`,
	`--comment "say \"hi\" \\o/"`, `"\`, `\"`, `"a"\`, "\"a\tb\"", `x"" y`,
}

func checkSplit(t *testing.T, line string) {
	t.Helper()
	want, werr := splitReference(line)
	got, err := Split(line)
	if (err == nil) != (werr == nil) || !slices.Equal(got, want) || (got == nil) != (want == nil) {
		t.Errorf("Split(%q) = %q, %v; the reference gives %q, %v", line, got, err, want, werr)
	}
}

func TestSplitMatchesReference(t *testing.T) {
	for _, line := range splitSeeds {
		checkSplit(t, line)
	}
}

func FuzzSplit(f *testing.F) {
	for _, line := range splitSeeds {
		f.Add(line)
	}
	f.Fuzz(checkSplit)
}
