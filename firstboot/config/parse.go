package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/nixpi/nixpi/firstboot/inputfile"
)

// Error is one problem in a config file. Msg says what is wrong and how to
// fix it; Key is the dotted key it concerns ("target.disk",
// "users[1].password_hash", 0-based), used to find Line.
type Error struct {
	File string
	Line int // 0 when no single line is to blame (a missing key)
	Key  string
	Msg  string
	// ValueLine is the line within Key's multi-line value (the module) the
	// problem is on, 1-based; 0 blames the key's line.
	ValueLine int
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file, in line order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// MaxFileSize bounds a config file: hundreds of times any real one, so only
// a wrong file (or an endless one) is refused.
const MaxFileSize = 1 << 20

// What names a config file in messages about reading one.
const What = "an install config"

// ReadFile reads the config file at path: a regular file of at most
// MaxFileSize bytes.
func ReadFile(path string) ([]byte, error) {
	return inputfile.Read(path, What, MaxFileSize)
}

// Load reads and parses the config file at path.
func Load(path string) (*Config, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse reads a nixpi.toml strictly: a missing or unknown schema, a syntax
// error, an unknown key, a value of the wrong type and a value that fails
// Validate are all errors naming name:line. Keys the file leaves out take
// Default's values. The error is an Errors when the file parsed but has
// problems.
func Parse(name string, data []byte) (*Config, error) {
	at := func(line int, key, format string, args ...any) error {
		return Errors{{File: name, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}}
	}
	if !utf8.Valid(data) {
		return nil, at(0, "", "the file is not UTF-8 text; save it as UTF-8")
	}

	// The schema decides how to read the rest, so look at it first.
	var head struct {
		Schema any `toml:"schema"`
	}
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&head); err != nil {
		return nil, redactSecrets(decodeError(name, data, err, false), data)
	}
	lines := locateKeys(data)
	switch v := head.Schema.(type) {
	case nil:
		return nil, at(0, "", "no schema version; add `schema = %d` as the first line (this nixpi reads schema %d)", SchemaVersion, SchemaVersion)
	case int64:
		if v != SchemaVersion {
			return nil, at(lines.find("schema"), "schema", "schema = %d is not supported: this nixpi reads schema %d; use a nixpi release that reads schema %d, or write the file for schema %d", v, SchemaVersion, v, SchemaVersion)
		}
	default:
		return nil, at(lines.find("schema"), "schema", "schema must be a whole number: write `schema = %d`", SchemaVersion)
	}

	cfg := Default()
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(cfg)
	if err != nil {
		return nil, redactSecrets(decodeError(name, data, err, true), data)
	}

	var errs Errors
	reported := map[string]bool{} // each entry of an array of tables repeats its keys
	for _, key := range topUndecoded(md.Undecoded()) {
		if reported[key.String()] {
			continue
		}
		reported[key.String()] = true
		msg := unknownKeyMessage(key)
		found := lines.all(stripIndexes(key.String()))
		if len(found) == 0 {
			found = []int{0}
		}
		for _, line := range found {
			errs = append(errs, &Error{File: name, Line: line, Key: key.String(), Msg: msg})
		}
	}
	if len(errs) > 0 {
		return nil, errs.sorted()
	}

	applyImpliedDefaults(cfg, md)
	if err := cfg.Validate(); err != nil {
		var verrs Errors
		if !errors.As(err, &verrs) {
			return nil, err
		}
		return nil, lines.place(name, data, verrs)
	}
	return cfg, nil
}

// applyImpliedDefaults adjusts defaults that depend on other keys the file
// set, so a file saying only what it means is valid.
func applyImpliedDefaults(cfg *Config, md toml.MetaData) {
	// serial replaces the default disk = "auto".
	if md.IsDefined("target", "serial") && !md.IsDefined("target", "disk") {
		cfg.Target.Disk = ""
	}
	// Subvolumes are a btrfs thing; ext4 has none unless the file insists
	// (which Validate then rejects).
	if cfg.Layout.RootFS != FSBtrfs && !md.IsDefined("layout", "subvolumes") {
		cfg.Layout.Subvolumes = nil
	}
	// Empty lists read back as nil so Encode/Parse round-trips exactly.
	if len(cfg.Users) == 0 {
		cfg.Users = nil
	}
	for i := range cfg.Users {
		if len(cfg.Users[i].SSHKeys) == 0 {
			cfg.Users[i].SSHKeys = nil
		}
	}
	if len(cfg.Layout.Subvolumes) == 0 {
		cfg.Layout.Subvolumes = nil
	}
}

func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
	return es
}

// decodeError turns the TOML library's syntax and type errors into name:line
// messages. In the decode phase (syntax already checked) a ParseError is a
// value's own check failing, e.g. a size.
var (
	typeErrRE  = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): incompatible types: TOML value has type ([^;]+); destination has type (.+)$`)
	tableErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): type mismatch for [^:]+: expected (\w+) but found (.+)$`)
)

