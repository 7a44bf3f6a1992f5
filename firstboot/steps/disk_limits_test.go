package steps_test

// The disks the Pi 4 cannot boot from, whatever the layout: refused by the
// target step before anything is written, chosen by the config or by
// --target alike. Unit tests with the recording runner; the loop-device
// tests with the real tools are in disk_limits_blackbox_test.go.

import (
	"context"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/steps"
)

func TestDiskTargetRefusesUnbootableDisks(t *testing.T) {
	t.Parallel()
	const (
		sectorWant = `it has 4096-byte logical sectors, and the Raspberry Pi 4's bootloader boots only from a USB disk with 512-byte ones (it stops with "MSD unsupported block size 4096")`
		sectorHint = "nothing was written to it: use another disk, or put this one in another USB enclosure"
		sizeWant   = `, 2 TiB or more, and the Pi's U-Boot reads a USB disk's size with READ CAPACITY(10) only`
		sizeHint   = "nothing was written to it: use a disk smaller than 2 TiB"
	)
	for _, tc := range []struct {
		name         string
		size, logSec int64
		sysfs        string // queue/logical_block_size of sda, when set
		table        string
		override     string
		want, hint   string
	}{
		{name: "4096-byte sectors, lsblk", logSec: 4096, want: sectorWant, hint: sectorHint},
		{name: "4096-byte sectors, sysfs over lsblk", sysfs: "4096\n", want: sectorWant, hint: sectorHint},
		{name: "4096-byte sectors, --target", logSec: 4096, override: "/dev/sda", want: sectorWant, hint: sectorHint},
		{name: "4096-byte sectors, by-id", logSec: 4096, override: diskSSDByID, want: sectorWant, hint: sectorHint},
		{name: "3 TiB", size: 3 << 40, want: `refusing disk "/dev/sda" (Samsung PSSD T7, serial S4EVNF0M123456, 3.0 TiB, ` + diskSSDByID + `): it has 6442450944 sectors` + sizeWant, hint: sizeHint},
		{name: "3 TiB, MBR", size: 3 << 40, table: config.TableMBR, want: sizeWant, hint: sizeHint},
		{name: "3 TiB, --target", size: 3 << 40, override: "/dev/sda", want: sizeWant, hint: sizeHint},
		// 2^32 sectors: READ CAPACITY(10) says 0xFFFFFFFF, U-Boot adds one
		// in a u32 and gets 0.
		{name: "exactly 2 TiB", size: 2 << 40, want: "it has 4294967296 sectors" + sizeWant, hint: sizeHint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
			u.reshape(t, tc.size, tc.logSec)
			if tc.sysfs != "" {
				u.put(t, "/sys/class/block/sda/queue/logical_block_size", tc.sysfs)
			}
			u.env.Config.Target = config.Target{Serial: "S4EVNF0M123456"}
			if tc.table != "" {
				u.env.Config.Layout.Table = tc.table
			}
			u.env.TargetOverride = tc.override
			err := steps.NewTarget().Run(context.Background(), u.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), `refusing disk "/dev/sda" (`) {
				t.Fatalf("error = %v\nwant it to contain %s", err, tc.want)
			}
			if hint := engine.HintOf(err); !strings.HasPrefix(hint, tc.hint) {
				t.Errorf("hint = %q, want it to start with %q", hint, tc.hint)
			}
			u.assertRefusedUntouched(t)
		})
	}
}

// One sector under 2 TiB is the largest disk U-Boot sizes right: chosen.
func TestDiskTargetTakesTheLargestBootableDisk(t *testing.T) {
	t.Parallel()
	u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	u.reshape(t, 2<<40-512, 0)
	u.env.Config.Target = config.Target{Serial: "S4EVNF0M123456"}
	u.blank("/dev/sda")
	if err := steps.NewTarget().Run(context.Background(), u.env); err != nil {
		t.Fatal(err)
	}
	if got := u.env.State.Target; got == nil || got.Size != 2<<40-512 {
		t.Errorf("State.Target = %+v, want the 2 TiB - 512 B disk", got)
	}
}
