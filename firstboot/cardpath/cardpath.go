// Package cardpath is the contract between the builder and the device service:
// every path nixpi puts on the card's FAT partition, and every path its
// payload installs into the root filesystem. The builder writes them, the
// hook and the service read them, and inspect, report and the QEMU harness
// find them; a layout change is made here and nowhere else.
//
// It imports nothing, so both sides can depend on it.
package cardpath

// On the FAT partition, relative to its root (which the device mounts at
// /boot/firmware on Bookworm and later, /boot before). Slash-separated.
const (
	// Dir holds everything nixpi adds to the FAT.
	Dir = "nixpi"
	// Binary is the device service for the image's architecture; the
	// hook words in cmdline.txt run it once as `systemd.run=`.
	Binary = Dir + "/" + BinaryName
	// Payload is the newc cpio archive the hook extracts into "/".
	Payload = Dir + "/payload.cpio"
	// Config is the user's validated install config (it may hold secrets).
	Config = Dir + "/nixpi.toml"
	// ConfigScrubbed is the config without its secrets while the hand-over's
	// scrub overwrites Config in place: readers prefer it while it exists.
	ConfigScrubbed = Dir + "/nixpi.toml.scrubbed"
	// Manifest lists every input's and injected file's sha256.
	Manifest = Dir + "/manifest.json"
	// Journal is the service's versioned JSON-lines journal, for programs.
	Journal = Dir + "/journal.jsonl"
	// Log is the readable install log: steps, commands, their output.
	Log = Dir + "/install.log"
	// Failed keeps a failed install from retrying on every boot until a
	// person acts; it holds the reason and the hint.
	Failed = Dir + "/FAILED"

	// Cmdline and ConfigTxt are the firmware's own files nixpi edits.
	Cmdline   = "cmdline.txt"
	ConfigTxt = "config.txt"

	// Retired holds the card's boot files once the hand-over has moved them
	// out of the root, so the bootloader skips the card; RetiredManifest
	// lists what was moved, for restore-card.
	Retired         = Dir + "/retired"
	RetiredManifest = Dir + "/retired.json"

	// TryBoot is what the Pi 4 firmware reads instead of config.txt for one
	// boot after a reboot with the tryboot flag: the hand-over's trial boot
	// of NixOS on the SSD, through TrialUBoot and TrialArmstub (from the
	// installed system's own nixpkgs), which NixOS removes once it has
	// confirmed.
	TryBoot      = "tryboot.txt"
	TrialDir     = Dir + "/trial"
	TrialUBoot   = TrialDir + "/u-boot-rpi4.bin"
	TrialArmstub = TrialDir + "/armstub8-gic.bin"

	// The staged bootloader EEPROM update, at the root where the boot ROM
	// and recovery.bin look for it. recovery.bin renames itself to
	// RecoveryDone once it has flashed the update.
	EEPROMUpdate = "pieeprom.upd"
	EEPROMSig    = "pieeprom.sig"
	Recovery     = "recovery.bin"
	RecoveryDone = "RECOVERY.000"
)

// On the SSD's root filesystem, relative to "/": what the trial boot leaves
// for the installed NixOS, whose generated configuration runs
// SSDConfirmUnit while SSDTrial exists.
const (
	SSDStateDir    = "var/lib/nixpi"
	SSDBinary      = SSDStateDir + "/" + BinaryName
	SSDTrial       = SSDStateDir + "/trial.json"
	SSDConfirmUnit = "nixpi-confirm.service"
)

// In the root filesystem, relative to "/": where the payload puts things.
const (
	BinaryName      = "nixpi-firstboot"
	InstalledBinary = "usr/local/sbin/" + BinaryName
	UnitName        = BinaryName + ".service"
	Unit            = "etc/systemd/system/" + UnitName
	// UnitWantedBy is the symlink that enables the unit; UnitWantedByTarget
	// is what it points at (relative, as systemctl enable writes it).
	UnitWantedBy       = "etc/systemd/system/multi-user.target.wants/" + UnitName
	UnitWantedByTarget = "../" + UnitName
)

// TrialRecord is SSDTrial: what the installed NixOS needs to find the card
// before it can read the card's journal. The card's service writes it, the
// confirm command on NixOS reads it.
type TrialRecord struct {
	V            int    `json:"v"`
	CardPartUUID string `json:"card_partuuid"`
	// System is the store path the trial expects NixOS to run.
	System string `json:"system"`
}
