package journal

import (
	"fmt"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/termtext"
)

// Disk is the identity of the target disk as recorded in the journal; resume
// requires all of it to match the disk found on a later boot.
type Disk struct {
	Dev     string `json:"dev"`                // /dev/sda at the time
	ByID    string `json:"by_id,omitempty"`    // /dev/disk/by-id/usb-...
	Serial  string `json:"serial,omitempty"`   // ID_SERIAL_SHORT
	Size    int64  `json:"size"`               // bytes
	GPTGUID string `json:"gpt_guid,omitempty"` // disk GUID this installation wrote
	Model   string `json:"model,omitempty"`    // vendor and model as lsblk reads them
	// IDSeed is mixed into every GUID/UUID the plan derives (the Pi's serial
	// and a random part), so a resume derives the same IDs and no two
	// installs share them.
	IDSeed string `json:"id_seed,omitempty"`
	// FoundID is the disk id of the partition table the disk carried when
	// it was chosen (to be wiped), "" for none.
	FoundID string `json:"found_id,omitempty"`
	// Partitioned is set once the partition step has written the table.
	Partitioned bool `json:"partitioned,omitempty"`
}

// State is what steps learn and later steps need, persisted across boots in
// every entry's "state". The host reads it too (report, the QEMU harness).
type State struct {
	// Steps are the service's step names in the order it runs them, so a
	// reader knows what "all done" means without linking the service.
	Steps  []string `json:"steps,omitempty"`
	Target *Disk    `json:"target,omitempty"`
	// RAMBytes is the machine's memory as preflight read it (swap = "ram").
	RAMBytes int64 `json:"ram_bytes,omitempty"`
	// HandOver is what the last steps did (eeprom to reboot).
	HandOver *HandOver `json:"hand_over,omitempty"`

	// Nix is the Nix the nix step installed or found.
	Nix *Nix `json:"nix,omitempty"`
	// NixpkgsPath is the verified nixpkgs source in the host store.
	NixpkgsPath string `json:"nixpkgs_path,omitempty"`
	// SystemPath is the built NixOS toplevel in the host store, and
	// SystemInputs the sha256 of the /etc/nixos files it was built from.
	SystemPath   string `json:"system_path,omitempty"`
	SystemInputs string `json:"system_inputs,omitempty"`
	// Firmware maps each file the firmware step put on the SSD's FAT
	// ("start4.elf") to its source in the host store.
	Firmware map[string]string `json:"firmware,omitempty"`
}

// HandOver is the hand-over from the card to the SSD, step by step, for the
// console's last message, nixpi report and the QEMU harness.
type HandOver struct {
	// BootOrder is the BOOT_ORDER the bootloader gets (boot.boot_order).
	BootOrder string `json:"boot_order,omitempty"`
	// Bootloader is the running bootloader's build, "2023-01-11 (1673458852)".
	Bootloader string `json:"bootloader,omitempty"`
	// EEPROM says what the eeprom step decided ("staged BOOT_ORDER=0xf41 from
	// pieeprom-2023-01-11.bin", "bootloader already has ...").
	EEPROM string `json:"eeprom,omitempty"`
	// Staged are the update files the eeprom step put at the card's root.
	Staged []string `json:"staged,omitempty"`
	// Retired says what the retire step did, or why the card stays bootable.
	Retired string `json:"retired,omitempty"`
	// Scrubbed are the secret keys removed from the card's nixpi.toml.
	Scrubbed []string `json:"scrubbed,omitempty"`
	// Hostname, Address and Logins are for the last console message: the
	// system's name, the address the Pi had, who can log in and how
	// ("alice (ssh key)"), recorded before scrub takes the secrets away.
	Hostname string   `json:"hostname,omitempty"`
	Address  string   `json:"address,omitempty"`
	Logins   []string `json:"logins,omitempty"`
	// CardPartUUID is the card's FAT partition as the SSD's NixOS finds it
	// to confirm (an MBR PARTUUID, "1234abcd-01").
	CardPartUUID string `json:"card_partuuid,omitempty"`
	// TrialBoot is the boot in which the trial boot of NixOS on the SSD was
	// requested (0: not yet); Trybooted says it went through the
	// bootloader's one-shot TRYBOOT mode (an order that tries USB first
	// needs none: the SSD boots before the card).
	TrialBoot int  `json:"trial_boot,omitempty"`
	Trybooted bool `json:"trybooted,omitempty"`
	// Confirmed is NixOS's own word, written from the SSD, that it booted:
	// only then is the card retired.
	Confirmed *Confirmation `json:"confirmed,omitempty"`
	// Finished is set by the done step: the card's work is over, and a card
	// restored with nixpi restore-card is left bootable.
	Finished bool `json:"finished,omitempty"`
	// Rebooted is set by the reboot step once it has asked for the reboot.
	Rebooted bool `json:"rebooted,omitempty"`
}

