package steps

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
)

// memoryPeaks says how much memory and swap the evaluation (this service's
// cgroup: the nix client evaluates in-process) and the builds and downloads
// (nix-daemon's) have taken at most in this boot, from cgroup v2's
// memory.peak and memory.swap.peak. It is how a 1 GiB Pi's install is
// judged, and what an out-of-memory report needs. "" where the kernel has
// no such files.
func memoryPeaks(env *engine.Env) string {
	own, err := ownCgroup(env)
	if err != nil {
		return ""
	}
	var parts []string
	for _, g := range []struct{ name, dir string }{
		{"evaluation (this service)", own},
		{"nix-daemon", "/system.slice/" + nixDaemonUnit},
	} {
		dir := env.Path(path.Join("/sys/fs/cgroup", g.dir))
		mem, err := readCgroupBytes(path.Join(dir, "memory.peak"))
		if err != nil {
			continue
		}
		part := fmt.Sprintf("%s %s", g.name, config.Size(mem).Approx())
		if swap, err := readCgroupBytes(path.Join(dir, "memory.swap.peak")); err == nil {
			part += fmt.Sprintf(" + %s swap", config.Size(swap).Approx())
		}
		parts = append(parts, part)
	}
	if len(parts) == 0 {
		return ""
	}
	return "memory peaks this boot: " + strings.Join(parts, "; ")
}

// ownCgroup is this process's cgroup v2 path ("0::/system.slice/x.service").
func ownCgroup(env *engine.Env) (string, error) {
	data, err := os.ReadFile(env.Path("/proc/self/cgroup"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if g, ok := strings.CutPrefix(line, "0::"); ok && strings.HasPrefix(g, "/") {
			return path.Clean(g), nil
		}
	}
	return "", fmt.Errorf("no cgroup v2 entry in /proc/self/cgroup")
}

func readCgroupBytes(file string) (int64, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
}
