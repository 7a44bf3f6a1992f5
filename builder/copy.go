package builder

import (
	"context"
	"fmt"
	"os"

	"github.com/nixpi/nixpi/builder/source"
)

// openBase opens the base image. A local raw image is validated before
// anything is copied, so the common mistakes cost no time. inputHashed
// receives the base's sha256 as soon as it is known (source.Options).
func openBase(ctx context.Context, opts Options, inputHashed func(string)) (*source.Source, error) {
	src, err := source.Open(ctx, opts.Base, source.Options{SHA256: opts.SHA256, Progress: opts.Progress, Log: opts.Log, InputHashed: inputHashed})
	if err != nil {
		return nil, err
	}
	if src.Format == source.Raw && !source.IsURL(opts.Base) {
		if err := validateLocalRaw(ctx, opts.Base); err != nil {
			src.Close()
			return nil, err
		}
	}
	return src, nil
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