// Confirmation is what the installed NixOS recorded when it booted from
// the SSD and confirmed.
type Confirmation struct {
	// Time is when it confirmed, Boot the journal's number of that boot,
	// BootedAt when its kernel started (zero when unknown).
	Time     time.Time `json:"time"`
	Boot     int       `json:"boot"`
	BootedAt time.Time `json:"booted_at,omitempty"`
	// System is the running system (/run/current-system), Generation the
	// system profile's generation it came from (0 when unknown).
	System     string `json:"system"`
	Generation int    `json:"generation,omitempty"`
	// Addresses are NixOS's global addresses, IPv4 first.
	Addresses []string `json:"addresses,omitempty"`
}

// ConfirmLine is the one line a person who powered a Pi on and came back
// wants to read: whether NixOS booted from the SSD, or why not. It stays one
// line whatever the card says.
func (h *HandOver) ConfirmLine() string {
	const prefix = "NixOS booted from the SSD: "
	switch c := h.Confirmed; {
	case c != nil:
		s := fmt.Sprintf("%sconfirmed at %s (boot %d)", prefix, c.Time.UTC().Format("2006-01-02 15:04:05 UTC"), c.Boot)
		if len(c.Addresses) > 0 {
			s += ", address " + termtext.Line(strings.Join(c.Addresses, ", "))
		}
		return s
	case h.TrialBoot > 0:
		return fmt.Sprintf("%snot confirmed: the trial boot requested in boot %d has not confirmed (if the card booted again since, it did not boot: see the trial step)", prefix, h.TrialBoot)
	}
	return prefix + "not yet: the install has not reached the trial boot"
}

// Message is what the consoles show at the end of the install, and nixpi
// report repeats: how to reach the system and what to do with the card.
func (h *HandOver) Message() []string {
	host := h.Hostname
	if host == "" {
		host = "nixos"
	}
	lines := []string{"install complete: NixOS boots from the SSD after this reboot, as " + host + "."}
	if c := h.Confirmed; c != nil {
		lines[0] = fmt.Sprintf("install complete: NixOS runs from the SSD as %s (it confirmed in boot %d).", host, c.Boot)
	}
	switch {
	case h.Confirmed != nil && len(h.Confirmed.Addresses) > 0:
		lines = append(lines, fmt.Sprintf("NixOS has the address %s.", strings.Join(h.Confirmed.Addresses, ", ")))
	case h.Address != "":
		lines = append(lines, fmt.Sprintf("this Pi had the address %s (the router may give NixOS the same one, or lists %s with its new address).", h.Address, host))
	}
	if len(h.Logins) > 0 {
		lines = append(lines, "log in as: "+strings.Join(h.Logins, ", ")+".")
	} else {
		lines = append(lines, "no user with a login was configured: log in on the console.")
	}
	if strings.HasPrefix(h.Retired, "not retired") {
		lines = append(lines, fmt.Sprintf("keep the card in: with BOOT_ORDER %s the Pi boots it only when the SSD does not boot.", h.BootOrder))
	} else {
		lines = append(lines, "remove the card or keep it: it no longer boots (nixpi restore-card makes it bootable again).")
	}
	return lines
}

// LastHandOver is the hand-over as the journal's last saved state has it;
// nil before the eeprom step ran.
func LastHandOver(j *Journal) *HandOver {
	st, err := j.CurrentState()
	if err != nil {
		return nil
	}
	return st.HandOver
}

// Report is the hand-over for nixpi report, one line per step's outcome:
// a value read from the card with a line break in it stays on its line.
func (h *HandOver) Report() []string {
	var lines []string
	add := func(label, v string) {
		if v != "" {
			lines = append(lines, fmt.Sprintf("  %-10s %s", label, termtext.Line(v)))
		}
	}
	add("boot order", h.BootOrder)
	add("bootloader", h.Bootloader)
	add("eeprom", h.EEPROM)
	add("trial", trialReport(h))
	add("retired", h.Retired)
	add("scrubbed", strings.Join(h.Scrubbed, ", "))
	add("address", h.Address)
	add("logins", strings.Join(h.Logins, ", "))
	switch {
	case h.Finished && h.Confirmed != nil:
		add("state", "finished; NixOS runs from the SSD")
	case h.Rebooted:
		add("state", "finished; rebooted into the SSD")
	case h.Finished:
		add("state", "finished; the reboot was not asked for yet")
	default:
		add("state", "under way")
	}
	return lines
}

// Nix is the host's Nix: how it came, its version, and for the official
// release the tarball's sha256 (what was verified before it ran).
type Nix struct {
	Installer     string `json:"installer"` // "debian" or "official"
	Version       string `json:"version"`
	TarballSHA256 string `json:"tarball_sha256,omitempty"`
}

func trialReport(h *HandOver) string {
	switch {
	case h.TrialBoot == 0:
		return ""
	case h.Trybooted:
		return fmt.Sprintf("requested in boot %d (one TRYBOOT of the SSD; the card's config.txt is untouched)", h.TrialBoot)
	}
	return fmt.Sprintf("requested in boot %d (a plain reboot: the boot order tries USB first)", h.TrialBoot)
}
