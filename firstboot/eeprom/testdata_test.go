package eeprom

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// repoRoot walks up from the package directory to go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// realData returns ../shared/testdata/rpi-eeprom next to the repository, the
// real Raspberry Pi bootloader images, or skips the test when it is absent.
func realData(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "..", "shared", "testdata", "rpi-eeprom")
	if _, err := os.Stat(filepath.Join(dir, "images")); err != nil {
		t.Skipf("real bootloader images not found at %s (they live next to the repository, see DESIGN.md §3): %v", dir, err)
	}
	return dir
}

// ourData is testdata/eeprom in the repository.
func ourData(t testing.TB) string {
	return filepath.Join(repoRoot(t), "testdata", "eeprom")
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// imageNames lists images/pieeprom-*.bin, oldest first.
func imageNames(t testing.TB, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "images", "pieeprom-*.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatalf("no images in %s/images", dir)
	}
	sort.Strings(names)
	return names
}

// imageDate is "2020-09-03" for .../pieeprom-2020-09-03.bin.
func imageDate(path string) string {
	return strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "pieeprom-"), ".bin")
}

func parseFile(t testing.TB, path string) (*Image, []byte) {
	t.Helper()
	data := readFile(t, path)
	im, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse(%s): %v", path, err)
	}
	return im, data
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
