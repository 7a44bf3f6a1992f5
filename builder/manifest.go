package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
)

// Manifest records what went into a card, so a card can be traced back to
// its inputs and checked file by file. It is written as nixpi/manifest.json.
type Manifest struct {
	// NixpiVersion is assets.Version of the nixpi that wrote the card.
	NixpiVersion string `json:"nixpi_version"`
	// SourceDateEpoch is the time every written file carries, in Unix
	// seconds: SOURCE_DATE_EPOCH when set, else derived from the base.
	SourceDateEpoch int64 `json:"source_date_epoch"`
	// EpochFrom says where SourceDateEpoch came from.
	EpochFrom string        `json:"epoch_from"`
	Base      ManifestBase  `json:"base"`
	Config    ManifestInput `json:"config"`
	// Files are the files nixpi wrote or changed on the FAT partition,
	// sorted by path (the manifest itself excepted).
	Files []ManifestFile `json:"files"`
}

// ManifestBase is the base image and what nixpi found in it.
// Inputs are recorded by content only: a renamed base or config builds the
// same card.
type ManifestBase struct {
	// SHA256 is of the base as given (compressed or not).
	SHA256  string `json:"sha256"`
	Format  string `json:"format"`
	Arch    string `json:"arch"`
	BootDir string `json:"boot_dir"`
}

// ManifestInput is one input file.
type ManifestInput struct {
	SHA256 string `json:"sha256"`
}

// ManifestFile is one file nixpi put on the FAT partition.
type ManifestFile struct {
	Path   string `json:"path"`
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

// AddFile records a file written to the FAT partition at path.
func (m *Manifest) AddFile(path string, data []byte) {
	m.Files = append(m.Files, ManifestFile{Path: path, Size: len(data), SHA256: sha256Hex(data)})
}

// Marshal renders the manifest as indented JSON with files sorted by path,
// so equal manifests are equal bytes.
func (m *Manifest) Marshal() ([]byte, error) {
	sorted := *m
	sorted.Files = append([]ManifestFile(nil), m.Files...)
	sort.Slice(sorted.Files, func(i, j int) bool { return sorted.Files[i].Path < sorted.Files[j].Path })
	b, err := json.MarshalIndent(&sorted, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// ParseManifest reads a manifest.json written by Marshal.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &m, nil
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
