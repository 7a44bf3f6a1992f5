package flash

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nixpi/nixpi/builder/source"
)

// flashImage is IMAGE made ready to flash: a local raw file, the bmap to
// look for beside it, and the sha256 the file must have ("" when nothing
// says or the decoder checked it already).
type flashImage struct {
	path, bmap, sha256, checksumOrigin string
	remove                             func()
}

// openFlashImage takes IMAGE as build takes a base: a path or http(s)
// URL, raw or compressed, checked against --sha256 or IMAGE.sha256. A
// local raw image is used in place; anything else is decoded, sparsely,
// into a temporary file in tempDir (removed by remove), and checked as it
// is. A --sha256 is compared before anything is written, always.
func openFlashImage(ctx context.Context, opts Options, logf func(string, ...any)) (*flashImage, error) {
	src, err := source.Open(ctx, opts.Image, source.Options{SHA256: opts.SHA256, TempDir: opts.TempDir, Log: opts.Log})
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	defer src.Close()
	if src.Format == source.Raw && !source.IsURL(opts.Image) {
		img := &flashImage{path: opts.Image, bmap: opts.Image + ".bmap", sha256: src.Checksum, checksumOrigin: src.ChecksumOrigin, remove: func() {}}
		if opts.SHA256 != "" {
			// Asked for: compared before the disk is written, whatever
			// else (a .bmap's range hashes) checks the bytes written.
			if _, err := src.VerifyFirst(ctx); err != nil {
				return nil, fmt.Errorf("image: %w", err)
			}
			img.sha256 = ""
		}
		return img, nil
	}
	tmp, err := os.CreateTemp(opts.TempDir, ".nixpi-flash-*.img")
	if err != nil {
		return nil, fmt.Errorf("image: temporary file for the decoded image: %w (set TMPDIR to a directory with room)", err)
	}
	remove := func() { tmp.Close(); os.Remove(tmp.Name()) }
	logf("decoding %s (%s) into %s", opts.Image, src.Format, tmp.Name())
	st, err := src.WriteTo(ctx, tmp)
	if err != nil {
		remove()
		return nil, fmt.Errorf("image: %w", err)
	}
	if !st.Verified {
		logf("warning: nothing verifies %s (no --sha256, no .sha256 beside it); its sha256 is %s", opts.Image, st.InputSHA256)
	}
	img := &flashImage{path: tmp.Name(), remove: remove}
	if !source.IsURL(opts.Image) {
		// card.img.xz's bmap is card.img.bmap, as bmaptool looks for it.
		img.bmap = opts.Image + ".bmap"
		if ext := filepath.Ext(opts.Image); ext != "" && !exists(img.bmap) {
			img.bmap = strings.TrimSuffix(opts.Image, ext) + ".bmap"
		}
	}
	return img, nil
}
