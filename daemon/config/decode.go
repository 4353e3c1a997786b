package config

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The decoder does not hand the whole file to toml's struct decoding: that
// stops at the first type mismatch, matches keys case-insensitively and
// treats bare integers as nanosecond durations. Instead every table is
// decoded into map[string]toml.Primitive and walked against the struct's
// toml tags, so each key gets its own exact match, type check and position.
//
// Undecoded() cannot report unknown keys here, because decoding into a map
// marks all of its keys as decoded; the walk reports them instead.

// decoded is what the decoder learned about the file beyond the values.
type decoded struct {
	md     toml.MetaData
	size   int
	starts []int                     // byte offset of each line
	lines  []string                  // the text of each line
	prims  map[string]toml.Primitive // key path -> its value, to probe for a position
	failed map[string]bool           // key paths that already have a decode problem
	found  map[string][2]int         // position cache: key path -> line, column
	probes int                       // position probes left, see maxProbes
}

// maxProbes bounds the position lookups per file. Each probe costs time
// proportional to the file size (the library re-splits the input to build
// its error), so a huge file of bad keys would otherwise take quadratic
// time; problems beyond the budget are still reported, without a line.
const maxProbes = 200

// decode parses data and stores every known key into c. It returns nil
// decoded information on a TOML syntax error, since nothing else in the
// file can then be trusted.
func decode(data []byte, c *Config) (*decoded, []Problem) {
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		return nil, []Problem{syntaxProblem(string(data), err)}
	}
	d := &decoded{
		md:     md,
		size:   len(data),
		starts: lineStarts(string(data)),
		lines:  strings.Split(string(data), "\n"),
		prims:  map[string]toml.Primitive{},
		failed: map[string]bool{},
		found:  map[string][2]int{},
		probes: maxProbes,
	}
	var problems []Problem
	d.table(top, reflect.ValueOf(c).Elem(), nil, &problems)
	return d, problems
}

func syntaxProblem(data string, err error) Problem {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		line, col := locate(lineStarts(data), len(data), pe.Position)
		return Problem{Line: line, Column: col, Msg: "invalid TOML: " + pe.Message}
	}
	return Problem{Msg: "invalid TOML: " + err.Error()}
}

// table decodes the keys of one TOML table into the struct v.
func (d *decoded) table(prims map[string]toml.Primitive, v reflect.Value, path toml.Key, out *[]Problem) {
	fields := map[string]int{}
	for i := range v.NumField() {
		if name := tomlName(v.Type().Field(i)); name != "" {
			fields[name] = i
		}
	}
	// Sorted only to make problem order deterministic before the final sort.
	for _, name := range slices.Sorted(maps.Keys(prims)) {
		prim := prims[name]
		key := append(slices.Clip(path), name)
		ks := key.String()
		d.prims[ks] = prim
		fail := func(msg string) {
			d.failed[ks] = true
			line, col := d.position(ks, name)
			*out = append(*out, Problem{Key: ks, Line: line, Column: col, Msg: msg})
		}

		i, ok := fields[name]
		if !ok {
			fail("unknown key" + suggest(key))
			continue
		}
		fv := v.Field(i)
		var raw any
		if err := d.md.PrimitiveDecode(prim, &raw); err != nil {
			fail(fmt.Sprintf("cannot decode: %v", err))
			continue
		}
		if !isTable(fv.Type()) {
			if msg := setLeaf(fv, raw); msg != "" {
				fail(msg)
			}
			continue
		}
		if _, ok := raw.(map[string]any); !ok {
			fail("must be a table, got " + typeName(raw))
			continue
		}
		var sub map[string]toml.Primitive
		if err := d.md.PrimitiveDecode(prim, &sub); err != nil {
			fail(fmt.Sprintf("cannot decode table: %v", err))
			continue
		}
		d.table(sub, fv, key, out)
	}
}

// probe makes the decoder report where a value is: MetaData has no public
// position lookup, but an Unmarshaler error comes back as a ParseError
// carrying the position of the key being decoded.
type probe struct{}

var errProbe = errors.New("position probe")

func (probe) UnmarshalTOML(any) error { return errProbe }

// firstPosition returns where prim's value starts. Tables created
// implicitly by [a.b] or a.b = 1 have no position of their own; they get
// their first child's.
func (d *decoded) firstPosition(prim toml.Primitive) (toml.Position, bool) {
	if d.probes <= 0 {
		return toml.Position{}, false
	}
	d.probes--
	var pe toml.ParseError
	if err := d.md.PrimitiveDecode(prim, probe{}); errors.As(err, &pe) && pe.Position.Line > 0 {
		return pe.Position, true
	}
	var sub map[string]toml.Primitive
	if err := d.md.PrimitiveDecode(prim, &sub); err != nil {
		return toml.Position{}, false
	}
	var first toml.Position
	found := false
	for _, child := range sub {
		if p, ok := d.firstPosition(child); ok && (!found || p.Start < first.Start) {
			first, found = p, true
		}
	}
	return first, found
}

