package qemu

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/retire"
	"github.com/nixpi/nixpi/firstboot/system"
)

const (
	testImage    = "../../../shared/testdata/rpi-eeprom/images/pieeprom-2026-08-04.bin"
	testRecovery = "../../../shared/testdata/rpi-eeprom/recovery.bin"
	testSecret   = "$6$salt$notarealhashbutasecret"
)

// fatCardImage writes a card image: an MBR with one FAT32 partition at
// 1 MiB holding files (parent directories made as needed).
func fatCardImage(t *testing.T, files map[string][]byte) string {
	t.Helper()
	tools := DefaultTools()
	for _, tool := range []string{tools.MkfsFAT, tools.Mcopy, "/usr/bin/mmd"} {
		if _, err := os.Stat(tool); err != nil {
			t.Skipf("skipping: %s not installed (apt-get install dosfstools mtools)", tool)
		}
	}
	img := filepath.Join(t.TempDir(), "card.img")
	const start, size = 1 << 20, 40 << 20
	if err := os.WriteFile(img, EncodeMBR(0x1234abcd, []Partition{{Type: 0x0c, Offset: start, Size: size}}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, start+size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tools.MkfsFAT, "-F", "32", "--offset", "2048", img, "40960").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.fat: %v: %s", err, out)
	}
	putFATFiles(t, img+"@@1048576", files)
	return img
}

// putFATFiles copies files (parent directories made as needed) into the FAT
// at image ("IMG@@OFFSET", as mtools takes it).
func putFATFiles(t *testing.T, image string, files map[string][]byte) {
	t.Helper()
	tools := DefaultTools()
	src := t.TempDir()
	made := map[string]bool{}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for dir := path.Dir(name); dir != "." && !made[dir]; dir = path.Dir(dir) {
			made[dir] = true
		}
	}
	// Parents first.
	dirs := make([]string, 0, len(made))
	for d := range made {
		dirs = append(dirs, d)
	}
	slices.SortFunc(dirs, func(a, b string) int { return strings.Count(a, "/") - strings.Count(b, "/") })
	for _, d := range dirs {
		if out, err := exec.Command("/usr/bin/mmd", "-i", image, "::"+d).CombinedOutput(); err != nil {
			t.Fatalf("mmd %s: %v: %s", d, err, out)
		}
	}
	for i, name := range names {
		local := filepath.Join(src, "f"+strings.Repeat("x", i))
		if err := os.WriteFile(local, files[name], 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(tools.Mcopy, "-i", image, local, "::"+name).CombinedOutput(); err != nil {
			t.Fatalf("mcopy %s: %v: %s", name, err, out)
		}
	}
}

// handOverCards returns a hooked card's files and the files of the same
// card after a correct hand-over with order 0xf41.
func handOverCards(t *testing.T) (hooked, retired map[string][]byte) {
	t.Helper()
	if _, err := os.Stat(testImage); err != nil {
		t.Skipf("skipping: no Raspberry Pi test data next to the repository (%v)", err)
	}
	hooked = map[string][]byte{cardpath.Config: []byte("schema = 1\n[[users]]\nname = \"pi\"\npassword_hash = \"" + testSecret + "\"\n")}
	for _, name := range rootBootFiles {
		hooked[name] = []byte("the card's " + name + "\n")
	}
	retired = map[string][]byte{cardpath.Config: []byte("schema = 1\n[[users]]\nname = \"pi\"\n# password_hash removed: it is on the SSD\n")}
	m := retire.Manifest{V: retire.ManifestVersion, BootOrder: "0xf41", Staged: []string{cardpath.EEPROMUpdate, cardpath.EEPROMSig, cardpath.Recovery}}
	for _, name := range rootBootFiles {
		retired[path.Join(cardpath.Retired, name)] = hooked[name]
		m.Moved = append(m.Moved, retire.File{Name: name, Size: int64(len(hooked[name])), SHA256: sha256Hex(hooked[name])})
	}
	manifest, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	retired[cardpath.RetiredManifest] = manifest
	upd, err := expectedUpdate(testImage, "0xf41")
	if err != nil {
		t.Fatal(err)
	}
	retired[cardpath.EEPROMUpdate] = upd
	retired[cardpath.EEPROMSig] = eeprom.Digest(upd, 1789114715)
	if retired[cardpath.Recovery], err = os.ReadFile(testRecovery); err != nil {
		t.Fatal(err)
	}
	return hooked, retired
}

