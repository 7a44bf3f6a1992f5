package hook

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/cavaliergopher/cpio"

	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/cardpath"
)

const (
	bootDir      = "/boot/firmware"
	stockCmdline = "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n"
	binary       = "\x7fELF pretend nixpi-firstboot binary"
	unit         = "[Unit]\nDescription=nixpi install\n[Service]\nExecStart=/usr/local/sbin/nixpi-firstboot run --config /boot/firmware/nixpi/nixpi.toml --boot-dir /boot/firmware\n[Install]\nWantedBy=multi-user.target\n"
)

// ent is one archive entry: data is a file's content or a symlink's target.
type ent struct {
	name  string
	mode  cpio.FileMode
	data  string
	links int
}

func dir(name string) ent { return ent{name: name, mode: cpio.TypeDir | 0o755} }
func file(name, data string, perm cpio.FileMode) ent {
	return ent{name: name, mode: cpio.TypeReg | perm, data: data}
}
func link(name, target string) ent {
	return ent{name: name, mode: cpio.TypeSymlink | 0o777, data: target}
}

// payload is what the builder puts in payload.cpio.
func payload() []ent {
	return []ent{
		dir("etc"), dir("etc/systemd"), dir("etc/systemd/system"),
		file("etc/systemd/system/nixpi-firstboot.service", unit, 0o644),
		dir("etc/systemd/system/multi-user.target.wants"),
		link("etc/systemd/system/multi-user.target.wants/nixpi-firstboot.service", "../nixpi-firstboot.service"),
		dir("usr"), dir("usr/local"), dir("usr/local/sbin"),
		file("usr/local/sbin/nixpi-firstboot", binary, 0o755),
	}
}

// archive writes a newc archive with cavaliergopher/cpio, as the builder does.
func archive(t *testing.T, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	for _, e := range ents {
		hdr := &cpio.Header{Name: e.name, Mode: e.mode, Links: e.links}
		if e.mode&cpio.ModeType == cpio.TypeReg || e.mode&cpio.ModeType == cpio.TypeSymlink {
			hdr.Size = int64(len(e.data))
		}
		if err := w.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			if _, err := w.Write([]byte(e.data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// card makes a root filesystem with the card's FAT files under bootDir: the
// payload and a cmdline.txt carrying the hook.
func card(t *testing.T, root string, payloadCPIO []byte) {
	t.Helper()
	fat := filepath.Join(root, bootDir)
	if err := os.MkdirAll(filepath.Join(fat, "nixpi"), 0o755); err != nil {
		t.Fatal(err)
	}
	if payloadCPIO != nil {
		write(t, filepath.Join(fat, cardpath.Payload), string(payloadCPIO), 0o644)
	}
	hooked, err := bootfiles.AddHook(stockCmdline, bootfiles.HookWords(bootDir))
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(fat, cardpath.Cmdline), hooked, 0o755)
}

func write(t *testing.T, path, data string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), perm); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, root string) ([]string, error) {
	t.Helper()
	var log []string
	err := Run(context.Background(), Env{Root: root, BootDir: bootDir, Logf: func(f string, a ...any) {
		log = append(log, fmt.Sprintf(f, a...))
	}})
	return log, err
}

func cmdline(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, bootDir, cardpath.Cmdline))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkInstalled asserts the payload is in place with its modes, and the
// hook words are gone from cmdline.txt with nothing else changed.
func checkInstalled(t *testing.T, root string) {
	t.Helper()
	for _, want := range []struct {
		path string
		mode fs.FileMode
		data string
	}{
		{"usr/local/sbin/nixpi-firstboot", 0o755, binary},
		{"etc/systemd/system/nixpi-firstboot.service", 0o644, unit},
		{"etc/systemd/system/multi-user.target.wants", fs.ModeDir | 0o755, ""},
		{"usr/local/sbin", fs.ModeDir | 0o755, ""},
	} {
		p := filepath.Join(root, want.path)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", want.path, err)
			continue
		}
		if fi.Mode() != want.mode {
			t.Errorf("%s: mode %v, want %v", want.path, fi.Mode(), want.mode)
		}
		if want.data != "" {
			if got, _ := os.ReadFile(p); string(got) != want.data {
				t.Errorf("%s: content %q", want.path, got)
			}
		}
	}
	wants := filepath.Join(root, cardpath.UnitWantedBy)
	if target, err := os.Readlink(wants); err != nil || target != "../nixpi-firstboot.service" {
		t.Errorf("wants symlink: %q, %v", target, err)
	}
	if got, err := os.ReadFile(wants); err != nil || string(got) != unit {
		t.Errorf("wants symlink does not lead to the unit: %v", err)
	}
	if got := cmdline(t, root); got != stockCmdline {
		t.Errorf("cmdline.txt after the hook:\n got %q\nwant %q", got, stockCmdline)
	}
	// No temp files left behind.
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if strings.HasSuffix(p, ".nixpi-new") {
			t.Errorf("temp file left: %s", p)
		}
		return nil
	})
}

