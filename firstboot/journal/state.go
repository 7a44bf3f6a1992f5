package journal

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
}
