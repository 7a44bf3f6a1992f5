package nixos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
)

// declaredIn names, for every option path the templates set, the nixpkgs
// file that declares it (paths in github.com/NixOS/nixpkgs). Built by
// reading those files (nixos-unstable / 26.05 era) with the code index;
// "<name>" is an attribute-set entry, "*" a list entry.
var declaredIn = map[string]string{
	"nixpkgs.hostPlatform": "nixos/modules/misc/nixpkgs.nix",

	"boot.loader.grub.enable":                                    "nixos/modules/system/boot/loader/grub/grub.nix",
	"boot.loader.generic-extlinux-compatible.enable":             "nixos/modules/system/boot/loader/generic-extlinux-compatible/default.nix",
	"boot.loader.generic-extlinux-compatible.configurationLimit": "nixos/modules/system/boot/loader/generic-extlinux-compatible/default.nix",
	"boot.kernelPackages":                                        "nixos/modules/system/boot/kernel.nix",
	"boot.initrd.availableKernelModules":                         "nixos/modules/system/boot/kernel.nix",
	"boot.initrd.systemd.tpm2.enable":                            "nixos/modules/system/boot/systemd/tpm2.nix",
	"hardware.enableRedistributableFirmware":                     "nixos/modules/hardware/all-firmware.nix",
	"hardware.deviceTree.filter":                                 "nixos/modules/hardware/device-tree.nix",
	"boot.kernelParams":                                          "nixos/modules/system/boot/kernel.nix",

	"fileSystems.<name>.device":  "nixos/modules/tasks/filesystems.nix",
	"fileSystems.<name>.fsType":  "nixos/modules/tasks/filesystems.nix",
	"fileSystems.<name>.options": "nixos/modules/tasks/filesystems.nix",
	"swapDevices.*.device":       "nixos/modules/config/swap.nix",
	"swapDevices":                "nixos/modules/config/swap.nix", // [ ]: no swap

	"networking.hostName": "nixos/modules/tasks/network-interfaces.nix",
	"time.timeZone":       "nixos/modules/config/locale.nix",
	"i18n.defaultLocale":  "nixos/modules/config/i18n.nix",
	"console.keyMap":      "nixos/modules/config/console.nix",

	"users.users.<name>.isNormalUser":                "nixos/modules/config/users-groups.nix",
	"users.users.<name>.extraGroups":                 "nixos/modules/config/users-groups.nix",
	"users.users.<name>.hashedPasswordFile":          "nixos/modules/config/users-groups.nix",
	"users.users.<name>.openssh.authorizedKeys.keys": "nixos/modules/services/networking/ssh/sshd.nix",
	"security.sudo.wheelNeedsPassword":               "nixos/modules/security/sudo.nix",
	"services.openssh.enable":                        "nixos/modules/services/networking/ssh/sshd.nix",

	"networking.wireless.enable":                 "nixos/modules/services/networking/wpa_supplicant.nix",
	"networking.wireless.extraConfig":            "nixos/modules/services/networking/wpa_supplicant.nix",
	"networking.wireless.secretsFile":            "nixos/modules/services/networking/wpa_supplicant.nix",
	"networking.wireless.networks.<name>.pskRaw": "nixos/modules/services/networking/wpa_supplicant.nix",
	"networking.wireless.networks.<name>.hidden": "nixos/modules/services/networking/wpa_supplicant.nix",
	"systemd.tmpfiles.rules":                     "nixos/modules/system/boot/systemd/tmpfiles.nix",

	// The confirm unit: systemd.services (nixos/modules/system/boot/systemd.nix)
	// is attrsOf the unit options of nixos/lib/systemd-unit-options.nix;
	// unitConfig and serviceConfig are free-form unit file sections.
	"systemd.services.<name>.description":                    "nixos/lib/systemd-unit-options.nix",
	"systemd.services.<name>.wantedBy":                       "nixos/lib/systemd-unit-options.nix",
	"systemd.services.<name>.wants":                          "nixos/lib/systemd-unit-options.nix",
	"systemd.services.<name>.after":                          "nixos/lib/systemd-unit-options.nix",
	"systemd.services.<name>.unitConfig.ConditionPathExists": "nixos/lib/systemd-unit-options.nix",
	"systemd.services.<name>.serviceConfig.Type":             "nixos/lib/systemd-unit-options.nix",
	"systemd.services.<name>.serviceConfig.ExecStart":        "nixos/lib/systemd-unit-options.nix",

	// nix.settings is a freeform submodule; these four are declared in it,
	// experimental-features is freeform (any nix.conf setting).
	"nix.settings.experimental-features": "nixos/modules/config/nix.nix",
	"nix.settings.substituters":          "nixos/modules/config/nix.nix",
	"nix.settings.trusted-public-keys":   "nixos/modules/config/nix.nix",
	"nix.settings.max-jobs":              "nixos/modules/config/nix.nix",
	"nix.settings.cores":                 "nixos/modules/config/nix.nix",

	"system.stateVersion": "nixos/modules/misc/version.nix",

	// nixos-rebuild after the install: nix.nixPath (listOf str) and the
	// internal system.defaultChannel (str, seeds /root/.nix-channels through
	// a tmpfiles rule) are both declared in nix-channel.nix.
	"nix.nixPath": "nixos/modules/config/nix-channel.nix",

	// documentation.nixos.enable: bool, default true (its options
	// reference evaluates every option).
	"documentation.nixos.enable": "nixos/modules/misc/documentation.nix",
	"system.defaultChannel":      "nixos/modules/config/nix-channel.nix",
}