func TestRunInstallsPayload(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	card(t, root, archive(t, payload()...))
	log, err := run(t, root)
	if err != nil {
		t.Fatal(err)
	}
	checkInstalled(t, root)
	joined := strings.Join(log, "\n")
	for _, want := range []string{"installed /usr/local/sbin/nixpi-firstboot (-rwxr-xr-x", "linked /etc/systemd/system/multi-user.target.wants/nixpi-firstboot.service -> ../nixpi-firstboot.service", "nixpi-firstboot.service is enabled", "removed the first-boot hook from"} {
		if !strings.Contains(joined, want) {
			t.Errorf("log lacks %q:\n%s", want, joined)
		}
	}
}

func TestRunTwiceIsHarmless(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	card(t, root, archive(t, payload()...))
	if _, err := run(t, root); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, root)
	log, err := run(t, root)
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	checkInstalled(t, root)
	if after := snapshot(t, root); after != before {
		t.Errorf("second run changed the tree:\n%s\n---\n%s", before, after)
	}
	joined := strings.Join(log, "\n")
	if !strings.Contains(joined, "/usr/local/sbin/nixpi-firstboot already in place") || !strings.Contains(joined, "has no first-boot hook words (already removed)") {
		t.Errorf("second run's log:\n%s", joined)
	}
}

// A power cut in the middle of the first run left a half-written temp file,
// an old binary with the wrong mode and a wrong symlink: the rerun repairs
// all of it.
func TestRunAfterInterruptedRun(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	card(t, root, archive(t, payload()...))
	sbin := filepath.Join(root, "usr/local/sbin")
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants")
	for _, d := range []string{sbin, wants} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(sbin, ".nixpi-firstboot.nixpi-new"), "half", 0o600)
	write(t, filepath.Join(sbin, "nixpi-firstboot"), "old binary", 0o600)
	if err := os.Symlink("/nonexistent", filepath.Join(wants, cardpath.UnitName)); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, root); err != nil {
		t.Fatal(err)
	}
	checkInstalled(t, root)
}

func TestRunWithoutHookInCmdline(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	card(t, root, archive(t, payload()...))
	custom := "root=/dev/sda2  rootwait\tquiet\r\n"
	write(t, filepath.Join(root, bootDir, cardpath.Cmdline), custom, 0o644)
	if _, err := run(t, root); err != nil {
		t.Fatal(err)
	}
	if got := cmdline(t, root); got != custom {
		t.Errorf("cmdline.txt without the hook was changed: %q", got)
	}
}

func TestRunKeepsSystemDirectories(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	// /etc is 0700 on this system, /usr/local a relative symlink (inside
	// the root): both stay as they are.
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "etc"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/share/local"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("share/local", filepath.Join(root, "usr/local")); err != nil {
		t.Fatal(err)
	}
	card(t, root, archive(t, payload()...))
	if _, err := run(t, root); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(root, "etc")); fi.Mode().Perm() != 0o700 {
		t.Errorf("/etc mode changed to %v", fi.Mode())
	}
	if fi, err := os.Lstat(filepath.Join(root, "usr/local")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("/usr/local is no longer a symlink: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "usr/share/local/sbin/nixpi-firstboot")); err != nil {
		t.Errorf("binary not installed through the symlink: %v", err)
	}
}

