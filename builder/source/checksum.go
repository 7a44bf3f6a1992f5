package source

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"strings"
)

// ChecksumError is an input whose sha256 differs from the expected one.
type ChecksumError struct {
	Name     string
	Expected string
	Origin   string // where Expected came from
	Got      string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("checksum mismatch for %q: expected sha256 %s (from %s), got %s: the file is damaged or incomplete, or the checksum belongs to another file; download it again",
		e.Name, e.Expected, e.Origin, e.Got)
}

func parseHex(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) != 64 {
		return "", fmt.Errorf("sha256 %q must be 64 hex digits, got %d characters", s, len(s))
	}
	if _, err := hex.DecodeString(s); err != nil {
		return "", fmt.Errorf("sha256 %q is not hex", s)
	}
	return s, nil
}

// parseSidecar reads sha256sum output ("HEX  NAME" or "HEX *NAME", one per
// line, as Raspberry Pi publishes). With one line its digest is used whatever
// the name (files get renamed); with several, the line naming src's file.
func parseSidecar(data []byte, src string) (string, error) {
	type entry struct{ sum, name string }
	var entries []entry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		sum, err := parseHex(fields[0])
		if err != nil {
			return "", fmt.Errorf("line %d: %w (expected sha256sum format \"HEX  NAME\")", line, err)
		}
		name := ""
		if len(fields) > 1 {
			name = strings.TrimPrefix(strings.Join(fields[1:], " "), "*")
		}
		entries = append(entries, entry{sum, name})
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	switch len(entries) {
	case 0:
		return "", errors.New("no checksum in it (expected sha256sum format \"HEX  NAME\")")
	case 1:
		return entries[0].sum, nil
	}
	base := baseName(src)
	found := ""
	for _, e := range entries {
		if baseName(e.name) != base {
			continue
		}
		if found != "" && found != e.sum {
			return "", fmt.Errorf("%q is listed twice with different checksums (%s and %s): the checksum file is damaged or mixes two releases; download it again or pass --sha256", base, found, e.sum)
		}
		found = e.sum
	}
	if found == "" {
		return "", fmt.Errorf("%d checksums but none for %q", len(entries), base)
	}
	return found, nil
}

func baseName(name string) string {
	if IsURL(name) {
		if i := strings.IndexAny(name, "?#"); i >= 0 {
			name = name[:i]
		}
		return path.Base(name)
	}
	return filepath.Base(name)
}

// VerifyFirst compares a local input with its expected checksum now, in
// one read of it, for a caller that writes as it decodes (onto a disk) and
// must refuse a wrong input before its first write. It says whether it
// compared: a URL, which is read once, is compared as WriteTo or Stream
// read it, and an input with no expected checksum is not.
func (s *Source) VerifyFirst(ctx context.Context) (bool, error) {
	if s.Checksum == "" || s.file == nil {
		return false, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, contextReader{ctx, io.NewSectionReader(s.file, 0, s.Size)}); err != nil {
		return false, fmt.Errorf("read %q to check its sha256: %w", s.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != s.Checksum {
		return false, &ChecksumError{Name: s.Name, Expected: s.Checksum, Origin: s.ChecksumOrigin, Got: got}
	}
	return true, nil
}
