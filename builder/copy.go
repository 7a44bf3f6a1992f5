package builder

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"

	"github.com/nixpi/nixpi/builder/source"
)

// baseCopy is the base image as given, once copied into the output.
type baseCopy struct {
	Name   string // file name of the path or URL
	SHA256 string // of the input as given (compressed)
	Format string
}

// copyBase decompresses the base into dst (sparse) and verifies its
// checksum. A local raw image is validated before the copy, so the common
// mistakes cost no time.
func copyBase(ctx context.Context, opts Options, dst *os.File) (baseCopy, error) {
	src, err := source.Open(ctx, opts.Base, source.Options{SHA256: opts.SHA256, Progress: opts.Progress, Log: opts.Log})
	if err != nil {
		return baseCopy{}, err
	}
	defer src.Close()
	if src.Format == source.Raw && !source.IsURL(opts.Base) {
		if err := validateLocalRaw(ctx, opts.Base); err != nil {
			return baseCopy{}, err
		}
	}
	st, err := src.WriteTo(ctx, dst)
	if err != nil {
		return baseCopy{}, err
	}
	return baseCopy{Name: baseName(opts.Base), SHA256: st.InputSHA256, Format: st.Format.String()}, nil
}

func validateLocalRaw(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open base image: %w", err)
	}
	defer f.Close()
	_, err = identifyBase(ctx, f)
	return err
}

// baseName is the file name of a path or URL, for the manifest: the
// directory it was built from does not change the card.
func baseName(src string) string {
	if source.IsURL(src) {
		if u, err := url.Parse(src); err == nil {
			return path.Base(u.Path)
		}
	}
	return filepath.Base(src)
}
