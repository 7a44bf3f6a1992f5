package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// secretKeyNames are the keys whose values are secrets (Secret fields).
var secretKeyNames = []string{"psk", "password_hash"}

// assignmentRE finds KEY = VALUE wherever a key may stand (a line's start,
// after the dot of a dotted key, in an inline table), in a file that may not
// parse. KEY is the key's last part as TOML may spell it (bare, "basic" with
// escapes such as "p\u0073k", 'literal'); VALUE is a string of any of
// TOML's four kinds, finished or not, or the token up to a separator.
var assignmentRE = regexp.MustCompile(`(?m)(?:^|[\s.{,])(` +
	`[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*'` +
	`)[ \t]*=[ \t]*(` +
	`"""(?s:(?:\\.|[^\\])*?)(?:"""|\z)|'''(?s:.*?)(?:'''|\z)|"(?:[^"\\\n]|\\.)*"?|'[^'\n]*'?|[^\s,}#]+` +
	`)`)

// secretValue is where a file sets a secret key, and what it says.
type secretValue struct {
	key        string // as TOML reads it: "psk", "password_hash"
	keyStart   int    // the key's first byte as written
	start, end int    // the value's bytes in the file
	// values are the value as written (without its quotes) and as TOML
	// reads it, when they differ: an error may quote either.
	values []string
	// text runs from the value to the end of its last line, lines
	// firstLine to lastLine: what a syntax error there may quote pieces of.
	text                string
	firstLine, lastLine int
}

// IsSecretKey says whether key (a key's last part as TOML reads it, after
// its quotes and escapes) holds a secret.
func IsSecretKey(key string) bool { return slices.Contains(secretKeyNames, key) }

// SecretAssignment is where a config's text sets a secret key, found
// however TOML spells the key ("psk", 'psk', "p\u0073k", wlan."psk", in an
// inline table) and in a file that does not parse (torn, hand-edited).
type SecretAssignment struct {
	Key string // as TOML reads it: "psk" or "password_hash"
	// LineStart says the key is the first thing on its line (a plain
	// KEY = VALUE line, not a dotted key or an inline table).
	LineStart bool
	// FirstLine and LastLine (from 1) are the lines the value spans.
	FirstLine, LastLine int
	// Values are the value as written (without its quotes) and as TOML
	// reads it, when they differ.
	Values []string
}

// SecretAssignments finds every secret key the text of a config sets: the
// one recognition redaction, ChangeDigest and the Pi's scrub share.
func SecretAssignments(data []byte) []SecretAssignment {
	var out []SecretAssignment
	for _, s := range secretValues(data) {
		lineStart := bytes.LastIndexByte(data[:s.keyStart], '\n') + 1
		out = append(out, SecretAssignment{
			Key:       s.key,
			LineStart: len(bytes.TrimLeft(data[lineStart:s.keyStart], " \t")) == 0,
			FirstLine: s.firstLine, LastLine: s.lastLine,
			Values: slices.Clone(s.values),
		})
	}
	return out
}

// secretValues finds every value written for a secret key. An unquoted one
// is not TOML and runs to the end of its line: all of it may be the secret.
func secretValues(data []byte) []secretValue {
	var out []secretValue
	prevEnd := 0
	for _, m := range assignmentRE.FindAllSubmatchIndex(data, -1) {
		start, end := m[4], m[5]
		if start < prevEnd || !IsSecretKey(keyName(string(data[m[2]:m[3]]))) {
			continue
		}
		raw := string(data[start:end])
		if raw[0] != '"' && raw[0] != '\'' {
			end = lineEnd(data, start)
			raw = string(data[start:end])
		}
		prevEnd = end
		s := secretValue{key: keyName(string(data[m[2]:m[3]])), keyStart: m[2], start: start, end: end, text: string(data[start:lineEnd(data, end)])}
		s.firstLine = 1 + bytes.Count(data[:start], []byte("\n"))
		s.lastLine = s.firstLine + strings.Count(raw, "\n")
		add := func(v string) {
			if v = strings.TrimSpace(v); v != "" && !slices.Contains(s.values, v) {
				s.values = append(s.values, v)
			}
		}
		add(strings.Trim(raw, `"'`))
		var decoded struct{ V string }
		if _, err := toml.Decode("V = "+raw, &decoded); err == nil {
			add(decoded.V)
		}
		out = append(out, s)
	}
	return out
}

// keyName is a key part as TOML reads it: "p\u0073k" is psk.
func keyName(part string) string {
	switch part[0] {
	case '\'':
		return strings.Trim(part, "'")
	case '"':
		var m map[string]any
		if _, err := toml.Decode(part+" = 0", &m); err == nil {
			for k := range m {
				return k
			}
		}
	}
	return part
}

func lineEnd(data []byte, i int) int {
	if nl := bytes.IndexByte(data[i:], '\n'); nl >= 0 {
		return i + nl
	}
	return len(data)
}

// quotedRE finds what an error message quotes.
var quotedRE = regexp.MustCompile(`"[^"]*"|'[^']*'`)

// redactSecrets keeps the secrets of a config that failed to parse out of
// the errors, which go to the terminal, and on the Pi to the journal,
// install.log and the consoles. Parse never quotes a secret it understood,
// but a TOML syntax error quotes the token it stopped at (an unquoted psk,
// one character of it), and a config that does not parse has no Secret
// values to hide behind. So a message about a line holding a secret loses
// every quoted piece of that line, however short; one about another line
// loses a secret quoted whole, and any quoted piece of one that is long
// enough to tell something.
func redactSecrets(errs Errors, data []byte) Errors {
	secrets := secretValues(data)
	if len(secrets) == 0 {
		return errs
	}
	out := make(Errors, len(errs))
	for i, e := range errs {
		c := *e
		c.Msg = redact(c.Msg, c.Line, secrets)
		out[i] = &c
	}
	return out
}

// minPiece is the shortest secret replaced wherever it appears in a
// message, quoted or not: a shorter one would blank out ordinary words.
const minPiece = 4

func redact(msg string, line int, secrets []secretValue) string {
	for _, s := range secrets {
		for _, v := range s.values {
			if len(v) >= minPiece {
				msg = strings.ReplaceAll(msg, v, redacted)
			}
		}
	}
	return quotedRE.ReplaceAllStringFunc(msg, func(q string) string {
		inner := q[1 : len(q)-1]
		if inner == "" || inner == redacted {
			return q
		}
		for _, s := range secrets {
			onLine := line == 0 || (line >= s.firstLine && line <= s.lastLine)
			long := len(inner) >= minPiece && slices.ContainsFunc(s.values, func(v string) bool { return strings.Contains(v, inner) })
			if (onLine && strings.Contains(s.text, inner)) || slices.Contains(s.values, inner) || long {
				return q[:1] + redacted + q[:1]
			}
		}
		return q
	})
}

// ChangeDigest is the hex sha256 of a config file with every secret value
// blanked: what the journal records to recognise an edited config, without
// confirming a guess at the Wi-Fi key or a password hash for whoever reads
// the card. (An edit of a secret alone is not seen as a change; deleting
// the failure marker still is.)
func ChangeDigest(data []byte) string {
	var blanked []byte
	last := 0
	for _, s := range secretValues(data) {
		blanked = append(append(blanked, data[last:s.start]...), `""`...)
		last = s.end
	}
	sum := sha256.Sum256(append(blanked, data[last:]...))
	return hex.EncodeToString(sum[:])
}
