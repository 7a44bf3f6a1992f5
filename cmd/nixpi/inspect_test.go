package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
)

func TestInspectCard(t *testing.T) {
	t.Parallel()
	env := deviceBinariesEnv(t)
	dir := t.TempDir()
	img := writeTestFixture(t, dir, fixture.Options{Layout: fixture.LayoutBullseye, Arch: fixture.ArchArm64})
	cfg := writeTestFile(t, filepath.Join(dir, "nixpi.toml"), buildTestConfig)
	card := filepath.Join(dir, "card.img")
	if r := runNixpiEnv(t, env, "build", "-q", "--base", img.Path, "--config", cfg, "--out", card); r.code != exitOK {
		t.Fatalf("build: %s", r.stderr)
	}
	buildertest.CheckCard(t, img.Path, card)

	// The stock base: no hook, no nixpi files.
	r := runNixpiEnv(t, nil, "inspect", img.Path)
	if r.code != exitOK {
		t.Fatalf("inspect base: exit %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"partitions: mbr", `label "boot"`, "first-boot hook: absent", "cmdline.txt: " + img.Cmdline + "\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inspect base lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "manifest:") || strings.Contains(r.stdout, "nixpi config") {
		t.Errorf("inspect of a stock image shows nixpi content:\n%s", r.stdout)
	}

	// The card: hook, manifest and the config with secrets redacted.
	r = runNixpiEnv(t, nil, "inspect", card)
	if r.code != exitOK {
		t.Fatalf("inspect card: exit %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{
		"first-boot hook: present",
		"systemd.run=/boot/nixpi/nixpi-firstboot",
		"nixpi files: nixpi/manifest.json nixpi/nixpi-firstboot nixpi/nixpi.toml nixpi/payload.cpio",
		"manifest: nixpi 0.1.0",
		"nixpi config (secrets redacted):",
		`psk = "(redacted)"`,
		`password_hash = "(redacted)"`,
		`ssid = "home"`,
		"config.txt arm_64bit for a Pi 4: 1",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inspect card lacks %q:\n%s", want, r.stdout)
		}
	}
	assertNoSecret(t, r.stdout+r.stderr)
	if r.stderr != "" {
		t.Errorf("inspect of a 0600 card warns: %s", r.stderr)
	}
	// The same card readable by others: a warning that says how to fix it.
	if err := os.Chmod(card, 0o644); err != nil {
		t.Fatal(err)
	}
	r = runNixpiEnv(t, nil, "inspect", card)
	if r.code != exitOK || !strings.Contains(r.stderr, "warning: "+card+" holds a Wi-Fi key or a password hash and is readable by others (mode 0644): chmod 600") {
		t.Errorf("inspect of a 0644 card with secrets: exit %d, stderr %q", r.code, r.stderr)
	}

	// --json says the same, as data.
	r = runNixpiEnv(t, nil, "inspect", "--json", card)
	if r.code != exitOK {
		t.Fatalf("inspect --json: exit %d\n%s", r.code, r.stderr)
	}
	assertNoSecret(t, r.stdout)
	var in builder.Inspection
	if err := json.Unmarshal([]byte(r.stdout), &in); err != nil {
		t.Fatalf("inspect --json output: %v\n%s", err, r.stdout)
	}
	if in.FAT == nil || !in.FAT.HookPresent || in.FAT.Manifest == nil || in.FAT.Manifest.Base.BootDir != "/boot" ||
		len(in.Partitions) != 2 || in.Partitions[0].Start != img.BootPart.Start || in.FAT.Journal != nil {
		t.Errorf("inspect --json: %+v", in)
	}
	if in.FAT.Free <= 0 || in.FAT.Free >= in.FAT.Size {
		t.Errorf("free %d of %d bytes", in.FAT.Free, in.FAT.Size)
	}
}

func TestInspectJournal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	img := writeTestFixture(t, dir, fixture.Options{})
	// What the Pi leaves on the card: journal lines over two boots, the last
	// torn by a power cut. mtools writes it, as a card reader would.
	journal := `{"v":1,"step":"preflight","event":"done","time":"2026-11-25T01:00:00Z","boot":1}
{"v":1,"step":"arm64","event":"reboot","time":"2026-11-25T01:00:05Z","boot":1,"msg":"arm_64bit=1 set"}
{"v":1,"step":"arm64","event":"done","time":"2026-11-25T01:01:00Z","boot":2}
{"v":1,"step":"target","event":"fail","time":"2026-11-25T01:01:02Z","boot":2,"msg":"no USB disk found","hint":"plug in the SSD"}
{"v":1,"step":"tar`
	local := writeTestFile(t, filepath.Join(dir, "journal.jsonl"), journal)
	at := img.Path + "@@" + strconv.FormatInt(img.BootPart.Start, 10)
	for _, argv := range [][]string{{"mmd", "-i", at, "::/nixpi"}, {"mcopy", "-i", at, local, "::/nixpi/journal.jsonl"}} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	r := runNixpiEnv(t, nil, "inspect", img.Path)
	if r.code != exitOK {
		t.Fatalf("inspect: exit %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{
		"install journal: 4 entries over 2 boot(s), 1 unreadable line(s)",
		"preflight    done",
		"arm64        done",
		"target       fail  no USB disk found (hint: plug in the SSD)",
		"last: 2026-11-25 01:01:02Z boot 2  target",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inspect lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestInspectErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notImage := writeTestFile(t, filepath.Join(dir, "base.img.xz"), "\xfd7zXZ\x00 pretend xz")
	empty := writeTestFile(t, filepath.Join(dir, "empty.img"), "")
	gptDir := t.TempDir()
	gpt := writeTestFixture(t, gptDir, fixture.Options{Table: fixture.TableGPT})
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
		out  string
	}{
		{"no image", []string{"inspect"}, exitUsage, "want exactly one IMAGE", ""},
		{"two images", []string{"inspect", "a", "b"}, exitUsage, "want exactly one IMAGE", ""},
		{"unknown flag", []string{"inspect", "--yaml", "x"}, exitUsage, "unknown flag: --yaml", ""},
		{"missing", []string{"inspect", filepath.Join(dir, "nope.img")}, exitFailure, "no such file", ""},
		{"directory", []string{"inspect", dir}, exitFailure, "is a directory", ""},
		{"compressed", []string{"inspect", notImage}, exitFailure, "decompress it first", ""},
		{"GPT", []string{"inspect", gpt.Path}, exitFailure, "is not a usable card: GPT partition table", "problem: GPT partition table"},
		{"empty", []string{"inspect", empty}, exitFailure, "is empty: not a card image", ""},
		{"character device", []string{"inspect", "/dev/null"}, exitFailure, `"/dev/null" is a character device`, ""},
	} {
		r := runNixpiEnv(t, nil, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stdout, tc.out) {
			t.Errorf("%s: exit %d (want %d)\nstdout %s\nstderr %s\nwant %q / %q", tc.name, r.code, tc.code, r.stdout, r.stderr, tc.want, tc.out)
		}
	}
}

func assertNoSecret(t *testing.T, s string) {
	t.Helper()
	if strings.Contains(s, testPSK) || strings.Contains(s, testHash) || strings.Contains(s, "nixpitestsalt") {
		t.Errorf("output shows a secret:\n%s", s)
	}
}