// handedOver is an Install whose card asked for the trial (a tryboot
// reboot), whose NixOS came up from tryboot.txt and confirmed, and whose
// retired card then passed the Pi on to the SSD over USB.
func handedOver(t *testing.T, card string, ho journal.HandOver) *Install {
	t.Helper()
	state, err := json.Marshal(journal.State{Steps: []string{"verify", "trial", "confirm", "done"}, HandOver: &ho})
	if err != nil {
		t.Fatal(err)
	}
	console := filepath.Join(t.TempDir(), "console-1.log")
	if err := os.WriteFile(console, []byte("nixpi: step 2 of 4, trial\n[ 99.1] reboot: Restarting system with command '0 tryboot'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &Install{Name: "t", Card: card, Finished: true, HandedOver: true, TrybootRequests: []int{1}, NixOSBoots: []int{2, 3},
		Boots: []*BootResult{{N: 1, Console: console, End: EndReboot, Source: SourceCard},
			{N: 2, End: EndCut, Source: SourceTryboot, MultiUser: true}, {N: 3, End: EndCut, Source: SourceUSB, MultiUser: true}},
		Journal: &journal.Journal{Entries: []journal.Entry{{Step: "done", Event: journal.Done, Boot: 2, State: state}}}}
}

func goodHandOver() journal.HandOver {
	return journal.HandOver{BootOrder: "0xf41", Address: "10.0.2.15", Finished: true, Staged: []string{"a", "b", "c"}, Scrubbed: []string{"users.pi.password_hash"},
		TrialBoot: 1, Trybooted: true, Confirmed: &journal.Confirmation{Boot: 2, System: "/nix/store/x-nixos-system", Addresses: []string{"10.0.2.15"}}}
}

// TestCheckHandOver: a correct hand-over passes, and each thing a broken
// one could get wrong is found.
func TestCheckHandOver(t *testing.T) {
	t.Parallel()
	hookedFiles, retiredFiles := handOverCards(t)
	hooked := fatCardImage(t, hookedFiles)
	e := &E2E{Harness: Harness{Run: system.ExecRunner{}, Tools: DefaultTools()}}
	want := HandOverWant{BootOrder: "0xf41", Image: testImage, Recovery: testRecovery, Secrets: []string{testSecret}, Address: true}
	ctx := context.Background()

	good := fatCardImage(t, retiredFiles)
	if p := e.CheckHandOver(ctx, handedOver(t, good, goodHandOver()), hooked, want); len(p) > 0 {
		t.Fatalf("a correct hand-over: %q", p)
	}

	// A config without secrets: nothing scrubbed, and that is right.
	noSecrets := want
	noSecrets.Secrets = nil
	plain := goodHandOver()
	plain.Scrubbed = nil
	if p := e.CheckHandOver(ctx, handedOver(t, good, plain), hooked, noSecrets); len(p) > 0 {
		t.Errorf("a hand-over with no secrets to scrub: %q", p)
	}

	change := func(edit func(files map[string][]byte)) string {
		files := map[string][]byte{}
		for k, v := range retiredFiles {
			files[k] = v
		}
		edit(files)
		return fatCardImage(t, files)
	}
	otherOrder, err := expectedUpdate(testImage, "0xf14")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		card string
		ho   func(*journal.HandOver)
		in   func(*Install)
		want string
	}{
		{name: "start4.elf left at the root", card: change(func(f map[string][]byte) { f[pi4Firmware] = hookedFiles[pi4Firmware] }),
			want: "start4.elf is still at the card's root"},
		{name: "a retired file changed", card: change(func(f map[string][]byte) { f[path.Join(cardpath.Retired, "config.txt")] = []byte("other\n") }),
			want: "config.txt differs from the file it was at the root"},
		{name: "kernel not moved", card: change(func(f map[string][]byte) { delete(f, path.Join(cardpath.Retired, "kernel8.img")) }),
			want: "kernel8.img was not moved"},
		{name: "other boot order staged", card: change(func(f map[string][]byte) {
			f[cardpath.EEPROMUpdate] = otherOrder
			f[cardpath.EEPROMSig] = eeprom.Digest(otherOrder, 1)
		}), want: `BOOT_ORDER is "0xf14", want "0xf41"`},
		{name: "sig of another image", card: change(func(f map[string][]byte) { f[cardpath.EEPROMSig] = eeprom.Digest(otherOrder, 1) }),
			want: "pieeprom.sig does not hold pieeprom.upd's sha256"},
		{name: "no recovery.bin", card: change(func(f map[string][]byte) { delete(f, cardpath.Recovery) }),
			want: "recovery.bin is not at the card's root"},
		{name: "secret left on the card", card: change(func(f map[string][]byte) { f[cardpath.Config] = hookedFiles[cardpath.Config] }),
			want: "secret 1 of the config is in the card's nixpi/nixpi.toml"},
		{name: "NixOS never confirmed", card: good, ho: func(h *journal.HandOver) { h.Confirmed = nil },
			want: "the journal's hand-over is"},
		{name: "no trial boot", card: good, ho: func(h *journal.HandOver) { h.Trybooted = false },
			want: "the journal's hand-over is"},
		{name: "no tryboot request", card: good, in: func(in *Install) { in.TrybootRequests = nil },
			want: "asked for 0 tryboot reboots"},
		{name: "NixOS not up in the trial boot", card: good, in: func(in *Install) { in.Boots[1].MultiUser = false },
			want: "did not bring NixOS up from the card's tryboot.txt"},
		{name: "trial files left", card: change(func(f map[string][]byte) { f[cardpath.TryBoot] = []byte("[all]\n") }),
			want: "the trial's tryboot.txt is still on the card"},
		{name: "secrets not scrubbed", card: good, ho: func(h *journal.HandOver) { h.Scrubbed = nil },
			want: "the journal's hand-over is"},
		{name: "powered off, not rebooted", card: good, in: func(in *Install) { in.Boots[0].End = EndPowerOff },
			want: "the card's last boot ended with"},
		{name: "card still boots", card: good, in: func(in *Install) { in.HandedOver = false },
			want: "the card still boots"},
		{name: "no address though networked", card: good, ho: func(h *journal.HandOver) { h.Address = "" },
			want: "no address for the Pi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ho := goodHandOver()
			if tc.ho != nil {
				tc.ho(&ho)
			}
			in := handedOver(t, tc.card, ho)
			if tc.in != nil {
				tc.in(in)
			}
			p := e.CheckHandOver(ctx, in, hooked, want)
			if !strings.Contains(strings.Join(p, "\n"), tc.want) {
				t.Errorf("problems %q, want one with %q", p, tc.want)
			}
		})
	}
}

