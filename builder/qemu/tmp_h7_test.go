package qemu

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixpi/nixpi/firstboot/system"
)

func TestTmpAssembleExp(t *testing.T) {
	root := os.Getenv("H7_ROOT")
	if root == "" {
		t.Skip()
	}
	work := t.TempDir()
	b := &BaseBuilder{Recipe: DefaultBaseRecipe(), Run: system.ExecRunner{Log: func(l string) { t.Log(l) }}, Tools: DefaultTools(), Log: t.Logf}
	key := b.Recipe.Key()
	fatTree := filepath.Join(work, "bootfs")
	if err := b.layout(root, fatTree, key[:8]); err != nil {
		t.Fatal(err)
	}
	if err := b.filesystems(context.Background(), root, fatTree, filepath.Join(work, "f.img"), filepath.Join(work, "r.img"), key); err != nil {
		t.Fatal(err)
	}
	if err := b.assemble(work, filepath.Join(work, "f.img"), filepath.Join(work, "r.img"), key[:8], os.Getenv("H7_OUT")); err != nil {
		t.Fatal(err)
	}
}