// removedOptions must never be set: removed (a failed assertion) or renamed
// (a warning) in current nixpkgs; see nixos/modules/rename.nix,
// nixos/modules/system/boot/tmp.nix, the sshd and wpa_supplicant modules.
var removedOptions = []string{
	"boot.loader.raspberryPi",
	"boot.tmpOnTmpfs",
	"boot.tmpOnTmpfsSize",
	"boot.cleanTmpDir",
	"services.openssh.passwordAuthentication",
	"services.openssh.permitRootLogin",
	"users.users.<name>.passwordFile",
	"networking.wireless.environmentFile",
	"sound.enable",
	// renamed to documentation.man.cache.enable (documentation.nix).
	"documentation.man.generateCaches",
}

// attrsOfNames are the options whose attribute names are entries (a file
// system's mount point, a user's name), not option names.
var attrsOfNames = []string{"fileSystems", "users.users", "networking.wireless.networks", "systemd.services"}

// optionPaths lists the option paths a module's evaluated value sets.
func optionPaths(v map[string]any) []string {
	var paths []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if x["_type"] == "override" {
				walk(prefix, x["content"]) // lib.mkDefault VALUE
				return
			}
			for k, sub := range x {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				for _, a := range attrsOfNames {
					if prefix == a {
						p = prefix + ".<name>"
					}
				}
				walk(p, sub)
			}
		case []any:
			if len(x) > 0 {
				if _, ok := x[0].(map[string]any); ok {
					for _, e := range x {
						walk(prefix+".*", e)
					}
					return
				}
			}
			paths = append(paths, prefix)
		default:
			paths = append(paths, prefix)
		}
	}
	walk("", v)
	sort.Strings(paths)
	return slices.Compact(paths)
}

// checkOptions says what is wrong with the option paths a module sets.
func checkOptions(paths []string) []string {
	var problems []string
	for _, p := range paths {
		for _, r := range removedOptions {
			if p == r || strings.HasPrefix(p, r+".") {
				problems = append(problems, fmt.Sprintf("%s is a removed or renamed option (%s)", p, r))
			}
		}
		if _, ok := declaredIn[p]; !ok {
			problems = append(problems, fmt.Sprintf("%s is not in declaredIn: find the nixpkgs file that declares it and add it, or stop setting it", p))
		}
	}
	return problems
}

// The checker itself: a removed option and an unknown one are caught, and
// entries of attribute sets and lists are named generically.
func TestCheckOptionsCatches(t *testing.T) {
	t.Parallel()
	v := map[string]any{
		"boot":        map[string]any{"loader": map[string]any{"raspberryPi": map[string]any{"enable": true}}, "tmpOnTmpfs": true},
		"fileSystems": map[string]any{"/nix": map[string]any{"device": "x"}},
		"swapDevices": []any{map[string]any{"device": "y"}},
		"services":    map[string]any{"foo": map[string]any{"enable": true}},
	}
	paths := optionPaths(v)
	want := []string{"boot.loader.raspberryPi.enable", "boot.tmpOnTmpfs", "fileSystems.<name>.device", "services.foo.enable", "swapDevices.*.device"}
	if strings.Join(paths, " ") != strings.Join(want, " ") {
		t.Fatalf("optionPaths = %q, want %q", paths, want)
	}
	got := strings.Join(checkOptions(paths), "\n")
	for _, w := range []string{"boot.loader.raspberryPi.enable is a removed or renamed option", "boot.tmpOnTmpfs is a removed", "services.foo.enable is not in declaredIn"} {
		if !strings.Contains(got, w) {
			t.Errorf("checkOptions missed %q:\n%s", w, got)
		}
	}
	if strings.Contains(got, "fileSystems") || strings.Contains(got, "swapDevices") {
		t.Errorf("checkOptions complained about declared options:\n%s", got)
	}
}