// Parent directories the archive does not list are created 0755 even under
// a restrictive umask, and files get exactly the archive's mode.
func TestExtractModesIgnoreUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	root := t.TempDir()
	a := filepath.Join(t.TempDir(), "p.cpio")
	write(t, a, string(archive(t, file("opt/nixpi/tool", "x", 0o751), ent{name: "opt/nixpi/data", mode: cpio.TypeDir | 0o710})), 0o644)
	if err := ExtractFile(context.Background(), a, root, nil); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{"opt": fs.ModeDir | 0o755, "opt/nixpi": fs.ModeDir | 0o755, "opt/nixpi/tool": 0o751, "opt/nixpi/data": fs.ModeDir | 0o710} {
		if fi, err := os.Lstat(filepath.Join(root, p)); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want %v", p, fi.Mode(), err, want)
		}
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	good := payload()
	with := func(extra ...ent) []ent { return append(append([]ent{}, good...), extra...) }
	tests := []struct {
		name  string
		cpio  func(t *testing.T) []byte
		want  string
		setup func(t *testing.T, root string)
	}{
		{name: "absolute name", cpio: func(t *testing.T) []byte { return archive(t, with(file("/etc/passwd", "x", 0o644))...) }, want: `entry "/etc/passwd" has an absolute name`},
		{name: "dot-dot", cpio: func(t *testing.T) []byte { return archive(t, with(file("../outside", "x", 0o644))...) }, want: `entry "../outside" contains ".."`},
		{name: "dot-dot inside", cpio: func(t *testing.T) []byte { return archive(t, with(file("etc/../../outside", "x", 0o644))...) }, want: `contains ".."`},
		{name: "harmless-looking dot-dot", cpio: func(t *testing.T) []byte { return archive(t, with(file("etc/x/../y", "x", 0o644))...) }, want: `contains ".."`},
		{name: "char device", cpio: func(t *testing.T) []byte {
			return archive(t, with(ent{name: "dev/sda", mode: cpio.TypeChar | 0o600})...)
		}, want: `entry "dev/sda" is a character device`},
		{name: "block device", cpio: func(t *testing.T) []byte {
			return archive(t, with(ent{name: "dev/mmcblk0", mode: cpio.TypeBlock | 0o600})...)
		}, want: "is a block device"},
		{name: "fifo", cpio: func(t *testing.T) []byte {
			return archive(t, with(ent{name: "run/fifo", mode: cpio.TypeFifo | 0o600})...)
		}, want: "is a FIFO"},
		{name: "socket", cpio: func(t *testing.T) []byte {
			return archive(t, with(ent{name: "run/sock", mode: cpio.TypeSocket | 0o600})...)
		}, want: "is a socket"},
		{name: "hard link", cpio: func(t *testing.T) []byte {
			return archive(t, with(ent{name: "usr/local/sbin/other", mode: cpio.TypeReg | 0o755, data: "x", links: 2})...)
		}, want: "is a hard link"},
		{name: "setuid", cpio: func(t *testing.T) []byte {
			return archive(t, with(file("usr/local/sbin/su", "x", cpio.ModeSetuid|0o755))...)
		}, want: "set-user-ID"},
		{name: "symlink escaping", cpio: func(t *testing.T) []byte { return archive(t, with(link("etc/evil", "../../etc/shadow"))...) }, want: `symlink target "../../etc/shadow" leads out of the root`},
		{name: "symlink to parent of root", cpio: func(t *testing.T) []byte { return archive(t, with(link("up", ".."))...) }, want: "leads out of the root"},
		{name: "write through archive symlink", cpio: func(t *testing.T) []byte {
			return archive(t, with(link("etc/sub", "systemd"), file("etc/sub/x", "x", 0o644))...)
		}, want: `entry "etc/sub/x" is under "etc/sub", a symlink in the same archive`},
		{name: "duplicate", cpio: func(t *testing.T) []byte {
			return archive(t, with(file("usr/local/sbin/nixpi-firstboot", "evil", 0o755))...)
		}, want: "appears twice"},
		{name: "empty archive", cpio: func(t *testing.T) []byte { return archive(t) }, want: "the archive is empty"},
		{name: "truncated in a header", cpio: func(t *testing.T) []byte { a := archive(t, good...); return a[:len(a)/2] }, want: "not a readable newc cpio archive: unexpected EOF"},
		// The trailer is 124 bytes and the 35-byte binary is padded to 36: 134
		// bytes off leaves 26 of its bytes.
		{name: "truncated in a file", cpio: func(t *testing.T) []byte { a := archive(t, good...); return a[:len(a)-134] }, want: `entry "usr/local/sbin/nixpi-firstboot" is cut short (26 of 35 bytes)`},
		{name: "not cpio", cpio: func(t *testing.T) []byte {
			return []byte("this is not an archive at all, not even close......................................................................................................")
		}, want: "not a readable newc cpio archive"},
		{name: "missing payload", cpio: func(t *testing.T) []byte { return nil }, want: "payload: open"},
		{name: "unit not enabled", cpio: func(t *testing.T) []byte { return archive(t, good[:5]...) }, want: "nixpi-firstboot.service is not enabled"},
		{name: "wants link to nowhere", cpio: func(t *testing.T) []byte {
			return archive(t, append(append([]ent{}, good[:5]...), link("etc/systemd/system/multi-user.target.wants/nixpi-firstboot.service", "../missing.service"))...)
		}, want: `points at "../missing.service"`},
		{name: "directory where the binary goes", cpio: func(t *testing.T) []byte { return archive(t, good...) }, want: "exists and is a directory", setup: func(t *testing.T, root string) {
			if err := os.MkdirAll(filepath.Join(root, "usr/local/sbin/nixpi-firstboot"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "system symlink leading out of the root", cpio: func(t *testing.T) []byte { return archive(t, good...) }, want: "path escapes from parent", setup: func(t *testing.T, root string) {
			// A symlink already on the disk must not lead writes outside.
			if err := os.MkdirAll(filepath.Join(root, "usr"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("../../outside", filepath.Join(root, "usr/local")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "absolute system symlink", cpio: func(t *testing.T) []byte { return archive(t, good...) }, want: "usr/local", setup: func(t *testing.T, root string) {
			if err := os.MkdirAll(filepath.Join(root, "usr"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(filepath.Dir(root), "outside"), filepath.Join(root, "usr/local")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base := t.TempDir()
			root := filepath.Join(base, "root")
			outside := filepath.Join(base, "outside")
			for _, d := range []string{root, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			card(t, root, tt.cpio(t))
			if tt.setup != nil {
				tt.setup(t, root)
			}
			before := snapshot(t, root)
			_, err := run(t, root)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run error = %v, want it to contain %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(outside); len(entries) > 0 {
				t.Errorf("wrote outside the root: %v", entries)
			}
			if !bootfiles.HasHook(cmdline(t, root), bootfiles.HookWords(bootDir)) {
				t.Error("the hook was removed from cmdline.txt although the install failed")
			}
			// Archives refused up front leave the root as it was.
			if strings.Contains(tt.want, "entry") || strings.Contains(tt.want, "archive") || strings.Contains(tt.want, "leads out") {
				if after := snapshot(t, root); after != before {
					t.Errorf("a refused archive changed the root:\n%s\n---\n%s", before, after)
				}
			}
		})
	}
}

func TestRunNeedsAbsoluteBootDir(t *testing.T) {
	t.Parallel()
	err := Run(context.Background(), Env{Root: t.TempDir(), BootDir: "boot"})
	if err == nil || !strings.Contains(err.Error(), "the boot dir absolute") {
		t.Fatalf("Run = %v", err)
	}
}

func TestRunHonoursCancel(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	card(t, root, archive(t, payload()...))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Run(ctx, Env{Root: root, BootDir: bootDir}); err == nil {
		t.Fatal("Run with a cancelled context succeeded")
	}
	if !bootfiles.HasHook(cmdline(t, root), bootfiles.HookWords(bootDir)) {
		t.Error("hook removed after cancel")
	}
}

// snapshot lists every path under root with its type, mode, inode, size and
// link target: equal snapshots mean nothing was added, removed or rewritten.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v ino=%d size=%d mtime=%d", strings.TrimPrefix(p, root), fi.Mode(), st.Ino, fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			line += " -> " + target
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
