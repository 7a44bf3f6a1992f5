package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nixpi/nixpi/assets"
	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
)

// buildTestConfig carries secrets so tests can check that no output shows them.
const (
	testPSK  = "SECRET-PSK-do-not-print"
	testHash = "$6$nixpitestsalt$Ox3xYwg3145wMsgZFHZgixeRVLgOmF0QLp0v9eluE20LSrGE5LcTX1aJ3wa5xuTwj9FE93qAQ5HzS4F420yot1"
)

var buildTestConfig = `schema = 1

[target]
disk = "auto"

[[users]]
name = "pi"
password_hash = "` + testHash + `"

[wlan]
ssid = "home"
psk = "` + testPSK + `"
country = "DE"
`

type nixpiRun struct {
	code           int
	stdout, stderr string
}

// runNixpiEnv runs nixpi in-process with env as the whole environment.
func runNixpiEnv(t *testing.T, env map[string]string, args ...string) nixpiRun {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
	return nixpiRun{code, stdout.String(), stderr.String()}
}

// deviceBinariesEnv writes the cross-compiled device binaries where
// NIXPI_DEVICE_BINARIES finds them, so tests need no `make build`.
func deviceBinariesEnv(t *testing.T) map[string]string {
	t.Helper()
	get := buildertest.DeviceBinaries(t)
	dir := t.TempDir()
	for _, arch := range []string{"arm64", "arm"} {
		b, err := get(arch)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, assets.DeviceBinaryName(arch)), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return map[string]string{"NIXPI_DEVICE_BINARIES": dir}
}

