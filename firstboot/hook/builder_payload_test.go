package hook_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/hook"
)

// The hook installs exactly what the builder packs: the payload.cpio that
// builder.Payload makes for each FAT mount point.
func TestRunInstallsBuilderPayload(t *testing.T) {
	t.Parallel()
	for _, bootDir := range []string{"/boot/firmware", "/boot"} {
		t.Run(bootDir, func(t *testing.T) {
			t.Parallel()
			bin := []byte("\x7fELF device binary stand-in")
			payload, err := builder.Payload(bin, bootDir, time.Unix(1700000000, 0))
			if err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			fat := filepath.Join(root, bootDir)
			if err := os.MkdirAll(filepath.Join(fat, "nixpi"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(fat, cardpath.Payload), payload, 0o644); err != nil {
				t.Fatal(err)
			}
			stock := "console=tty1 root=PARTUUID=9c1a2b3d-02 rootfstype=ext4 fsck.repair=yes rootwait resize\n"
			hooked, err := bootfiles.AddHook(stock, bootfiles.HookWords(bootDir))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(fat, cardpath.Cmdline), []byte(hooked), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := hook.Run(context.Background(), hook.Env{Root: root, BootDir: bootDir}); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(root, "usr/local/sbin/nixpi-firstboot"))
			if err != nil || string(got) != string(bin) {
				t.Errorf("binary: %q, %v", got, err)
			}
			if fi, err := os.Stat(filepath.Join(root, "usr/local/sbin/nixpi-firstboot")); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("binary mode: %v", err)
			}
			if _, err := os.Stat(filepath.Join(root, cardpath.UnitWantedBy)); err != nil {
				t.Errorf("unit not enabled: %v", err)
			}
			if cmd, _ := os.ReadFile(filepath.Join(fat, cardpath.Cmdline)); string(cmd) != stock {
				t.Errorf("cmdline.txt: %q", cmd)
			}
		})
	}
}
