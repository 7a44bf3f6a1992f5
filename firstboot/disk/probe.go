package disk

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nixpi/nixpi/firstboot/system"
)

// Signature is one on-disk signature wipefs found (a partition table or a
// filesystem) at the start of a device, not inside its partitions.
type Signature struct {
	Offset string `json:"offset"`
	Type   string `json:"type"`
	UUID   string `json:"uuid"`
	Label  string `json:"label"`
}

func (s Signature) String() string { return s.name() + " at " + s.Offset }

// name is the type, label and UUID: `ext4 label "data" uuid 0e4b...`.
func (s Signature) name() string {
	var b strings.Builder
	b.WriteString(s.Type)
	if s.Label != "" {
		fmt.Fprintf(&b, " label %q", s.Label)
	}
	if s.UUID != "" {
		fmt.Fprintf(&b, " uuid %s", s.UUID)
	}
	return b.String()
}

// IsPartitionTable tells a partition table signature from a filesystem one.
func (s Signature) IsPartitionTable() bool {
	switch s.Type {
	case "gpt", "PMBR", "dos", "atari", "bsd", "mac", "sun", "sgi", "aix", "ultrix":
		return true
	}
	return false
}

// ParseWipefs parses `wipefs --no-act --json` output (empty when there is
// no signature).
func ParseWipefs(data []byte) ([]Signature, error) {
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil, nil
	}
	var out struct {
		Signatures []Signature `json:"signatures"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("parse wipefs output: %w", err)
	}
	return out.Signatures, nil
}

// Signatures lists the signatures on dev without changing anything. wipefs
// reads the device itself (no udev cache), which is what a safety check needs.
func Signatures(ctx context.Context, run system.Runner, wipefs, dev string) ([]Signature, error) {
	out, err := run.Output(ctx, wipefs, "--no-act", "--json", dev)
	if err != nil {
		return nil, fmt.Errorf("look for signatures on %q: %w", dev, err)
	}
	return ParseWipefs(out)
}

// Table is a partition table as `sfdisk --json` reads it back.
type Table struct {
	Label      string      `json:"label"` // "gpt" or "dos"
	ID         string      `json:"id"`    // GPT disk GUID or "0x" + MBR disk id
	SectorSize int64       `json:"sectorsize"`
	Partitions []TablePart `json:"partitions"`
}

// TablePart is one partition of a Table.
type TablePart struct {
	Node  string `json:"node"`
	Start int64  `json:"start"`
	Size  int64  `json:"size"`
	Type  string `json:"type"`
	UUID  string `json:"uuid"`
	Name  string `json:"name"`
	// Bootable is the MBR's active flag (0x80), which U-Boot's boot scan
	// prefers; sfdisk reports it for MBR only.
	Bootable bool `json:"bootable,omitempty"`
}

// ParseSfdisk parses `sfdisk --json` output.
func ParseSfdisk(data []byte) (*Table, error) {
	var out struct {
		PartitionTable *Table `json:"partitiontable"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("parse sfdisk output: %w", err)
	}
	if out.PartitionTable == nil {
		return nil, fmt.Errorf("parse sfdisk output: no partition table in it")
	}
	return out.PartitionTable, nil
}

// ReadTable reads dev's partition table, or returns nil when wipefs finds
// none (sfdisk fails on a disk without one, and on a GPT whose primary is
// damaged: a backup alone is no table to read but a signature to report).
func ReadTable(ctx context.Context, run system.Runner, tools system.Tools, dev string) (*Table, []Signature, error) {
	sigs, err := Signatures(ctx, run, tools.Wipefs, dev)
	if err != nil {
		return nil, nil, err
	}
	hasTable := false
	for _, s := range sigs {
		if (s.Type == "gpt" && !s.IsBackupGPT()) || s.Type == "dos" {
			hasTable = true
		}
	}
	if !hasTable {
		return nil, sigs, nil
	}
	out, err := run.Output(ctx, tools.Sfdisk, "--json", dev)
	if err != nil {
		return nil, sigs, fmt.Errorf("read the partition table of %q: %w", dev, err)
	}
	t, err := ParseSfdisk(out)
	return t, sigs, err
}