// TestWithBootloader: the recipe takes the newest release image and
// recovery.bin, and their content is part of the cache key.
func TestWithBootloader(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(testImage); err != nil {
		t.Skipf("skipping: no Raspberry Pi test data next to the repository (%v)", err)
	}
	r, err := DefaultBaseRecipe().WithBootloader(filepath.Dir(testRecovery))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Bootloader) != 2 || r.Bootloader[0].Name != "pieeprom-2026-08-04.bin" || r.Bootloader[1].Name != "recovery.bin" {
		t.Fatalf("bootloader files %+v", r.Bootloader)
	}
	if r.Key() == DefaultBaseRecipe().Key() {
		t.Error("the bootloader files do not change the cache key")
	}
	changed := r
	changed.Bootloader = slices.Clone(r.Bootloader)
	changed.Bootloader[1].SHA256 = strings.Repeat("0", 64)
	if changed.Key() == r.Key() {
		t.Error("the bootloader files' content does not change the cache key")
	}
	moved := r
	moved.Bootloader = slices.Clone(r.Bootloader)
	moved.Bootloader[0].Src = "/elsewhere/pieeprom-2026-08-04.bin"
	if moved.Key() != r.Key() {
		t.Error("where the files came from changes the cache key")
	}
	if _, err := DefaultBaseRecipe().WithBootloader(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no Pi 4 bootloader image") {
		t.Errorf("an empty directory: %v", err)
	}
}

// TestCheckFlashed: the staged update is flashed once, with the wanted
// order, before the trial boot.
func TestCheckFlashed(t *testing.T) {
	t.Parallel()
	flashed := func(updates ...EEPROMUpdate) *Install {
		in := &Install{Name: "t", Boots: []*BootResult{{N: 1, Source: SourceCard, End: EndReboot}, {N: 2, Source: SourceCard, End: EndReboot},
			{N: 3, Source: SourceTryboot, End: EndCut}}, TrybootRequests: []int{2},
			EEPROMUpdates: updates, EEPROM: &EEPROM{Config: []byte("[all]\nBOOT_ORDER=0xf41\n")}}
		if len(updates) == 0 {
			in.EEPROM = &EEPROM{}
		}
		return in
	}
	good := EEPROMUpdate{Boot: 2, BootOrder: "0xf41", Timestamp: 1}
	for _, tc := range []struct {
		name     string
		in       *Install
		ssdBoots bool
		want     string
	}{
		{"flashed before the card read it back", flashed(good), true, ""},
		{"never flashed", flashed(), true, "never flashed"},
		{"never flashed, no SSD boot", flashed(), false, ""},
		{"twice", flashed(good, good), true, "flashed 2 updates"},
		{"another order", flashed(EEPROMUpdate{Boot: 2, BootOrder: "0xf14"}), true, "has BOOT_ORDER 0xf14"},
		{"too late", flashed(EEPROMUpdate{Boot: 3, BootOrder: "0xf41"}), true, "before boot 3, after the trial was requested in boot 2"},
	} {
		p := checkFlashed(tc.in, "0xf41", tc.ssdBoots)
		if got := strings.Join(p, "\n"); !strings.Contains(got, tc.want) || (tc.want == "") != (got == "") {
			t.Errorf("%s: problems %q, want %q", tc.name, got, tc.want)
		}
	}
}
