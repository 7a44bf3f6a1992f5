package disk

import (
	"reflect"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/config"
)

func TestParseLsblkBothSpellings(t *testing.T) {
	t.Parallel()
	// util-linux 2.38 (numbers, booleans, "mountpoints") and older releases
	// (strings, "0"/"1", "mountpoint") describe the same disk.
	newer := `{"blockdevices":[{"name":"sda","path":"/dev/sda","maj:min":"8:0","type":"disk","size":1000204886016,"log-sec":4096,
		"tran":"usb","serial":"ABC","rm":false,"ro":true,"mountpoints":[null],
		"children":[{"name":"sda1","path":"/dev/sda1","maj:min":"8:1","type":"part","size":1000,"mountpoints":["/media/x","[SWAP]"]}]}]}`
	older := `{"blockdevices":[{"name":"sda","path":"/dev/sda","maj:min":"8:0","type":"disk","size":"1000204886016","log-sec":"4096",
		"tran":"usb","serial":"ABC","rm":"0","ro":"1","mountpoint":null,
		"children":[{"name":"sda1","path":"/dev/sda1","maj:min":"8:1","type":"part","size":"1000","mountpoints":["/media/x","[SWAP]"]}]}]}`
	a, err := ParseLsblk([]byte(newer))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseLsblk([]byte(older))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("the two spellings differ:\n%+v\n%+v", a, b)
	}
	d := a[0]
	if d.SizeBytes() != 1000204886016 || d.SectorSize() != 4096 || !bool(d.RO) || d.Tran != "usb" {
		t.Errorf("disk = %+v", d)
	}
	if got := d.Children[0].Mountpoints; !reflect.DeepEqual(got, []string{"/media/x", "[SWAP]"}) {
		t.Errorf("mountpoints = %q", got)
	}
	if TopOf(a, "8:1") != &a[0] || Find(a, "/dev/sda1") != &a[0].Children[0] {
		t.Error("TopOf/Find do not find the partition's disk")
	}
	if _, err := ParseLsblk([]byte(`{"blockdevices":[{"size":"12x"}]}`)); err == nil {
		t.Error("a bad size parsed")
	}
}

func TestMountAt(t *testing.T) {
	t.Parallel()
	m := []Mount{{MajMin: "179:2", MountPoint: "/"}, {MajMin: "0:40", MountPoint: "/mnt/my disk/nix"}, {MajMin: "0:41", MountPoint: "/mnt/my disk/nix"}}
	if got := MountAt(m, "/mnt/my disk/nix/"); got == nil || got.MajMin != "0:41" {
		t.Errorf("MountAt = %+v, want the topmost", got)
	}
	if MountAt(m, "/mnt") != nil {
		t.Error("MountAt(/mnt) found a mount that is not there")
	}
}

func TestParseRootRefs(t *testing.T) {
	t.Parallel()
	dump := "root tree key (ROOT_TREE ROOT_ITEM 0)\n" +
		"\titem 3 key (FS_TREE ROOT_ITEM 0) itemoff 1 itemsize 439\n\t\tgeneration 5 root_dirid 256\n" +
		"\titem 4 key (FS_TREE ROOT_REF 256) itemoff 14930 itemsize 19\n\t\troot ref key dirid 256 sequence 2 name @\n" +
		"\titem 5 key (256 ROOT_REF 258) itemoff 14908 itemsize 22\n\t\troot ref key dirid 256 sequence 3 name nested\n" +
		"\titem 6 key (FS_TREE ROOT_REF 257) itemoff 14908 itemsize 22\n\t\troot ref key dirid 256 sequence 3 name @nix\n"
	if got := ParseRootRefs([]byte(dump)); !reflect.DeepEqual(got, []string{"@", "@nix"}) {
		t.Errorf("subvolumes = %q, want the top level's only", got)
	}
}

