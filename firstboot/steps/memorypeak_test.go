package steps

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nixpi/nixpi/firstboot/engine"
)

func TestMemoryPeaks(t *testing.T) {
	t.Parallel()
	write := func(root, name, data string) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"both cgroups", map[string]string{
			"proc/self/cgroup": "0::/system.slice/nixpi-firstboot.service\n",
			"sys/fs/cgroup/system.slice/nixpi-firstboot.service/memory.peak":      "1610612736\n",
			"sys/fs/cgroup/system.slice/nixpi-firstboot.service/memory.swap.peak": "536870912\n",
			"sys/fs/cgroup/system.slice/nix-daemon.service/memory.peak":           "314572800\n",
		}, "memory peaks this boot: evaluation (this service) 1.5 GiB + 512.0 MiB swap; nix-daemon 300.0 MiB"},
		{"cgroup v1 only", map[string]string{"proc/self/cgroup": "12:memory:/system.slice/x\n"}, ""},
		{"no peak files (kernel before 5.19)", map[string]string{"proc/self/cgroup": "0::/system.slice/nixpi-firstboot.service\n"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for name, data := range c.files {
				write(root, name, data)
			}
			if got := memoryPeaks(&engine.Env{Root: root}); got != c.want {
				t.Errorf("memoryPeaks = %q, want %q", got, c.want)
			}
		})
	}
}
