package builder

import (
	"context"
	"fmt"
	"os"

	"github.com/nixpi/nixpi/builder/source"
)

// baseCopy is the base image as given, once copied into the output.
type baseCopy struct {
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
	return baseCopy{SHA256: st.InputSHA256, Format: st.Format.String()}, nil
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
