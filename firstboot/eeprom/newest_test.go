package eeprom

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"
)

// readerOutput is what testdata/eeprom/eeprom_reader.py prints.
type readerOutput struct {
	Sections []struct {
		Magic        string `json:"magic"`
		Offset       int    `json:"offset"`
		Length       int    `json:"length"`
		Name         string `json:"name"`
		ReservedZero *bool  `json:"reserved_zero"`
	} `json:"sections"`
	Bootconf         string   `json:"bootconf"`
	BootOrder        *string  `json:"boot_order"`
	ErasedAfterChain bool     `json:"erased_after_chain"`
	Differs          [][2]int `json:"differs"`
}

// Set BOOT_ORDER=0xf41 on the newest images (and the signed one) and check
// the result with this package and with the independent Python reader.
func TestSetBootOrderOnNewestImages(t *testing.T) {
	t.Parallel()
	dir := realData(t)
	names := imageNames(t, dir)
	paths := append(names[len(names)-5:], filepath.Join(dir, "signed", "pieeprom-signed.bin"))
	python, pyErr := exec.LookPath("python3")
	if pyErr != nil {
		t.Logf("python3 not found, checking with this package only: %v", pyErr)
	}
	golden := readFile(t, filepath.Join(ourData(t), "bootconf-2026-08-04-boot-order.txt"))
	want := Setting{"BOOT_ORDER", "0xf41"}
	for _, path := range paths {
		name := filepath.Base(path)
		im, _ := parseFile(t, path)
		if Has(im.Config(), want) {
			t.Fatalf("%s already carries %s, the test would prove nothing", name, want)
		}
		cfg, err := SetKeys(im.Config(), want)
		if err != nil {
			t.Fatal(err)
		}
		if name == "pieeprom-2026-08-04.bin" && !bytes.Equal(cfg, golden) {
			t.Errorf("%s: config with BOOT_ORDER =\n%s\nwant (golden)\n%s", name, cfg, golden)
		}
		if err := im.SetConfig(cfg); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out := im.Bytes()

		back, err := Parse(out)
		if err != nil {
			t.Fatalf("%s: result does not parse: %v", name, err)
		}
		if v, _ := Lookup(back.Config(), "BOOT_ORDER"); v != "0xf41" || !bytes.Equal(back.Config(), cfg) {
			t.Errorf("%s: read back BOOT_ORDER %q, config %q", name, v, back.Config())
		}
		if pyErr != nil {
			continue
		}

		outPath := filepath.Join(t.TempDir(), name)
		writeFile(t, outPath, out)
		cmd := exec.Command(python, filepath.Join(ourData(t), "eeprom_reader.py"), outPath, path)
		stdout, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: eeprom_reader.py: %v %s", name, err, stderrOf(err))
		}
		var r readerOutput
		if err := json.Unmarshal(stdout, &r); err != nil {
			t.Fatalf("%s: reader output: %v", name, err)
		}
		if r.BootOrder == nil || *r.BootOrder != "0xf41" || r.Bootconf != string(cfg) {
			t.Errorf("%s: the Python reader sees BOOT_ORDER %v and config %q", name, r.BootOrder, r.Bootconf)
		}
		if !r.ErasedAfterChain {
			t.Errorf("%s: the Python reader finds unerased bytes after the chain", name)
		}
		secs := back.Sections()
		if len(r.Sections) != len(secs) {
			t.Fatalf("%s: the Python reader sees %d sections, Go %d", name, len(r.Sections), len(secs))
		}
		var conf Section
		for i, s := range r.Sections {
			g := secs[i]
			if s.Offset != g.Offset || s.Length != g.Length || s.Name != g.Name {
				t.Errorf("%s: section %d: Python %+v, Go %+v", name, i, s, g)
			}
			if s.ReservedZero != nil && !*s.ReservedZero {
				t.Errorf("%s: file %s has nonzero reserved bytes", name, s.Name)
			}
			if g.Name == BootconfTxt {
				conf = g
			}
		}
		// Only bootconf.txt's own bytes (header length and data) and the
		// erased space after it may differ from the original image.
		for _, d := range r.Differs {
			if d[0] < conf.Offset+4 || d[1] > ImageSize-eraseSector {
				t.Errorf("%s: bytes [%d, %d) changed outside bootconf.txt at %d", name, d[0], d[1], conf.Offset)
			}
		}
		if len(r.Differs) == 0 {
			t.Errorf("%s: the Python reader sees no change", name)
		}
	}
}

// The Python reader agrees with this package on every unmodified image.
func TestPythonReaderAgreesOnAllImages(t *testing.T) {
	t.Parallel()
	dir := realData(t)
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skipf("python3 not found: %v", err)
	}
	paths := imageNames(t, dir)
	stdout, err := exec.Command(python, append([]string{filepath.Join(ourData(t), "eeprom_reader.py"), "--many"}, paths...)...).Output()
	if err != nil {
		t.Fatalf("eeprom_reader.py: %v %s", err, stderrOf(err))
	}
	var all []readerOutput
	if err := json.Unmarshal(stdout, &all); err != nil {
		t.Fatal(err)
	}
	if len(all) != len(paths) {
		t.Fatalf("the Python reader returned %d results for %d images", len(all), len(paths))
	}
	for i, path := range paths {
		im, _ := parseFile(t, path)
		r := all[i]
		if r.Bootconf != string(im.Config()) || len(r.Sections) != len(im.Sections()) {
			t.Errorf("%s: Python reader: %d sections, config %q; Go: %d sections, config %q",
				filepath.Base(path), len(r.Sections), r.Bootconf, len(im.Sections()), im.Config())
		}
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
