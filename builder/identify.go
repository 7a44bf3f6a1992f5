package builder

import (
	"context"
	"fmt"
	"os"

	"github.com/nixpi/nixpi/builder/baseimage"
)

// identifyBase validates the image in f (read only) and says what it is:
// partitions, userland architecture, where its FAT is mounted.
func identifyBase(ctx context.Context, f *os.File) (*baseimage.Base, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	return baseimage.Inspect(f, st.Size())
}
