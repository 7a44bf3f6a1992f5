package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckOutput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	existing := filepath.Join(dir, "out.img")
	for _, p := range []string{base, existing} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hardlink := filepath.Join(dir, "hard.img")
	if err := os.Link(base, hardlink); err != nil {
		t.Fatal(err)
	}
	symlink := filepath.Join(dir, "sym.img")
	if err := os.Symlink(base, symlink); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, out, base string
		force           bool
		wantErr         string
	}{
		{"new file", filepath.Join(dir, "new.img"), base, false, ""},
		{"exists", existing, base, false, "pass --force"},
		{"exists with force", existing, base, true, ""},
		{"same path", base, base, true, "is the base image"},
		{"same path spelled differently", filepath.Join(dir, ".", "base.img"), base, true, "is the base image"},
		{"hard link to base", hardlink, base, true, "is the base image"},
		{"symlink to base", symlink, base, true, "is the base image"},
		{"directory", dir, base, true, "is a directory"},
		{"missing directory", filepath.Join(dir, "nope", "out.img"), base, false, "create it first"},
		{"url base", existing, "https://example.org/base.img.xz", true, ""},
		{"empty", "", base, false, "--out"},
	} {
		err := checkOutput(Options{Out: tc.out, Base: tc.base, Force: tc.force})
		if tc.wantErr == "" && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: error = %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}

// TestCheckOutputNeverAnInput: neither OUT nor what is written beside it
// (OUT.sha256, OUT.bmap) may be the base, its checksum file or the config,
// however they are named: by path, through a link, or not existing yet.
func TestCheckOutputNeverAnInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	config := filepath.Join(dir, "nixpi.toml")
	for _, p := range []string{base, base + ".sha256", config} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	configLink := filepath.Join(dir, "link.toml")
	if err := os.Symlink(config, configLink); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(config, filepath.Join(dir, "alias.bmap")); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, out, base, config, want string
	}{
		{"OUT is the config", config, base, config, `output "` + config + `" is the install config`},
		{"OUT is a link to the config", configLink, base, config, "is the install config"},
		{"OUT is the config spelled differently", filepath.Join(sub, "..", "nixpi.toml"), base, config, "is the install config"},
		{"OUT is the base's checksum file", base + ".sha256", base, config, "is the base image's checksum file"},
		{"OUT.sha256 is the config", filepath.Join(dir, "nixpi"), base, filepath.Join(dir, "nixpi.sha256"), `output "` + filepath.Join(dir, "nixpi.sha256") + `", written beside --out`},
		{"OUT.sha256 is the base", filepath.Join(dir, "card"), filepath.Join(dir, "card.sha256"), config, "is the base image"},
		{"OUT.bmap is the config, not there yet", filepath.Join(dir, "new"), base, filepath.Join(dir, "new.bmap"), "is the install config"},
		{"OUT.bmap is a link to the config", filepath.Join(dir, "alias"), base, config, "is the install config"},
		{"none of them", filepath.Join(dir, "card.img"), base, config, ""},
	} {
		err := checkOutput(Options{Out: tc.out, Base: tc.base, Config: tc.config, Force: true})
		if tc.want == "" && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "choose another --out")) {
			t.Errorf("%s: error = %v, want %q and how to go on", tc.name, err, tc.want)
		}
	}
}

func TestPendingOutputCommit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "card.img")
	p, err := createPending(out, modeShared)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Discard()
	if _, err := p.file.WriteString("image bytes"); err != nil {
		t.Fatal(err)
	}
	sum, err := p.Commit("", false)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte("image bytes"))
	if sum != hex.EncodeToString(want[:]) {
		t.Errorf("sha256 = %s, want %x", sum, want)
	}
	side, err := os.ReadFile(out + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	if string(side) != sum+"  card.img\n" {
		t.Errorf("card.img.sha256 = %q", side)
	}
	p.Discard() // must not remove the committed file
	if b, err := os.ReadFile(out); err != nil || string(b) != "image bytes" {
		t.Errorf("OUT after commit: %q, %v", b, err)
	}
	assertOnly(t, dir, "card.img", "card.img.sha256")
}

// A card with a secret is 0600 from its creation; anything else, and the
// .sha256 beside it, follows the umask.
func TestPendingOutputModes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	if err := os.WriteFile(probe, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	umasked := fileMode(t, probe)
	for _, tc := range []struct {
		mode, want os.FileMode
	}{{modePrivate, 0o600}, {modeShared, umasked}} {
		out := filepath.Join(dir, fmt.Sprintf("card-%o.img", tc.mode))
		p, err := createPending(out, tc.mode)
		if err != nil {
			t.Fatal(err)
		}
		if got := fileMode(t, p.Path()); got != tc.want {
			t.Errorf("temporary file for mode %o: %o, want %o", tc.mode, got, tc.want)
		}
		if _, err := p.Commit("", false); err != nil {
			t.Fatal(err)
		}
		if got := fileMode(t, out); got != tc.want {
			t.Errorf("OUT for mode %o: %o, want %o", tc.mode, got, tc.want)
		}
		if got := fileMode(t, out+".sha256"); got != umasked {
			t.Errorf("OUT.sha256: %o, want the umask's %o", got, umasked)
		}
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestPendingOutputCommitDoesNotReplaceWithoutForce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "card.img")
	p, err := createPending(out, modeShared)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Discard()
	// Someone else writes OUT while the build runs.
	if err := os.WriteFile(out, []byte("theirs"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit("", false); err == nil || !strings.Contains(err.Error(), "pass --force") {
		t.Fatalf("Commit over a new OUT: %v", err)
	}
	p.Discard()
	if b, _ := os.ReadFile(out); string(b) != "theirs" {
		t.Errorf("OUT replaced: %q", b)
	}
	assertOnly(t, dir, "card.img")

	p, err = createPending(out, modeShared)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Discard()
	if _, err := p.Commit("", true); err != nil {
		t.Fatalf("Commit with force: %v", err)
	}
	assertOnly(t, dir, "card.img", "card.img.sha256")
}

func TestPendingOutputDiscard(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, err := createPending(filepath.Join(dir, "card.img"), modeShared)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.file.WriteString("half"); err != nil {
		t.Fatal(err)
	}
	p.Discard()
	assertOnly(t, dir)
}

// assertOnly fails unless dir holds exactly the named entries.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}
