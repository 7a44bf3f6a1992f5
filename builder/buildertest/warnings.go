package buildertest

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/nixpi/nixpi/builder/fixture"
)

// Warnings collects builder.Options.Warn messages, from any goroutine.
type Warnings struct {
	mu   sync.Mutex
	msgs []string
}

// Warn is an Options.Warn.
func (w *Warnings) Warn(msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

// Msgs is every message so far, in order.
func (w *Warnings) Msgs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

// WriteFixture writes a generated base with opts into a temporary directory.
func WriteFixture(t testing.TB, opts fixture.Options) *fixture.Image {
	t.Helper()
	img, err := fixture.WriteContext(context.Background(), filepath.Join(t.TempDir(), "base.img"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
