package steps_test

// The disks the Pi 4 cannot boot from, on loop devices with the real tools:
// a disk with 4096-byte logical sectors and one of 3 TiB are refused by the
// target step (given by --target, as a loop device must be) before
// anything is written; and the PARTUUIDs the configuration names are the
// ones the kernel reads from the table the partition step writes.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/steps"
)

// diskSparseLoop is a sparse file of size attached to a loop device with
// the given losetup options; it returns the device and the file.
func diskSparseLoop(t *testing.T, size int64, opts ...string) (dev, img string) {
	t.Helper()
	t.Setenv("BLKID_FILE", filepath.Join(t.TempDir(), "blkid.tab"))
	img = filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Skipf("skipping: this filesystem cannot hold a sparse file of %d bytes: %v", size, err)
	}
	f.Close()
	return diskAttach(t, append(opts, img)...), img
}

// allocatedBytes is what the file really holds on its filesystem.
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestDiskStepsRefuseUnbootableLoopDisks(t *testing.T) {
	diskRequireLoop(t)
	for _, tc := range []struct {
		name  string
		size  int64
		opts  []string
		table string
		want  []string
		hint  string
	}{
		{
			name: "4096-byte logical sectors",
			size: 8 << 30,
			opts: []string{"--sector-size", "4096"},
			want: []string{`it has 4096-byte logical sectors, and the Raspberry Pi 4's bootloader boots only from a USB disk with 512-byte ones`},
			hint: "nothing was written to it: use another disk, or put this one in another USB enclosure",
		},
		{
			name: "3 TiB, GPT",
			size: 3 << 40,
			want: []string{"it has 6442450944 sectors, 2 TiB or more, and the Pi's U-Boot reads a USB disk's size with READ CAPACITY(10) only"},
			hint: "nothing was written to it: use a disk smaller than 2 TiB",
		},
		{
			name:  "3 TiB, MBR",
			size:  3 << 40,
			table: config.TableMBR,
			want:  []string{"it has 6442450944 sectors, 2 TiB or more", "an MBR cannot address more than 2 TiB"},
			hint:  "nothing was written to it: use a disk smaller than 2 TiB",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev, img := diskSparseLoop(t, tc.size, tc.opts...)
			root := diskRoot(t)
			cfg := diskTestConfig()
			cfg.Target.Wipe = true // the refusal does not depend on it
			if tc.table != "" {
				cfg.Layout.Table = tc.table
			}
			env, rec := diskTestEnv(t, root, cfg, dev, nil)
			_, err := diskRunSequence(context.Background(), env, nil, "", nil)
			if err == nil || !strings.HasPrefix(err.Error(), "target: refusing disk "+`"`+dev+`"`) {
				t.Fatalf("error = %v, want the target step to refuse %q", err, dev)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error = %v\nwant it to contain %q", err, want)
				}
			}
			if hint := engine.HintOf(err); !strings.HasPrefix(hint, tc.hint) {
				t.Errorf("hint = %q, want it to start with %q", hint, tc.hint)
			}
			if cmds := rec.destructive(); len(cmds) > 0 {
				t.Errorf("ran commands that change things: %q", cmds)
			}
			if n := allocatedBytes(t, img); n != 0 {
				t.Errorf("the refused disk's file holds %d bytes; nothing may be written to it", n)
			}
		})
	}
}

// The PARTUUIDs hardware-configuration.nix names (disk.PartUUIDs, from the
// journal's record alone) are what the kernel and blkid read from the
// table the partition step writes, GPT and MBR.
func TestDiskStepsPartUUIDsAreTheKernels(t *testing.T) {
	diskRequireLoop(t)
	for _, table := range []string{config.TableGPT, config.TableMBR} {
		t.Run(table, func(t *testing.T) {
			ctx := context.Background()
			dev, _ := diskLoop(t, diskTestSize)
			cfg := diskTestConfig()
			cfg.Layout.Table = table
			env, _ := diskTestEnv(t, diskRoot(t), cfg, dev, nil)
			for _, s := range []engine.Step{steps.NewTarget(), steps.NewPartition()} {
				if err := s.Run(ctx, env); err != nil {
					t.Fatalf("%s: %v", s.Name(), err)
				}
			}
			rec := env.State.Target
			want, err := disk.PartUUIDs(cfg.Layout, diskTestRAM, disk.Identity{ByID: rec.ByID, Serial: rec.Serial, Size: rec.Size, Seed: rec.IDSeed})
			if err != nil {
				t.Fatal(err)
			}
			for n, role := range []string{disk.RoleBoot, disk.RoleSwap, disk.RoleRoot} {
				node := disk.PartitionNode(dev, n+1)
				out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "PART_ENTRY_UUID", node).CombinedOutput()
				if err != nil {
					t.Fatalf("blkid %s: %v: %s", node, err, out)
				}
				if got := strings.TrimSpace(string(out)); got != want[role] || got == "" {
					t.Errorf("%s (%s): the kernel's PARTUUID is %q, the configuration names %q", node, role, got, want[role])
				}
			}
		})
	}
}
