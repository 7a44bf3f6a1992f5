package journal

// Disk is the identity of the target disk as recorded in the journal; resume
// requires all of it to match the disk found on a later boot.
type Disk struct {
	Dev     string `json:"dev"`                // /dev/sda at the time
	ByID    string `json:"by_id,omitempty"`    // /dev/disk/by-id/usb-...
	Serial  string `json:"serial,omitempty"`   // ID_SERIAL_SHORT
	Size    int64  `json:"size"`               // bytes
	GPTGUID string `json:"gpt_guid,omitempty"` // disk GUID this installation wrote
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

// Nix is the host's Nix: how it came, its version, and for the official
// release the tarball's sha256 (what was verified before it ran).
type Nix struct {
	Installer     string `json:"installer"` // "debian" or "official"
	Version       string `json:"version"`
	TarballSHA256 string `json:"tarball_sha256,omitempty"`
}