// position returns the 1-based line and column of key (whose last segment
// is name) in the file, or 0, 0 if the key was not in the file. The column
// is that of the key name when it is on the same line as its value.
func (d *decoded) position(key, name string) (line, col int) {
	if lc, ok := d.found[key]; ok {
		return lc[0], lc[1]
	}
	line, col = d.lookup(key, name)
	d.found[key] = [2]int{line, col}
	return line, col
}

func (d *decoded) lookup(key, name string) (line, col int) {
	prim, ok := d.prims[key]
	if !ok {
		return 0, 0
	}
	p, ok := d.firstPosition(prim)
	if !ok {
		return 0, 0
	}
	line, col = locate(d.starts, d.size, p)
	if line < 1 || line > len(d.lines) {
		return 0, 0
	}
	text := d.lines[line-1]
	if col-1 <= len(text) && col > 1 {
		if i := strings.LastIndex(text[:col-1], name); i >= 0 {
			col = i + 1
		}
	}
	return line, col
}

// lineStarts returns the byte offset at which each line of data begins.
func lineStarts(data string) []int {
	starts := []int{0}
	for i := range len(data) {
		if data[i] == '\n' {
			starts = append(starts, i+1)
		}
	}
	return starts
}

// locate turns a toml.Position into a 1-based line and byte column. It
// prefers the byte offset: the library's own Line and Col can be one off
// when the offset is a newline (e.g. an unterminated [table]).
func locate(starts []int, size int, p toml.Position) (line, col int) {
	if p.Start < 0 || p.Start > size || (p.Start == 0 && p.Line > 1) {
		return p.Line, 0 // offset unusable; keep what the library said
	}
	i, found := slices.BinarySearch(starts, p.Start)
	if !found {
		i-- // the offset is inside the line starting before it
	}
	return i + 1, p.Start - starts[i] + 1
}

// setLeaf stores a decoded TOML value in a leaf field, or says why it cannot.
func setLeaf(v reflect.Value, raw any) string {
	switch {
	case v.Type() == durationType:
		s, ok := raw.(string)
		if _, isInt := raw.(int64); isInt {
			return `must be a duration string with a unit such as "30s" or "5m"; ` +
				"bare integers are rejected because their unit is ambiguous"
		}
		if !ok {
			return `must be a duration string such as "30s", got ` + typeName(raw)
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Sprintf(`invalid duration %q: use a number with a unit such as "100ms", "30s" or "5m"`, s)
		}
		v.SetInt(int64(dur))
	case v.Kind() == reflect.String:
		s, ok := raw.(string)
		if !ok {
			return "must be a string, got " + typeName(raw)
		}
		v.SetString(s)
	case v.CanInt():
		n, ok := raw.(int64)
		if !ok {
			return "must be an integer, got " + typeName(raw)
		}
		if v.OverflowInt(n) {
			return fmt.Sprintf("%d is out of range", n)
		}
		v.SetInt(n)
	case v.CanFloat():
		switch n := raw.(type) {
		case int64:
			v.SetFloat(float64(n))
		case float64:
			v.SetFloat(n)
		default:
			return "must be a number, got " + typeName(raw)
		}
	case v.Kind() == reflect.Bool:
		b, ok := raw.(bool)
		if !ok {
			return "must be true or false, got " + typeName(raw)
		}
		v.SetBool(b)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		arr, ok := raw.([]any)
		if !ok {
			return "must be an array of strings, got " + typeName(raw)
		}
		// A fresh slice: the default's backing array must not be reused.
		s := reflect.MakeSlice(v.Type(), len(arr), len(arr))
		for i, e := range arr {
			str, ok := e.(string)
			if !ok {
				return fmt.Sprintf("must be an array of strings, element %d is %s", i, typeName(e))
			}
			s.Index(i).SetString(str)
		}
		v.Set(s)
	default:
		// A field type this decoder does not know yet: a programming error,
		// reported like any other problem so the file is never half-read.
		return fmt.Sprintf("unsupported field type %s", v.Type())
	}
	return ""
}

func typeName(raw any) string {
	switch raw.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a datetime"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", raw)
}

// suggest proposes the known key an unknown one was probably meant to be:
// a case or dash/underscore variant in the same table, or the same name in
// another section (a key written above its [section] header).
func suggest(key toml.Key) string {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	want := norm(key[len(key)-1])
	parent := key[:len(key)-1].String()
	var elsewhere []string
	for _, k := range knownKeys() {
		i := strings.LastIndexByte(k, '.')
		kParent, kName := "", k
		if i >= 0 {
			kParent, kName = k[:i], k[i+1:]
		}
		if norm(kName) != want {
			continue
		}
		if kParent == parent {
			return fmt.Sprintf(" (did you mean %q?)", kName)
		}
		elsewhere = append(elsewhere, k)
	}
	if len(elsewhere) == 1 {
		return fmt.Sprintf(" (did you mean %s?)", elsewhere[0])
	}
	return ""
}

// knownKeys lists every table and leaf key path of Config.
func knownKeys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			name := tomlName(t.Field(i))
			if name == "" {
				continue
			}
			if prefix != "" {
				name = prefix + "." + name
			}
			keys = append(keys, name)
			if isTable(t.Field(i).Type) {
				walk(t.Field(i).Type, name)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return keys
}
