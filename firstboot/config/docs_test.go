package config

import (
	"bytes"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// referenceDoc is the config reference users read.
const referenceDoc = "../../docs/config.md"

// referenceRow is one row of the reference table: | `key` | default | rule |.
var referenceRow = regexp.MustCompile("^\\| `([a-z0-9_.\\[\\]]+)` \\| (.*?) \\| .* \\|$")

// docDefault is what a reference row says of a key's default.
type docDefault struct {
	line  int
	value string // a TOML value, `"auto"`; or "none", "required"
}

// readReference parses the reference table of docs/config.md: keys as
// Config's TOML names with "users[]." for [[users]] entries.
func readReference(t *testing.T) map[string]docDefault {
	t.Helper()
	data, err := os.ReadFile(referenceDoc)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]docDefault{}
	for i, line := range strings.Split(string(data), "\n") {
		m := referenceRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key := strings.ReplaceAll(m[1], "[]", "")
		if _, dup := rows[key]; dup {
			t.Errorf("%s:%d: %s is in the reference twice", referenceDoc, i+1, m[1])
		}
		rows[key] = docDefault{line: i + 1, value: m[2]}
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no reference rows (| `key` | default | rule |) found", referenceDoc)
	}
	return rows
}

// defaultValues is Default() as the file spells it: every key Encode
// writes, flattened to dotted names, with its TOML value.
func defaultValues(t *testing.T) map[string]any {
	t.Helper()
	encoded, err := Encode(Default())
	if err != nil {
		t.Fatal(err)
	}
	var tree map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(encoded)).Decode(&tree); err != nil {
		t.Fatal(err)
	}
	flat := map[string]any{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				walk(prefix+k+".", sub)
				continue
			}
			flat[prefix+k] = v
		}
	}
	walk("", tree)
	return flat
}

// The reference in docs/config.md names every key the config accepts and
// no other, and each default it shows is Default()'s: a new key or a
// changed default fails here until the reference says so.
func TestReferenceMatchesDefaults(t *testing.T) {
	t.Parallel()
	rows := readReference(t)
	defaults := defaultValues(t)
	keys := allKeys(reflect.TypeOf(Config{}), "")
	known := map[string]bool{}
	for _, key := range keys {
		known[key] = true
		if _, ok := rows[key]; !ok {
			t.Errorf("%s: the reference has no row for %s, which the config accepts (default %v); add one", referenceDoc, key, defaults[key])
		}
	}
	for key, row := range rows {
		at := referenceDoc + ":" + strconv.Itoa(row.line)
		if !known[key] {
			t.Errorf("%s: %s is not a key of the config (firstboot/config/config.go)", at, key)
			continue
		}
		want, set := defaults[key]
		switch row.value {
		case "none":
			if set {
				t.Errorf("%s: %s's default is %v, not none", at, key, tomlValue(t, key, want))
			}
		case "required":
			if strings.Contains(key, ".") {
				t.Errorf("%s: only top-level keys can be checked as required, not %s", at, key)
				continue
			}
			without := regexp.MustCompile("(?m)^"+regexp.QuoteMeta(key)+" = .*\n").ReplaceAllString(string(Example()), "")
			if _, err := Parse("x.toml", []byte(without)); err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("%s: %s is marked required, but a file without it parses (%v)", at, key, err)
			}
		default:
			got, ok := strings.CutPrefix(row.value, "`")
			got, ok2 := strings.CutSuffix(got, "`")
			if !ok || !ok2 {
				t.Errorf("%s: %s's default %q is neither a TOML value in backticks, none nor required", at, key, row.value)
				continue
			}
			var doc map[string]any
			if _, err := toml.Decode("v = "+got, &doc); err != nil {
				t.Errorf("%s: %s's default %s is not a TOML value: %v", at, key, got, err)
				continue
			}
			if !set {
				t.Errorf("%s: %s has no default (Default() leaves it unset), the reference says %s; write none", at, key, got)
			} else if !reflect.DeepEqual(doc["v"], want) {
				t.Errorf("%s: %s's default is %s in the reference but %s in Default() (firstboot/config/defaults.go)", at, key, got, tomlValue(t, key, want))
			}
		}
	}
}

// tomlValue renders v as the file would spell it, for messages.
func tomlValue(t *testing.T, key string, v any) string {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(map[string]any{"v": v}); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return strings.TrimSpace(strings.TrimPrefix(b.String(), "v = "))
}
