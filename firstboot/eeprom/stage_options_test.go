package eeprom

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Releases picks the release directory; MinVersion refuses an older image
// with ErrTooOld and writes nothing; Wrote sees each file once in place.
func TestStageOptionsReleasesMinVersionWrote(t *testing.T) {
	t.Parallel()
	bl := bootloaderDir(t, []string{"2020-06-15", "2023-01-11"}, []string{"2026-08-04"})
	current := []byte("[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nPOWER_OFF_ON_HALT=0\n")

	target := t.TempDir()
	var wrote []string
	res, err := Stage(StageOptions{BootloaderDir: bl, Releases: []string{"latest"}, CurrentConfig: current, Want: bootOrderF41,
		TargetDir: target, Now: time.Unix(1790000000, 0), Wrote: func(name string) {
			wrote = append(wrote, name)
			if names := dirNames(t, target); len(names) != len(wrote) {
				t.Errorf("after %s the target holds %v", name, names)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(filepath.Dir(res.Image)) != "latest" || strings.Join(wrote, " ") != "pieeprom.upd pieeprom.sig recovery.bin" {
		t.Errorf("image %s, wrote %v", res.Image, wrote)
	}

	old := bootloaderDir(t, []string{"2020-06-15"}, nil)
	target = t.TempDir()
	_, err = Stage(StageOptions{BootloaderDir: old, CurrentConfig: current, Want: bootOrderF41, TargetDir: target,
		MinVersion: buildTS(t, "2020-09-03")})
	if !errors.Is(err, ErrTooOld) || !strings.Contains(err.Error(), "built 2020-06-15, before 2020-09-03") {
		t.Errorf("err = %v", err)
	}
	if names := dirNames(t, target); len(names) != 0 {
		t.Errorf("target holds %v after the refusal", names)
	}

	_, err = Stage(StageOptions{BootloaderDir: bl, Releases: []string{"beta"}, CurrentConfig: current, Want: bootOrderF41, TargetDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(bl, "beta")) {
		t.Errorf("missing release dir: err = %v", err)
	}
}