func writeTestFile(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeTestFixture(t *testing.T, dir string, opts fixture.Options) *fixture.Image {
	t.Helper()
	if opts.FATSize == 0 {
		opts.FATSize = fixture.MinFATSize
	}
	img, err := fixture.WriteContext(context.Background(), filepath.Join(dir, "base.img"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// assertNoOutput checks that a failed build left nothing in dir but the
// files that were there before it ran.
func assertNoOutput(t *testing.T, dir string, before []string) {
	t.Helper()
	if got := dirNames(t, dir); strings.Join(got, ",") != strings.Join(before, ",") {
		t.Errorf("%s holds %v after a failed build, want only %v", dir, got, before)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestBuildCLI(t *testing.T) {
	t.Parallel()
	env := deviceBinariesEnv(t)
	dir := t.TempDir()
	img := writeTestFixture(t, dir, fixture.Options{Layout: fixture.LayoutBookworm, Arch: fixture.ArchArmhf})
	cfg := writeTestFile(t, filepath.Join(dir, "nixpi.toml"), buildTestConfig)
	out := filepath.Join(dir, "card.img")

	r := runNixpiEnv(t, env, "build", "--base", img.Path, "--config", cfg, "--out", out)
	if r.code != exitOK {
		t.Fatalf("nixpi build: exit %d\n%s", r.code, r.stderr)
	}
	card := buildertest.CheckCard(t, img.Path, out)
	// The config carries a Wi-Fi key and a password hash: owner only.
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("card with secrets: %v, %v; want mode 0600", st.Mode(), err)
	}
	if !strings.Contains(r.stderr, "(mode 0600: it holds a Wi-Fi key or a password hash") {
		t.Errorf("build's last line does not say the card is private:\n%s", r.stderr)
	}
	side, err := os.ReadFile(out + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	sum := strings.Fields(string(side))[0]
	if r.stdout != sum+"  "+out+"\n" {
		t.Errorf("stdout %q, want the sha256 %s and the path", r.stdout, sum)
	}
	if card.Base.FATMount != "/boot/firmware" {
		t.Errorf("card mounts its FAT at %s", card.Base.FATMount)
	}
	for _, s := range []string{r.stdout, r.stderr} {
		if strings.Contains(s, testPSK) || strings.Contains(s, testHash) {
			t.Errorf("build output shows a secret:\n%s", s)
		}
	}

	// Nothing verified this base: said, with how to verify.
	if !strings.Contains(r.stderr, "warning: nothing verifies the base image "+img.Path) || !strings.Contains(r.stderr, "pass --sha256") ||
		!strings.Contains(r.stderr, "the unverified base's sha256 is "+buildertest.FileSHA256(t, img.Path)) {
		t.Errorf("build of an unverified base does not warn:\n%s", r.stderr)
	}

	// --quiet prints only the sha256; --force replaces; same bytes again.
	// A sidecar now verifies the base, so there is nothing to warn about.
	writeTestFile(t, img.Path+".sha256", buildertest.FileSHA256(t, img.Path)+"  base.img\n")
	r2 := runNixpiEnv(t, env, "build", "--quiet", "--force", "--base", img.Path, "--config", cfg, "--out", out)
	if r2.code != exitOK || r2.stderr != "" || r2.stdout != r.stdout {
		t.Errorf("rebuild with --quiet --force: exit %d, stdout %q (want %q), stderr %q", r2.code, r2.stdout, r.stdout, r2.stderr)
	}

	// SOURCE_DATE_EPOCH changes the card and is recorded.
	env2 := map[string]string{"SOURCE_DATE_EPOCH": "1700000000", "NIXPI_DEVICE_BINARIES": env["NIXPI_DEVICE_BINARIES"]}
	out2 := filepath.Join(dir, "card-epoch.img")
	r3 := runNixpiEnv(t, env2, "build", "-q", "--base", img.Path, "--config", cfg, "--out", out2)
	if r3.code != exitOK {
		t.Fatalf("build with SOURCE_DATE_EPOCH: exit %d\n%s", r3.code, r3.stderr)
	}
	if r3.stdout[:64] == sum {
		t.Error("SOURCE_DATE_EPOCH did not change the card")
	}
	c3 := buildertest.CheckCard(t, img.Path, out2)
	if c3.Manifest["source_date_epoch"] != float64(1700000000) {
		t.Errorf("manifest source_date_epoch %v, want 1700000000", c3.Manifest["source_date_epoch"])
	}
}

func TestBuildWithoutDeviceBinaries(t *testing.T) {
	t.Parallel()
	if _, err := assets.DeviceBinary("arm64"); err == nil {
		t.Skip("this test binary embeds device binaries (make build ran)")
	}
	dir := t.TempDir()
	img := writeTestFixture(t, dir, fixture.Options{})
	cfg := writeTestFile(t, filepath.Join(dir, "nixpi.toml"), buildTestConfig)
	before := dirNames(t, dir)
	r := runNixpiEnv(t, nil, "build", "--base", img.Path, "--config", cfg, "--out", filepath.Join(dir, "card.img"))
	if r.code != exitFailure || !strings.Contains(r.stderr, "run make build") {
		t.Errorf("exit %d, stderr %q; want 1 and advice to run make build", r.code, r.stderr)
	}
	assertNoOutput(t, dir, before)
}

// badBases are broken base images shared by the bad-input corpus.
type badBases struct {
	good, gpt, pi5Only, noSystemd, noFAT, notLinux, truncated, xzTruncated, gzCorrupt, nixpiCard, exFAT string
}

func writeBadBases(dir string, env map[string]string) (badBases, error) {
	b := badBases{}
	ctx := context.Background()
	mk := func(name string, opts fixture.Options) (string, *fixture.Image, error) {
		opts.FATSize = fixture.MinFATSize
		p := filepath.Join(dir, name)
		img, err := fixture.WriteContext(ctx, p, opts)
		return p, img, err
	}
	var img *fixture.Image
	var err error
	if b.good, img, err = mk("good.img", fixture.Options{}); err != nil {
		return b, err
	}
	if b.gpt, _, err = mk("gpt.img", fixture.Options{Table: fixture.TableGPT}); err != nil {
		return b, err
	}
	if b.pi5Only, _, err = mk("pi5.img", fixture.Options{OmitBootFiles: []string{"start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb"}}); err != nil {
		return b, err
	}
	if b.noSystemd, _, err = mk("nosystemd.img", fixture.Options{OmitRootFiles: []string{"/usr/lib/systemd/systemd", "/usr/sbin/init"}}); err != nil {
		return b, err
	}
	good, err := os.ReadFile(b.good)
	if err != nil {
		return b, err
	}
	variant := func(name string, edit func([]byte) []byte) (string, error) {
		p := filepath.Join(dir, name)
		return p, writeSparseFile(p, edit(bytes.Clone(good)))
	}
	// Partition 1's type byte says Linux: no FAT partition.
	if b.noFAT, err = variant("nofat.img", func(d []byte) []byte { d[446+4] = 0x83; return d }); err != nil {
		return b, err
	}
	// The ext4 superblock (at 1024 in partition 2) wiped: not a Linux root.
	if b.notLinux, err = variant("notlinux.img", func(d []byte) []byte {
		clear(d[img.RootPart.Start+1024 : img.RootPart.Start+2048])
		return d
	}); err != nil {
		return b, err
	}
	if b.exFAT, err = exFATVariant(dir, good, img); err != nil {
		return b, err
	}
	if b.truncated, err = variant("truncated.img", func(d []byte) []byte { return d[:img.RootPart.Start+img.RootPart.Size/2] }); err != nil {
		return b, err
	}
	if out, err := exec.Command("xz", "-T2", "-0", "-k", b.good).CombinedOutput(); err != nil {
		return b, fmt.Errorf("xz: %v\n%s", err, out)
	}
	xzData, err := os.ReadFile(b.good + ".xz")
	if err != nil {
		return b, err
	}
	b.xzTruncated = filepath.Join(dir, "truncated.img.xz")
	if err := os.WriteFile(b.xzTruncated, xzData[:len(xzData)/2], 0o644); err != nil {
		return b, err
	}
	if out, err := exec.Command("gzip", "-1", "-k", b.good).CombinedOutput(); err != nil {
		return b, fmt.Errorf("gzip: %v\n%s", err, out)
	}
	gzData, err := os.ReadFile(b.good + ".gz")
	if err != nil {
		return b, err
	}
	for i := len(gzData) / 3; i < len(gzData)/3+64; i++ {
		gzData[i] ^= 0x5a
	}
	b.gzCorrupt = filepath.Join(dir, "corrupt.img.gz")
	if err := os.WriteFile(b.gzCorrupt, gzData, 0o644); err != nil {
		return b, err
	}
	// A card nixpi already built, passed as the base.
	cfg := filepath.Join(dir, "nixpi.toml")
	if err := os.WriteFile(cfg, []byte(buildTestConfig), 0o644); err != nil {
		return b, err
	}
	b.nixpiCard = filepath.Join(dir, "card.img")
	var stderr bytes.Buffer
	if code := run(ctx, []string{"build", "-q", "--base", b.good, "--config", cfg, "--out", b.nixpiCard}, nil, &bytes.Buffer{}, &stderr, func(k string) string { return env[k] }); code != 0 {
		return b, fmt.Errorf("build the card used as a bad base: %s", stderr.String())
	}
	return b, nil
}

func TestBuildBadInput(t *testing.T) {
	t.Parallel()
	env := deviceBinariesEnv(t)
	bases, err := writeBadBases(t.TempDir(), env)
	if err != nil {
		t.Fatal(err)
	}
	buildertest.CheckCard(t, bases.good, bases.nixpiCard)
	wrongSum := strings.Repeat("ab", 32)

	type tc struct {
		name    string
		base    string
		config  string // file contents; "" for buildTestConfig
		extra   []string
		env     map[string]string
		code    int
		wantMsg []string
		notWant []string
		setup   func(t *testing.T, dir string) []string // extra args, e.g. pre-existing OUT
	}
	cases := []tc{
		{name: "missing base", base: "/nonexistent/base.img", code: 1, wantMsg: []string{"open base image", "no such file"}},
		{name: "unknown format", base: "TEXT", code: 1, wantMsg: []string{"not a disk image or known archive"}},
		{name: "truncated xz", base: bases.xzTruncated, code: 1, wantMsg: []string{"xz", "truncated", "download it again"}},
		{name: "corrupt gzip", base: bases.gzCorrupt, code: 1, wantMsg: []string{"gzip", "corrupt"}},
		{name: "sha256 mismatch", base: bases.good, extra: []string{"--sha256", wrongSum}, code: 1, wantMsg: []string{"checksum mismatch", wrongSum, "--sha256"}},
		{name: "sidecar mismatch", base: "SIDECAR", code: 1, wantMsg: []string{"checksum mismatch", wrongSum, ".sha256"}},
		{name: "bad --sha256", base: bases.good, extra: []string{"--sha256", "xyz"}, code: 1, wantMsg: []string{"must be 64 hex digits"}},
		{name: "GPT image", base: bases.gpt, code: 1, wantMsg: []string{"GPT partition table"}},
		{name: "no FAT partition", base: bases.noFAT, code: 1, wantMsg: []string{"partition 1 is not a FAT32 boot partition", "0x83"}},
		{name: "Pi 5 only", base: bases.pi5Only, code: 1, wantMsg: []string{"Pi 5", "start4.elf"}},
		{name: "no systemd", base: bases.noSystemd, code: 1, wantMsg: []string{"no systemd"}},
		{name: "not a Linux root", base: bases.notLinux, code: 1, wantMsg: []string{"partition 2 is not a Linux root filesystem"}},
		{name: "truncated image", base: bases.truncated, code: 1, wantMsg: []string{"truncated"}},
		{name: "already a nixpi card", base: bases.nixpiCard, code: 1, wantMsg: []string{"already has a nixpi/ directory"}},
		{name: "config unknown key", base: bases.good, config: buildTestConfig + "colour = \"blue\"\n", code: 1, wantMsg: []string{"nixpi.toml:", "colour"}},
		{name: "config bad size", base: bases.good, config: "schema = 1\n[layout]\nboot_size = \"500MB\"\n", code: 1, wantMsg: []string{"nixpi.toml:3", "500MB"}},
		{name: "config wrong type", base: bases.good, config: "schema = 1\n[target]\nwipe = \"yes\"\n", code: 1, wantMsg: []string{"nixpi.toml:3", "wipe"}},
		{name: "config missing", base: bases.good, config: "MISSING", code: 1, wantMsg: []string{"read config", "no such file"}},
		{name: "config is a FIFO", base: bases.good, config: "FIFO", code: 1, wantMsg: []string{"is a FIFO, not a regular file", "install config"}},
		{name: "config is a character device", base: bases.good, config: "DEVZERO", code: 1, wantMsg: []string{`"/dev/zero" is a character device`}},
		{name: "config too large", base: bases.good, config: "HUGE", code: 1, wantMsg: []string{"is too large", "at most 1 MiB"}},
		{name: "sidecar is a FIFO", base: "SIDECAR-FIFO", code: 1, wantMsg: []string{"base.img.sha256", "is a FIFO"}},
		{name: "exFAT boot partition", base: bases.exFAT, code: 1, wantMsg: []string{"partition 1 is exFAT", "FAT32 boot partitions only"}, notWant: []string{"FAT12/16"}},
		{name: "server unreachable", base: "http://127.0.0.1:1/raspios.img.xz", code: 1, wantMsg: []string{"cannot reach the server 127.0.0.1:1", "connection refused", "check the URL"}, notWant: []string{"checksum"}},
		{name: "upper-case scheme is a URL too", base: "HTTP://127.0.0.1:1/raspios.img.xz", code: 1, wantMsg: []string{"cannot reach the server 127.0.0.1:1"}, notWant: []string{"not supported"}},
		{name: "ftp URL", base: "ftp://example.org/raspios.img.xz", code: 1, wantMsg: []string{"ftp:// URLs are not supported", "http(s) URL"}},
		{name: "file URL", base: "file:///tmp/raspios.img", code: 1, wantMsg: []string{"file:// URLs are not supported"}},
		{name: "sidecar lists the base twice", base: "SIDECAR-TWICE", code: 1, wantMsg: []string{`"base.img" is listed twice with different checksums`, "--sha256"}},
		{name: "unknown timezone", base: bases.good, config: "schema = 1\n[system]\ntimezone = \"Europe/Atlantis\"\n", code: 1, wantMsg: []string{"nixpi.toml:3", "not in the IANA tz database"}},
		{name: "bad SOURCE_DATE_EPOCH", base: bases.good, env: map[string]string{"SOURCE_DATE_EPOCH": "yesterday"}, code: 1, wantMsg: []string{"SOURCE_DATE_EPOCH", "yesterday"}},
		{name: "OUT is SRC", base: "OUT", extra: []string{"--force"}, code: 1, wantMsg: []string{"is the base image"}},
		{name: "OUT is the config", base: bases.good, code: 1, wantMsg: []string{"nixpi.toml\" is the install config", "choose another --out"},
			setup: func(t *testing.T, dir string) []string {
				return []string{"--out", filepath.Join(dir, "nixpi.toml"), "--force"}
			}},
		{name: "OUT.sha256 is the config", base: bases.good, code: 1, wantMsg: []string{"card.img.sha256\", written beside --out", "is the install config"},
			setup: func(t *testing.T, dir string) []string {
				return []string{"--config", writeTestFile(t, filepath.Join(dir, "card.img.sha256"), buildTestConfig)}
			}},
		{name: "OUT exists", base: bases.good, code: 1, wantMsg: []string{"already exists", "--force"},
			setup: func(t *testing.T, dir string) []string {
				writeTestFile(t, filepath.Join(dir, "card.img"), "precious")
				return nil
			}},
		{name: "output directory missing", base: bases.good, extra: []string{"--out", "/nonexistent/dir/card.img"}, code: 1, wantMsg: []string{"create it first"}},
		{name: "missing --config", base: bases.good, config: "NONE", code: 2, wantMsg: []string{"--config is required"}},
		{name: "unknown flag", base: bases.good, extra: []string{"--colour"}, code: 2, wantMsg: []string{"unknown flag: --colour"}},
		{name: "stray argument", base: bases.good, extra: []string{"base.img"}, code: 2, wantMsg: []string{"unexpected argument"}},
	}
	if len(cases) < 15 {
		t.Fatalf("only %d bad-input kinds", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			out := filepath.Join(dir, "card.img")
			base := c.base
			switch base {
			case "TEXT":
				base = writeTestFile(t, filepath.Join(dir, "notes.img"), strings.Repeat("this is not a disk image\n", 100))
			case "SIDECAR":
				base = filepath.Join(dir, "base.img")
				copyFileSparse(t, bases.good, base)
				writeTestFile(t, base+".sha256", wrongSum+"  base.img\n")
			case "SIDECAR-TWICE":
				base = filepath.Join(dir, "base.img")
				copyFileSparse(t, bases.good, base)
				right := buildertest.FileSHA256(t, base)
				writeTestFile(t, base+".sha256", right+"  base.img\n"+wrongSum+"  other.img\n"+wrongSum+" *base.img\n")
			case "SIDECAR-FIFO":
				base = filepath.Join(dir, "base.img")
				copyFileSparse(t, bases.good, base)
				mkfifo(t, base+".sha256")
			case "OUT":
				copyFileSparse(t, bases.good, out)
				base = out
			}
			args := []string{"build", "--base", base, "--out", out}
			switch c.config {
			case "NONE":
			case "MISSING":
				args = append(args, "--config", filepath.Join(dir, "missing.toml"))
			case "FIFO":
				args = append(args, "--config", mkfifo(t, filepath.Join(dir, "nixpi.toml")))
			case "DEVZERO":
				args = append(args, "--config", "/dev/zero")
			case "HUGE":
				args = append(args, "--config", writeTestFile(t, filepath.Join(dir, "nixpi.toml"), buildTestConfig+strings.Repeat("# padding\n", 200_000)))
			case "":
				args = append(args, "--config", writeTestFile(t, filepath.Join(dir, "nixpi.toml"), buildTestConfig))
			default:
				args = append(args, "--config", writeTestFile(t, filepath.Join(dir, "nixpi.toml"), c.config))
			}
			if c.setup != nil {
				args = append(args, c.setup(t, dir)...)
			}
			args = append(args, c.extra...)
			e := map[string]string{}
			for k, v := range env {
				e[k] = v
			}
			for k, v := range c.env {
				e[k] = v
			}
			var outBefore string
			if _, err := os.Stat(out); err == nil {
				outBefore = buildertest.FileSHA256(t, out)
			}
			before := dirNames(t, dir)

			r := runNixpiEnv(t, e, args...)
			t.Logf("exit %d: %s", r.code, r.stderr)
			if r.code != c.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", r.code, c.code, r.stderr)
			}
			for _, want := range c.wantMsg {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			for _, no := range c.notWant {
				if strings.Contains(r.stderr, no) {
					t.Errorf("stderr says %q:\n%s", no, r.stderr)
				}
			}
			if r.stdout != "" {
				t.Errorf("a failed build printed to stdout: %q", r.stdout)
			}
			if strings.Contains(r.stderr, testPSK) || strings.Contains(r.stderr, testHash) {
				t.Errorf("error output shows a secret:\n%s", r.stderr)
			}
			assertNoOutput(t, dir, before)
			if outBefore != "" && buildertest.FileSHA256(t, out) != outBefore {
				t.Errorf("the pre-existing %s was changed", out)
			}
		})
	}
}

// umask is the process's umask, read without changing it.
func umask(t *testing.T) os.FileMode {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				t.Fatal(err)
			}
			return os.FileMode(m)
		}
	}
	t.Fatal("no Umask in /proc/self/status")
	return 0
}

// exFATVariant writes exfat.img: the image good with partition 1 (still
// type 0x0c) formatted exFAT by mkfs.exfat.
func exFATVariant(dir string, good []byte, img *fixture.Image) (string, error) {
	fs := filepath.Join(dir, "exfat.fs")
	if err := os.WriteFile(fs, nil, 0o644); err != nil {
		return "", err
	}
	defer os.Remove(fs)
	if err := os.Truncate(fs, img.BootPart.Size); err != nil {
		return "", err
	}
	if out, err := exec.Command("mkfs.exfat", fs).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkfs.exfat (apt-get install exfatprogs): %v\n%s", err, out)
	}
	exfat, err := os.ReadFile(fs)
	if err != nil {
		return "", err
	}
	d := bytes.Clone(good)
	copy(d[img.BootPart.Start:], exfat)
	p := filepath.Join(dir, "exfat.img")
	return p, writeSparseFile(p, d)
}

func mkfifo(t *testing.T, path string) string {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeSparseFile writes data leaving all-zero 64 KiB blocks as holes, so test
// images cost little disk.
func writeSparseFile(path string, data []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	const block = 64 << 10
	zero := make([]byte, block)
	for off := 0; off < len(data); off += block {
		chunk := data[off:min(off+block, len(data))]
		if bytes.Equal(chunk, zero[:len(chunk)]) {
			continue
		}
		if _, err := f.WriteAt(chunk, int64(off)); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func copyFileSparse(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeSparseFile(dst, data); err != nil {
		t.Fatal(err)
	}
}

// Ctrl-C (the context main cancels on SIGINT) stops the build and leaves
// neither OUT nor a temporary file.
func TestBuildInterrupted(t *testing.T) {
	t.Parallel()
	env := deviceBinariesEnv(t)
	dir := t.TempDir()
	img := writeTestFixture(t, dir, fixture.Options{})
	cfg := writeTestFile(t, filepath.Join(dir, "nixpi.toml"), buildTestConfig)
	before := dirNames(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"build", "--base", img.Path, "--config", cfg, "--out", filepath.Join(dir, "card.img")},
		strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
	if code != exitFailure || !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("exit %d, stderr %q; want 1 and \"interrupted\"", code, stderr.String())
	}
	assertNoOutput(t, dir, before)
}

// A base over plain http that nothing verifies builds, with a warning that
// says so even with --quiet, and how to verify it.
func TestBuildWarnsUnverifiedHTTPBase(t *testing.T) {
	t.Parallel()
	env := deviceBinariesEnv(t)
	dir := t.TempDir()
	img := writeTestFixture(t, dir, fixture.Options{})
	srv := httptest.NewServer(http.FileServer(http.Dir(dir))) // no base.img.sha256: 404
	defer srv.Close()
	cfg := writeTestFile(t, filepath.Join(t.TempDir(), "nixpi.toml"), buildTestConfig)
	r := runNixpiEnv(t, env, "build", "-q", "--base", srv.URL+"/base.img", "--config", cfg, "--out", filepath.Join(t.TempDir(), "card.img"))
	if r.code != exitOK {
		t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"warning: nothing verifies the base image " + srv.URL + "/base.img", "plain http", "pass --sha256", "use https",
		"sha256 is " + buildertest.FileSHA256(t, img.Path)} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

// A config nobody can log in with still builds, but says so.
func TestBuildWarnsAboutConfig(t *testing.T) {
	t.Parallel()
	env := deviceBinariesEnv(t)
	dir := t.TempDir()
	img := writeTestFixture(t, dir, fixture.Options{})
	cfg := writeTestFile(t, filepath.Join(dir, "nixpi.toml"), "schema = 1\n")
	r := runNixpiEnv(t, env, "build", "--base", img.Path, "--config", cfg, "--out", filepath.Join(dir, "card.img"))
	if r.code != exitOK {
		t.Fatalf("nixpi build: exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "warning: no [[users]]") {
		t.Errorf("build of a config without users did not warn:\n%s", r.stderr)
	}
	// No secret on it: the card follows the umask.
	for _, p := range []string{filepath.Join(dir, "card.img"), filepath.Join(dir, "card.img.sha256")} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o666&^umask(t) {
			t.Errorf("%s: %v, %v; want mode %o", p, st.Mode(), err, 0o666&^umask(t))
		}
	}
	if strings.Contains(r.stderr, "0600") {
		t.Errorf("a card without secrets is called private:\n%s", r.stderr)
	}
}

// build runs config check's checks (configcheck), so a card never carries
// what the Pi refuses after wiping the SSD: a module that does not parse,
// a NUL in a string, a release without a pin. Nothing is written.
func TestBuildRunsTheConfigCheck(t *testing.T) {
	t.Parallel()
	env := deviceBinariesEnv(t)
	base := writeTestFixture(t, t.TempDir(), fixture.Options{})
	for _, tt := range []struct{ name, body, want string }{
		{"module that does not parse", "schema = 1\n[nixos]\nextra_module = '''\n{ ... }: {\n  x = [ 1 ;\n}\n'''\n", ":6: nixos.extra_module does not parse as Nix (line 3, column 1 of the module)"},
		{"NUL in a string", "schema = 1\n[system]\nhostname = \"pi\\u0000\"\n", `:3: system.hostname = "pi\x00" holds a NUL (U+0000)`},
		{"release without a pin", "schema = 1\n[nixos]\nrelease = \"25.11\"\n", `:3: nixos.release = "25.11" has no nixpkgs pin in this nixpi`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cfg := writeTestFile(t, filepath.Join(dir, "nixpi.toml"), tt.body)
			before := dirNames(t, dir)
			r := runNixpiEnv(t, env, "build", "--base", base.Path, "--config", cfg, "--out", filepath.Join(dir, "card.img"))
			if r.code != exitFailure || !strings.Contains(r.stderr, "build: config: "+cfg+tt.want) {
				t.Errorf("exit %d, want 1 and %q:\n%s", r.code, cfg+tt.want, r.stderr)
			}
			assertNoOutput(t, dir, before)
			if c, _, stderr := runNixpi(t, "", "config", "check", cfg); c != exitFailure || !strings.Contains(stderr, cfg+tt.want) {
				t.Errorf("config check says otherwise: exit %d\n%s", c, stderr)
			}
		})
	}
}

// Without nix-instantiate, build says the module was only bracket-checked,
// as config check does; with it, it says nothing.
func TestBuildSaysHowTheModuleWasParsed(t *testing.T) {
	t.Parallel()
	env := deviceBinariesEnv(t)
	dir := t.TempDir()
	base := writeTestFixture(t, dir, fixture.Options{})
	cfg := writeTestFile(t, filepath.Join(dir, "nixpi.toml"), "schema = 1\n[nixos]\nextra_module = \"{ ... }: { }\"\n")
	r := runNixpiEnv(t, env, "build", "--base", base.Path, "--config", cfg, "--out", filepath.Join(dir, "card.img"), "--quiet")
	if r.code != exitOK || !strings.Contains(r.stderr, "warning: nixos.extra_module was checked by nixpi's own bracket check only, not parsed by Nix (no nix-instantiate on PATH)") {
		t.Errorf("without Nix: exit %d\n%s", r.code, r.stderr)
	}
	nix, err := exec.LookPath("nix-instantiate")
	if err != nil {
		if os.Getenv("NIXPI_REQUIRE_NIX") == "1" {
			t.Fatal("NIXPI_REQUIRE_NIX=1 but nix-instantiate is not on PATH")
		}
		t.Skip("nix-instantiate not on PATH")
	}
	env["PATH"] = filepath.Dir(nix)
	r = runNixpiEnv(t, env, "build", "--base", base.Path, "--config", cfg, "--out", filepath.Join(dir, "card2.img"), "--quiet")
	if r.code != exitOK || strings.Contains(r.stderr, "bracket check") {
		t.Errorf("with Nix: exit %d\n%s", r.code, r.stderr)
	}
}