func TestPlanGeometry(t *testing.T) {
	t.Parallel()
	layout := config.Default().Layout
	id := Identity{ByID: "/dev/disk/by-id/usb-X", Serial: "S1", Size: 240057409536}
	for _, sector := range []int64{512, 4096} {
		p, err := NewPlan(layout, 1<<30, id, sector)
		if err != nil {
			t.Fatal(err)
		}
		mib := (1 << 20) / sector
		total := id.Size / sector
		gptTail := 1 + 16384/sector // backup header + entries
		// A 1 GiB Pi's swap = "ram" is 3 GiB: memory and swap make 4 GiB.
		want := []struct{ start, sectors int64 }{{mib, 500 * mib}, {501 * mib, 3072 * mib}, {3573 * mib, 0}}
		for i, w := range want {
			got := p.Parts[i]
			if got.Start != w.start || (w.sectors != 0 && got.Sectors != w.sectors) {
				t.Errorf("%d-byte sectors: partition %d at %d+%d, want %d+%d", sector, i+1, got.Start, got.Sectors, w.start, w.sectors)
			}
		}
		root := p.Parts[2]
		end := root.Start + root.Sectors
		if end%mib != 0 || end > total-gptTail || total-gptTail-end >= mib {
			t.Errorf("%d-byte sectors: root ends at sector %d of %d: not the last whole MiB before the backup GPT", sector, end, total)
		}
	}
}

func TestPlanIDsAreDerived(t *testing.T) {
	t.Parallel()
	layout := config.Default().Layout
	id := Identity{ByID: "/dev/disk/by-id/usb-X", Serial: "S1", Size: 240057409536}
	a, _ := NewPlan(layout, 1<<30, id, 512)
	b, _ := NewPlan(layout, 1<<30, id, 512)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same inputs gave different plans")
	}
	seen := map[string]bool{}
	for _, v := range []string{a.DiskID, a.Parts[0].GUID, a.Parts[1].GUID, a.Parts[2].GUID, a.Parts[1].FSUUID, a.Parts[2].FSUUID} {
		if seen[v] || len(v) != 36 || v[14] != '8' || !strings.ContainsAny(v[19:20], "89ab") {
			t.Errorf("ID %q is repeated or not a version 8 UUID", v)
		}
		seen[v] = true
	}
	if a.Parts[0].FSUUID != strings.ToLower(a.FATVolumeID[:4]+"-"+a.FATVolumeID[4:]) {
		t.Errorf("FAT uuid %q does not match volume id %q", a.Parts[0].FSUUID, a.FATVolumeID)
	}
	other := id
	other.Serial = "S2"
	c, _ := NewPlan(layout, 1<<30, other, 512)
	layout2 := layout
	layout2.RootLabel = "nixos"
	d, _ := NewPlan(layout2, 1<<30, id, 512)
	for name, p := range map[string]*Plan{"another disk": c, "another layout": d} {
		if p.DiskID == a.DiskID || p.Parts[2].FSUUID == a.Parts[2].FSUUID || p.FATVolumeID == a.FATVolumeID {
			t.Errorf("%s got the same IDs", name)
		}
	}
}

func TestPlanRefusals(t *testing.T) {
	t.Parallel()
	layout := config.Default().Layout
	if _, err := NewPlan(layout, 0, Identity{Size: 64 << 30}, 512); err == nil || !strings.Contains(err.Error(), `swap_size = "ram" but the memory size is unknown`) {
		t.Errorf("swap=ram without RAM: %v", err)
	}
	if _, err := NewPlan(layout, 4<<30, Identity{Size: 5 << 30}, 512); err == nil || !strings.Contains(err.Error(), "too small for the layout: it needs at least 5622MiB") {
		t.Errorf("small disk: %v", err)
	}
	mbr := layout
	mbr.Table = config.TableMBR
	// GPT is no way out on such a disk (U-Boot): the message must not send
	// users there.
	if _, err := NewPlan(mbr, 1<<30, Identity{Size: 3 << 40}, 512); err == nil || !strings.Contains(err.Error(), "MBR partition table cannot address") ||
		!strings.Contains(err.Error(), "use a disk smaller than 2 TiB") || strings.Contains(err.Error(), "gpt") {
		t.Errorf("MBR on 3 TiB: %v", err)
	}
	none := layout
	none.SwapSize = config.SwapSize{}
	p, err := NewPlan(none, 0, Identity{Size: 8 << 30}, 512)
	if err != nil || len(p.Parts) != 2 || p.Parts[1].Role != RoleRoot || p.Parts[1].Number != 2 {
		t.Errorf("swap_size = 0: %+v, %v", p, err)
	}
}

