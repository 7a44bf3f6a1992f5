package disk

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/config"
)

func TestLogicalBlockSize(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	put := func(kname, data string) {
		dir := filepath.Join(root, "sys/class/block", kname, "queue")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "logical_block_size"), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("sda", "4096\n")
	put("sdc", "garbage\n")
	for _, tc := range []struct {
		name string
		dev  Device
		want int64
		err  string
	}{
		// sysfs is the kernel's own word and wins over lsblk's.
		{"sysfs", Device{Name: "sda", KName: "sda", LogSec: 512}, 4096, ""},
		{"lsblk when sysfs has none", Device{Name: "sdb", LogSec: 4096}, 4096, ""},
		{"neither", Device{Name: "sdb"}, 0, `read the logical sector size of "/dev/sdb": neither /sys/class/block/sdb/queue/logical_block_size nor lsblk's LOG-SEC says it`},
		{"unreadable", Device{Name: "sdc", LogSec: 512}, 0, `holds "garbage"`},
	} {
		got, err := LogicalBlockSize(root, &tc.dev)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %d, %v; want %d, %q", tc.name, got, err, tc.want, tc.err)
		}
	}
}

// The PARTUUIDs known from the identity alone are those the plan lays out,
// for both tables and with and without swap.
func TestPartUUIDs(t *testing.T) {
	t.Parallel()
	id := Identity{ByID: "/dev/disk/by-id/usb-X", Serial: "S1", Size: 500 << 30, Seed: "0123"}
	for _, table := range []string{config.TableGPT, config.TableMBR} {
		for _, swap := range []config.SwapSize{{RAM: true}, {}} {
			l := config.Default().Layout
			l.Table, l.SwapSize = table, swap
			plan, err := NewPlan(l, 4<<30, id, 512)
			if err != nil {
				t.Fatal(err)
			}
			got, err := PartUUIDs(l, 4<<30, id)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(plan.Parts) {
				t.Errorf("%s, swap %v: %v for %d partitions", table, swap, got, len(plan.Parts))
			}
			for _, p := range plan.Parts {
				want := p.GUID
				if table == config.TableMBR {
					want = strings.TrimPrefix(plan.DiskID, "0x") + "-0" + string(rune('0'+p.Number))
				}
				if p.PartUUID != want || got[p.Role] != want {
					t.Errorf("%s, swap %v, %s: plan %q, PartUUIDs %q, want %q", table, swap, p.Role, p.PartUUID, got[p.Role], want)
				}
			}
		}
	}
}
