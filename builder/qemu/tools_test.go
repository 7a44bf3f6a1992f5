package qemu

import (
	"strings"
	"testing"
)

func TestCheckNamesPackages(t *testing.T) {
	t.Parallel()
	err := Check("/bin/sh", "/nonexistent/mcopy", "/nonexistent/mtype", "/nonexistent/qemu-system-aarch64", "/nonexistent/whatever")
	if err == nil {
		t.Fatal("missing tools were not reported")
	}
	msg := err.Error()
	for _, want := range []string{"/nonexistent/mcopy", "/nonexistent/whatever", "apt-get install -y mtools qemu-system-arm"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Count(msg, "mtools") != 1 {
		t.Errorf("a package is named twice: %q", msg)
	}
	if err := Check("/bin/sh"); err != nil {
		t.Errorf("present tool reported: %v", err)
	}
}