func TestPlanCompare(t *testing.T) {
	t.Parallel()
	p, err := NewPlan(config.Default().Layout, 1<<30, Identity{Size: 8 << 30}, 512)
	if err != nil {
		t.Fatal(err)
	}
	table := &Table{Label: "gpt", ID: strings.ToUpper(p.DiskID), SectorSize: 512}
	for _, part := range p.Parts {
		table.Partitions = append(table.Partitions, TablePart{Start: part.Start, Size: part.Sectors, Type: part.GPTType, UUID: strings.ToUpper(part.GUID), Name: part.Name})
	}
	if diff := p.Compare(table); diff != "" {
		t.Fatalf("matching table: %s", diff)
	}
	table.Partitions[2].Name = "rootfs"
	if diff := p.Compare(table); diff != `partition 3: name "rootfs", want "root"` {
		t.Errorf("renamed partition: %q", diff)
	}
	if diff := p.Compare(nil); diff != "no partition table" {
		t.Errorf("no table: %q", diff)
	}
}

func TestPartitionNode(t *testing.T) {
	t.Parallel()
	for dev, want := range map[string]string{"/dev/sda": "/dev/sda2", "/dev/loop0": "/dev/loop0p2", "/dev/nvme0n1": "/dev/nvme0n1p2", "/dev/mmcblk0": "/dev/mmcblk0p2"} {
		if got := PartitionNode(dev, 2); got != want {
			t.Errorf("PartitionNode(%s, 2) = %s, want %s", dev, got, want)
		}
	}
}

func TestPlanIsOurs(t *testing.T) {
	t.Parallel()
	mbr := config.Default().Layout
	mbr.Table = config.TableMBR
	p, err := NewPlan(mbr, 1<<30, Identity{Serial: "S", Size: 8 << 30}, 512)
	if err != nil {
		t.Fatal(err)
	}
	converted := &Table{Label: "dos", ID: "0x00000000"}
	for _, part := range p.Parts {
		converted.Partitions = append(converted.Partitions, TablePart{Start: part.Start, Size: part.Sectors, Type: "ef"})
	}
	for name, tc := range map[string]struct {
		table *Table
		want  bool
	}{
		"final MBR":                 {&Table{Label: "dos", ID: p.DiskID}, true},
		"GPT before the conversion": {&Table{Label: "gpt", ID: strings.ToUpper(p.GPTGUID)}, true},
		"converted, id not yet set": {converted, true},
		"someone else's MBR":        {&Table{Label: "dos", ID: "0x1234abcd"}, false},
		"zero id, another geometry": {&Table{Label: "dos", ID: "0x00000000", Partitions: []TablePart{{Start: 2048, Size: 100}}}, false},
		"no table":                  {nil, false},
	} {
		if got := p.IsOurs(tc.table, ""); got != tc.want {
			t.Errorf("%s: IsOurs = %v, want %v", name, got, tc.want)
		}
	}
	if !p.IsOurs(&Table{Label: "gpt", ID: "AAAA"}, "aaaa") {
		t.Error("the recorded id is not recognised")
	}
}

func TestNewIDSeed(t *testing.T) {
	t.Parallel()
	zeros := func() *strings.Reader { return strings.NewReader(strings.Repeat("\x00", 16)) }
	a, err := NewIDSeed("10000000abcdef01", zeros())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewIDSeed("10000000abcdef01", zeros())
	c, _ := NewIDSeed("10000000abcdef02", zeros())
	d, _ := NewIDSeed("10000000abcdef01", strings.NewReader(strings.Repeat("\x01", 16)))
	if a != b || a == c || a == d || len(a) != 32 {
		t.Errorf("seeds: same inputs %s %s, other Pi %s, other random part %s", a, b, c, d)
	}
	if _, err := NewIDSeed("", strings.NewReader("short")); err == nil {
		t.Error("a short random read gave a seed")
	}
	// The seed goes into every derived ID; no seed derives them as before.
	id := Identity{Size: 8 << 30}
	old, _ := NewPlan(config.Default().Layout, 1<<30, id, 512)
	id.Seed = a
	seeded, _ := NewPlan(config.Default().Layout, 1<<30, id, 512)
	if old.DiskID == seeded.DiskID || old.Parts[2].FSUUID == seeded.Parts[2].FSUUID || old.FATVolumeID == seeded.FATVolumeID {
		t.Errorf("the seed changed no ID: %+v", seeded)
	}
}
