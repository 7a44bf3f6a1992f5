package qemu

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

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

func TestTmpBootPanic(t *testing.T) {
	kernel := os.Getenv("H7_KERNEL")
	if kernel == "" {
		t.Skip()
	}
	dir := t.TempDir()
	fat := filepath.Join(dir, "fat.img")
	r := system.ExecRunner{Log: func(l string) { t.Log(l) }}
	ctx := context.Background()
	if _, err := r.Output(ctx, "mkfs.fat", "-F", "32", "-C", fat, "102400"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "cmdline.txt"), []byte("console=serial0,115200 console=tty1 panic=1\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "config.txt"), []byte("arm_64bit=1\n"), 0o644)
	data, _ := os.ReadFile(kernel)
	os.WriteFile(filepath.Join(dir, "kernel8.img"), data, 0o644)
	if _, err := r.Output(ctx, "mcopy", "-i", fat, filepath.Join(dir, "cmdline.txt"), filepath.Join(dir, "config.txt"), filepath.Join(dir, "kernel8.img"), "::"); err != nil {
		t.Fatal(err)
	}
	card := filepath.Join(dir, "card.img")
	f, _ := os.Create(card)
	f.Truncate(101<<20 + 1<<20)
	f.WriteAt(EncodeMBR(0x12345678, []Partition{{Type: 0x0c, Offset: 1 << 20, Size: 100 << 20}}), 0)
	copySparse(f, 1<<20, fat)
	f.Close()
	ssd := filepath.Join(dir, "ssd.img")
	NewBlankDisk(ssd, 1<<30)
	v := &VM{Card: card, SSD: ssd, SSDSerial: "X1", MemoryMiB: 512, CPUs: 1, Dir: dir, Run: r, Tools: DefaultTools(), Log: t.Logf}
	res, err := v.Boot(ctx, 1, 3*time.Minute, func(line string) Action { return Continue })
	t.Logf("%+v %v", res, err)
	data, _ = os.ReadFile(res.Console)
	t.Logf("console tail: %s", data[max(0, len(data)-2000):])
}
