package builder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/journal"
)

// Card is a card or card image opened the one way inspect, report and
// restore-card read one: its partition table, its boot partition (partition
// 1 of an MBR, as a Pi's firmware looks for it) and the FAT on it. What
// cannot be read is kept as a reason, not an error, so inspect can still
// show the rest.
type Card struct {
	Path  string
	Size  int64
	Table *baseimage.Table
	// Boot is the FAT partition; FAT is its filesystem, nil when FATErr
	// says why it could not be opened.
	Boot   baseimage.Partition
	FAT    *fatfs.FS
	FATErr error
	file   *os.File
}

// OpenCard opens the image or card at path read-only: nothing on it changes.
// It fails when path is not a disk image at all (no partition table); a
// table without a readable FAT gives a Card whose FATErr says so.
func OpenCard(path string) (*Card, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", path, err)
	}
	c, err := readCard(f, path, false)
	if err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

// readCard reads the table and the FAT of the card open in f; with write,
// the FAT is opened for writing (restore-card).
func readCard(f *os.File, path string, write bool) (*Card, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%q is a directory, not an image: pass a card image file or the card's device (e.g. /dev/sdX)", path)
	}
	size := st.Size()
	if !st.Mode().IsRegular() {
		if size, err = f.Seek(0, 2); err != nil {
			return nil, fmt.Errorf("size of %q: %w", path, err)
		}
	}
	table, err := baseimage.ReadTable(f)
	if err != nil {
		return nil, fmt.Errorf("%q: %w: is it a Raspberry Pi card or card image?", path, err)
	}
	c := &Card{Path: path, Size: size, Table: table, file: f}
	switch c.Boot, err = table.CardFAT(); {
	case table.GPT:
		c.FATErr = errors.New("GPT partition table: Raspberry Pi OS cards use MBR, so the FAT partition is not examined")
	case err != nil:
		c.FATErr = err
	case c.Boot.End() > size:
		c.FATErr = fmt.Errorf("partition 1 ends at byte %d, past the end of the card (%d bytes): the image is truncated or the flash was cut short", c.Boot.End(), size)
	case write:
		c.FAT, err = fatfs.Open(f, c.Boot.Start, c.Boot.Size)
	default:
		c.FAT, err = fatfs.OpenReadOnly(f, c.Boot.Start, c.Boot.Size)
	}
	if c.FATErr == nil && err != nil {
		c.FATErr = fmt.Errorf("partition 1: %w", err)
	}
	return c, nil
}

// Close closes the card (and, opened for writing, its FAT first).
func (c *Card) Close() error {
	var err error
	if c.FAT != nil {
		err = c.FAT.Close()
	}
	return errors.Join(err, c.file.Close())
}

// NeedFAT is the card's FAT, or why it has none as an error naming the card.
func (c *Card) NeedFAT() (*fatfs.FS, error) {
	if c.FAT == nil {
		return nil, fmt.Errorf("%q: %w: it is not a usable Raspberry Pi card", c.Path, c.FATErr)
	}
	return c.FAT, nil
}

// MaxCardFile bounds every whole file read from a card nixpi did not write
// (config, manifest, install log): a hostile card cannot fill memory. The
// journal is bounded per line instead (journal.MaxLine), up to MaxJournal.
const MaxCardFile = 64 << 20

// MaxJournal bounds the journal file: a long install writes a few hundred
// KiB; this leaves room for thousands of boots.
const MaxJournal = 256 << 20

// ReadFile reads name from the card's FAT, at most MaxCardFile bytes; a
// missing file is an error wrapping fs.ErrNotExist.
func (c *Card) ReadFile(name string) ([]byte, error) {
	return c.readAtMost(name, MaxCardFile)
}

func (c *Card) readAtMost(name string, limit int64) ([]byte, error) {
	fsys, err := c.NeedFAT()
	if err != nil {
		return nil, err
	}
	return fsys.ReadFileAtMost(name, limit)
}

// Journal reads the install journal, each line bounded by journal.MaxLine:
// a line too long is reported in Journal.TooLong and the rest still read.
// A card without one gives an error wrapping fs.ErrNotExist.
func (c *Card) Journal() (*journal.Journal, error) {
	data, err := c.readAtMost(cardpath.Journal, MaxJournal)
	if err != nil {
		return nil, err
	}
	return journal.Read(bytes.NewReader(data))
}

// HasJournal says whether the card holds an install journal.
func (c *Card) HasJournal() bool { return c.FAT != nil && c.FAT.Exists(cardpath.Journal) }

// BootProblems says what keeps the card from booting Raspberry Pi OS on a
// Pi 4, each with what to do: no FAT, start4.elf or its boot files missing
// or no root filesystem partition (a flash cut short). Empty when it can
// boot, and for a card the hand-over retired, which is not meant to.
func (c *Card) BootProblems(retired bool) []string {
	const reflash = "reflash it: nixpi flash IMAGE DEVICE"
	if c.FAT == nil {
		return []string{fmt.Sprintf("the card cannot boot: no readable FAT boot partition (%v); %s", c.FATErr, reflash)}
	}
	if retired {
		// Not booting is what the hand-over meant; restore-card checks
		// that what it puts back boots.
		return nil
	}
	var out, missing []string
	for _, name := range []string{"start4.elf", "fixup4.dat", cardpath.ConfigTxt, cardpath.Cmdline} {
		if e, err := c.FAT.Stat(name); err != nil || e.IsDir {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		out = append(out, fmt.Sprintf("the card cannot boot: %s missing from the FAT partition; %s", strings.Join(missing, ", "), reflash))
	}
	if why := c.rootProblem(); why != "" {
		out = append(out, fmt.Sprintf("the card cannot boot: %s; %s", why, reflash))
	}
	return out
}

// rootProblem says why partition 2 holds no root filesystem, "" when it
// does: an ext4 superblock inside the card.
func (c *Card) rootProblem() string {
	p, ok := c.Table.Partition(2)
	switch {
	case !ok:
		return "no partition 2, the root filesystem (an interrupted flash or a card partitioned by something else)"
	case p.Type != 0x83:
		return fmt.Sprintf("partition 2 has type 0x%02x, not a Linux root filesystem (0x83)", p.Type)
	case p.End() > c.Size:
		return fmt.Sprintf("partition 2 ends at byte %d, past the end of the card (%d bytes): the image is truncated", p.End(), c.Size)
	}
	sb := make([]byte, 2)
	if _, err := c.file.ReadAt(sb, p.Start+1024+0x38); err != nil {
		return fmt.Sprintf("partition 2 cannot be read: %v", err)
	}
	if binary.LittleEndian.Uint16(sb) != 0xef53 {
		return "partition 2 holds no ext4 root filesystem (an interrupted flash writes the partition table before the filesystem)"
	}
	return ""
}