func decodeError(name string, data []byte, err error, decoding bool) Errors {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		if decoding && pe.LastKey != "" {
			// A value's own check failed (a size, say): say which key.
			return Errors{{File: name, Line: pe.Position.Line, Key: pe.LastKey, Msg: fmt.Sprintf("%s: %s", pe.LastKey, pe.Message)}}
		}
		return Errors{{File: name, Line: syntaxErrorLine(pe, data), Msg: fmt.Sprintf("not valid TOML: %s; see https://toml.io for the syntax", strings.TrimSuffix(pe.Message, "."))}}
	}
	m := typeErrRE.FindStringSubmatch(err.Error())
	if m == nil {
		if m = tableErrRE.FindStringSubmatch(err.Error()); m != nil {
			m[3], m[4] = m[4], m[3] // found, want
		}
	}
	if m != nil {
		line, _ := strconv.Atoi(m[1])
		want := typeName(m[4])
		if t, ok := fieldType(m[2]); ok && t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct {
			want = "an array of tables [[" + m[2] + "]]"
		} else if ok && t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(textUnmarshaler) {
			want = "a table [" + m[2] + "]"
		}
		return Errors{{File: name, Line: line, Key: m[2], Msg: fmt.Sprintf("%s has the wrong type: found %s, want %s", m[2], strings.TrimSuffix(typeName(m[3]), ` in quotes ("...")`), want)}}
	}
	return Errors{{File: name, Msg: strings.TrimPrefix(err.Error(), "toml: ")}}
}

// syntaxErrorLine is the line of the byte the parser stopped at. The
// library's own line number is one too far when that byte is the newline
// ending an unfinished line ("[target" then newline).
func syntaxErrorLine(pe toml.ParseError, data []byte) int {
	if pe.Position.Start > 0 && pe.Position.Start <= len(data) {
		return 1 + bytes.Count(data[:pe.Position.Start], []byte("\n"))
	}
	return pe.Position.Line
}

// typeName describes a type as the TOML library names it (Go types for
// values, rough kinds for destinations) in the file's terms.
func typeName(t string) string {
	switch {
	case t == "string" || strings.Contains(t, "string-like"):
		return `a string in quotes ("...")`
	case t == "bool" || t == "boolean":
		return "true or false"
	case strings.HasPrefix(t, "int") || t == "integer":
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a decimal number"
	case strings.HasPrefix(t, "[]map"):
		return "an array of tables [[...]]"
	case strings.HasPrefix(t, "[]") || t == "slice" || t == "array":
		return "a list [...]"
	case strings.HasPrefix(t, "map") || t == "struct" || t == "table":
		return "a table"
	case strings.Contains(t, "time"):
		return "a date/time"
	}
	return t
}

// topUndecoded drops keys under an already unknown table, so an unknown
// [table] is one error, not one per key.
func topUndecoded(keys []toml.Key) []toml.Key {
	seen := map[string]bool{}
	var top []toml.Key
	for _, k := range keys {
		under := false
		for i := 1; i < len(k); i++ {
			if seen[toml.Key(k[:i]).String()] {
				under = true
				break
			}
		}
		seen[k.String()] = true
		if !under {
			top = append(top, k)
		}
	}
	return top
}

// unknownKeyMessage names the key and the keys that are allowed where it is.
func unknownKeyMessage(key toml.Key) string {
	t := reflect.TypeOf(Config{})
	for _, part := range key[:len(key)-1] {
		f, ok := fieldByTag(t, part)
		if !ok {
			break
		}
		t = f.Type
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
	}
	where := "at the top level"
	if len(key) > 1 {
		where = "in [" + toml.Key(key[:len(key)-1]).String() + "]"
	}
	msg := fmt.Sprintf("unknown key %q %s", key[len(key)-1], where)
	if t.Kind() == reflect.Struct {
		msg += "; check the spelling, allowed here: " + strings.Join(tagNames(t), ", ")
	}
	return msg
}

// fieldType is the Go type of the field a dotted key names.
func fieldType(key string) (reflect.Type, bool) {
	t := reflect.TypeOf(Config{})
	for _, part := range strings.Split(key, ".") {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		f, ok := fieldByTag(t, part)
		if !ok {
			return nil, false
		}
		t = f.Type
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t, true
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	if t.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if tagName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func tagNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		if n := tagName(t.Field(i)); n != "" && n != "-" {
			names = append(names, n)
		}
	}
	return names
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	return name
}

var textUnmarshaler = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()

var indexRE = regexp.MustCompile(`\[\d+\]`)

func stripIndexes(key string) string { return indexRE.ReplaceAllString(key, "") }
