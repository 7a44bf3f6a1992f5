package config

import (
	"strconv"
	"strings"
)

// keyLines maps each key of a TOML document to the lines it is set on, so a
// problem found after decoding (the TOML library does not expose key
// positions) can still name its line. Keys carry 0-based indexes for arrays
// of tables: "users[1].name". Tables map to their header's line.
type keyLines map[string][]int

// find gives the line of key, else of the nearest enclosing key or table
// that the document has, else 0.
func (kl keyLines) find(key string) int {
	for key != "" {
		if l, ok := kl[key]; ok {
			return l[0]
		}
		switch {
		case strings.HasSuffix(key, "]"):
			key = key[:strings.LastIndexByte(key, '[')]
		case strings.Contains(key, "."):
			key = key[:strings.LastIndexByte(key, '.')]
		default:
			key = ""
		}
	}
	return 0
}

// all gives every line that sets key, ignoring array indexes.
func (kl keyLines) all(key string) []int {
	var lines []int
	for k, l := range kl {
		if stripIndexes(k) == key {
			lines = append(lines, l...)
		}
	}
	return lines
}

// locateKeys scans a document that the TOML parser has accepted. It only
// needs to tell keys from values, so it skips over strings, arrays and
// inline tables without interpreting them.
func locateKeys(data []byte) keyLines {
	kl := keyLines{}
	s := string(data)
	line := 1
	arrayCounts := map[string]int{} // array-of-tables path → entries so far
	var prefix []string             // current table, with indexes
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '\n':
			line++
			i++
		case c == '#':
			i = skipComment(s, i)
		case c == '[':
			array := strings.HasPrefix(s[i:], "[[")
			if array {
				i += 2
			} else {
				i++
			}
			var parts []string
			parts, i = keyParts(s, i, ']')
			if array && len(parts) > 0 {
				// The header's last part is a new entry, not the current one.
				path := strings.Join(parts, ".")
				prefix = append(indexed(parts[:len(parts)-1], arrayCounts), parts[len(parts)-1]+"["+strconv.Itoa(arrayCounts[path])+"]")
				arrayCounts[path]++
			} else {
				prefix = indexed(parts, arrayCounts)
			}
			kl.add(strings.Join(prefix, "."), line)
			i = skipComment(s, i) // only a comment may follow a header
		default:
			var parts []string
			parts, i = keyParts(s, i, '=')
			if len(parts) > 0 {
				kl.add(strings.Join(append(append([]string{}, prefix...), parts...), "."), line)
			}
			i = skipValue(s, i, &line)
		}
	}
	return kl
}

func (kl keyLines) add(key string, line int) { kl[key] = append(kl[key], line) }

// indexed adds the current index to each part of a table path that is an
// array of tables.
func indexed(parts []string, arrayCounts map[string]int) []string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = p
		if n, ok := arrayCounts[strings.Join(parts[:i+1], ".")]; ok && n > 0 {
			out[i] += "[" + strconv.Itoa(n-1) + "]"
		}
	}
	return out
}

// keyParts reads a dotted key up to stop ('=' or ']') and returns its parts
// and the index after stop.
func keyParts(s string, i int, stop byte) ([]string, int) {
	var parts []string
	for i < len(s) {
		switch c := s[i]; {
		case c == ' ' || c == '\t' || c == '.':
			i++
		case c == stop:
			i++
			if stop == ']' && i < len(s) && s[i] == ']' {
				i++
			}
			return parts, i
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' && s[j] != '\n' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(s) || s[j] != '"' {
				return parts, j
			}
			part, err := strconv.Unquote(s[i : j+1])
			if err != nil {
				part = s[i+1 : j]
			}
			parts = append(parts, part)
			i = j + 1
		case c == '\'':
			j := strings.IndexAny(s[i+1:], "'\n")
			if j < 0 || s[i+1+j] != '\'' {
				return parts, len(s)
			}
			parts = append(parts, s[i+1:i+1+j])
			i += j + 2
		case c == '\n':
			return parts, i
		default:
			j := i
			for j < len(s) && isBareKeyChar(s[j]) {
				j++
			}
			if j == i {
				return parts, i + 1 // not a key: make progress
			}
			parts = append(parts, s[i:j])
			i = j
		}
	}
	return parts, i
}

func isBareKeyChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func skipComment(s string, i int) int {
	if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
		return i + j
	}
	return len(s)
}

// skipValue skips one value up to (not including) the newline that ends it,
// counting the newlines inside multi-line strings and arrays.
func skipValue(s string, i int, line *int) int {
	depth := 0
	for i < len(s) {
		switch {
		case strings.HasPrefix(s[i:], `"""`), strings.HasPrefix(s[i:], `'''`):
			quote := s[i : i+3]
			j := i + 3
			for j < len(s) && !strings.HasPrefix(s[j:], quote) {
				if s[j] == '\\' && quote == `"""` {
					if j+1 < len(s) && s[j+1] == '\n' {
						*line++
					}
					j++
				} else if s[j] == '\n' {
					*line++
				}
				j++
			}
			j += 3
			for k := 0; k < 2 && j < len(s) && s[j] == quote[0]; k++ {
				j++ // up to two quotes may end the content
			}
			i = j
		case s[i] == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' && s[j] != '\n' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			i = j + 1
		case s[i] == '\'':
			j := strings.IndexAny(s[i+1:], "'\n")
			if j < 0 {
				return len(s)
			}
			i += j + 2
		case s[i] == '[' || s[i] == '{':
			depth++
			i++
		case s[i] == ']' || s[i] == '}':
			depth--
			i++
		case s[i] == '#':
			i = skipComment(s, i)
		case s[i] == '\n':
			if depth <= 0 {
				return i
			}
			*line++
			i++
		default:
			i++
		}
	}
	return i
}

// AtLines fills in the file name and line of problems found after Parse
// (in the NixOS configuration, say) from their keys.
func AtLines(name string, data []byte, errs Errors) Errors {
	return locateKeys(data).place(name, data, errs)
}

// place sets each problem's file and line: its key's, or for a problem on
// a line of a value written over several lines (the module), that line of
// the file.
func (kl keyLines) place(name string, data []byte, errs Errors) Errors {
	for _, e := range errs {
		e.File = name
		e.Line = kl.find(e.Key)
		if start, multiLine := kl.valueStart(data, e.Key); e.ValueLine > 0 && multiLine {
			e.Line = start + e.ValueLine - 1
		}
	}
	return errs.sorted()
}

// valueStart is the line on which the text of key's string value starts:
// the key's own line, or the next one for a multi-line string that opens
// with a newline, which TOML drops; 0 when the key is not in data.
// multiLine says the value is a multi-line string, whose lines are the
// file's (in a one-line string, a \n escape starts the value's next line).
func (kl keyLines) valueStart(data []byte, key string) (line int, multiLine bool) {
	found, ok := kl[key]
	if !ok {
		return 0, false
	}
	line = found[0]
	text := strings.Split(string(data), "\n")[line-1]
	if _, value, ok := strings.Cut(text, "="); ok {
		value = strings.TrimSpace(value)
		for _, delim := range []string{"'''", `"""`} {
			if rest, ok := strings.CutPrefix(value, delim); ok {
				if strings.TrimRight(rest, "\r") == "" {
					return line + 1, true
				}
				return line, true
			}
		}
	}
	return line, false
}
