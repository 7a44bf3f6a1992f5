package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/nixpi/nixpi/firstboot/inputfile"
)

// checkImageArg refuses, before any reader opens it, what cannot be a card
// image or a card: a directory, an empty file, a FIFO or character device
// (/dev/null, /dev/zero), which would otherwise block or fail deep inside
// with an ioctl message.
func checkImageArg(path string) error {
	st, err := os.Stat(path)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%q: %w", path, pe.Err)
	}
	if err != nil {
		return err
	}
	switch m := st.Mode(); {
	case m.IsDir():
		return fmt.Errorf("%q is a directory, not an image: pass a card image file or the card's device (e.g. /dev/sdX)", path)
	case m.IsRegular():
		if st.Size() == 0 {
			return fmt.Errorf("%q is empty: not a card image (was the copy or download cut short?)", path)
		}
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0: // a block device: a card
	default:
		return fmt.Errorf("%q is %s: pass a card image file or the card's device (e.g. /dev/sdX)", path, inputfile.Kind(m))
	}
	return nil
}
