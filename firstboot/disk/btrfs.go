package disk

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/nixpi/nixpi/firstboot/system"
)

// Subvolumes lists the subvolumes directly under a btrfs filesystem's top
// level, reading the unmounted device (nothing is mounted or written).
func Subvolumes(ctx context.Context, run system.Runner, btrfs, dev string) ([]string, error) {
	out, err := run.Output(ctx, btrfs, "inspect-internal", "dump-tree", "-t", "root", dev)
	if err != nil {
		return nil, fmt.Errorf("list the btrfs subvolumes on %q: %w", dev, err)
	}
	return ParseRootRefs(out), nil
}

// ParseRootRefs picks the names of the top level's ROOT_REF items out of
// `btrfs inspect-internal dump-tree -t root`:
//
//	item 4 key (FS_TREE ROOT_REF 256) itemoff 14930 itemsize 19
//		root ref key dirid 256 sequence 2 name @
func ParseRootRefs(data []byte) []string {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	inRef := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "item ") {
			inRef = strings.Contains(line, "(FS_TREE ROOT_REF ")
			continue
		}
		if inRef && strings.HasPrefix(line, "root ref key") {
			if _, name, ok := strings.Cut(line, " name "); ok {
				names = append(names, name)
			}
			inRef = false
		}
	}
	return names
}
