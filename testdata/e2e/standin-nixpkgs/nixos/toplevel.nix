# The stand-in's config.system.build.toplevel: a toy system with the layout
# of a NixOS toplevel (init, kernel, initrd, dtbs, kernel-params,
# nixos-version, etc, bin/switch-to-configuration), whose etc files come from
# the evaluated configuration, so a check can see that it was evaluated.
{ lib, pkgs, config }:
let
  inherit (builtins) attrNames concatStringsSep filter isBool isList length toString;
  inherit (lib) concatMapStrings mapAttrsToList optionalString;
  cfg = config;
  extlinux = cfg.boot.loader.generic-extlinux-compatible;
  kernel = cfg.boot.kernelPackages.kernel;
  release = lib.version;
  nixosVersion = "${release}.stand-in.${builtins.substring 0 7 lib.trivial.revision}";

  failed = filter (a: !a.ok) [
    { ok = cfg.fileSystems ? "/"; msg = "the root file system is not specified: set fileSystems.\"/\""; }
    { ok = !cfg.boot.loader.grub.enable; msg = "the stand-in models only the extlinux boot loader: set boot.loader.grub.enable = false"; }
    { ok = extlinux.enable; msg = "no boot loader: set boot.loader.generic-extlinux-compatible.enable = true"; }
    { ok = cfg.system.stateVersion != null; msg = "system.stateVersion is not set"; }
    { ok = cfg.boot.initrd.availableKernelModules != [ ]; msg = "boot.initrd.availableKernelModules is empty: stage 1 would not find the USB disk"; }
  ];
  assertOk = x: if failed == [ ] then x
    else throw "stand-in nixpkgs: Failed assertions:\n${concatMapStrings (a: "- ${a.msg}\n") failed}";

  settingValue = v: if isBool v then (if v then "true" else "false") else if isList v then concatStringsSep " " (map toString v) else toString v;

  etcFiles = {
    "hostname" = cfg.networking.hostName + "\n";
    "locale.conf" = "LANG=${cfg.i18n.defaultLocale}\n";
    "vconsole.conf" = "KEYMAP=${cfg.console.keyMap}\n";
    "nixos/stand-in-timezone" = "${toString cfg.time.timeZone}\n";
    "fstab" = "# This is a generated file.  Do not edit!\n"
      + concatMapStrings (path: let fs = cfg.fileSystems.${path}; in
          "${fs.device} ${path} ${fs.fsType} ${concatStringsSep "," fs.options} 0 0\n") (attrNames cfg.fileSystems)
      + concatMapStrings (sw: "${sw.device} none swap defaults 0 0\n") cfg.swapDevices;
    "nix/nix.conf" = concatMapStrings (n: "${n} = ${settingValue cfg.nix.settings.${n}}\n") (attrNames cfg.nix.settings);
    # The users as the stand-in records them: the password hash stays in its
    # file on the SSD, only the file's name is here.
    "stand-in-users" = concatMapStrings (n: let u = cfg.users.users.${n}; in
      "${n} normal=${if u.isNormalUser then "yes" else "no"} groups=${concatStringsSep "," u.extraGroups} hashedPasswordFile=${toString u.hashedPasswordFile}\n")
      (attrNames cfg.users.users);
    "tmpfiles.d/00-nixos.conf" = concatMapStrings (r: r + "\n") cfg.systemd.tmpfiles.rules;
  }
  // builtins.listToAttrs (map (n: { name = "ssh/authorized_keys.d/${n}"; value = concatMapStrings (k: k + "\n") cfg.users.users.${n}.openssh.authorizedKeys.keys; })
    (filter (n: cfg.users.users.${n}.openssh.authorizedKeys.keys != [ ]) (attrNames cfg.users.users)))
  // (if cfg.services.openssh.enable then { "ssh/sshd_config" = "# stand-in sshd_config\nPasswordAuthentication no\n"; } else { })
  // (if cfg.networking.wireless.enable then {
    "wpa_supplicant.conf" = cfg.networking.wireless.extraConfig + "\n"
      + optionalString (cfg.networking.wireless.secretsFile != null) "ext_password_backend=file:${cfg.networking.wireless.secretsFile}\n"
      + concatMapStrings (ssid: let n = cfg.networking.wireless.networks.${ssid}; in
          "network={\n  ssid=\"${ssid}\"\n${optionalString (n.pskRaw != null) "  psk=${n.pskRaw}\n"}${optionalString n.hidden "  scan_ssid=1\n"}}\n")
        (attrNames cfg.networking.wireless.networks);
  } else { })
  // builtins.mapAttrs (_: e: e.text) cfg.environment.etc;

  etc = pkgs.runCommand "etc-stand-in" { } (concatMapStrings (name: ''
    mkdir -p "$out/etc/$(dirname ${name})"
    ln -s ${pkgs.writeText (builtins.replaceStrings [ "/" ] [ "-" ] name) etcFiles.${name}} "$out/etc/${name}"
  '') (attrNames etcFiles));

  initrd = pkgs.runCommand "initrd-stand-in-${kernel.version}" { modules = cfg.boot.initrd.availableKernelModules; } ''
    mkdir $out
    { echo "stand-in initrd for ${kernel.version} (test data, not an initrd)"
      for m in $modules; do echo "module $m"; done
      ${optionalString cfg.boot.initrd.systemd.tpm2.enable "echo module tpm_tis"}
    } > $out/initrd
  '';

  init = pkgs.writeScript "stand-in-init" ''
    #!${pkgs.busybox}/bin/sh
    echo "stand-in NixOS init of ${nixosVersion}: test data for nixpi's QEMU run; this toy system does not boot" >&2
    exit 1
  '';

  extlinuxConfBuilder = pkgs.runCommand "extlinux-conf-builder-stand-in.sh" { src = ./extlinux-conf-builder.sh; } ''
    { echo "#!${pkgs.busybox}/bin/sh"; cat $src; } > $out
    chmod 0755 $out
  '';

  switchToConfiguration = ''
    #!${pkgs.busybox}/bin/sh
    # stand-in switch-to-configuration (test data for nixpi's QEMU run): it
    # activates nothing; "boot" and "switch" install the boot loader.
    set -e
    export PATH=${pkgs.busybox}/bin
    case "$1" in
      boot|switch) ;;
      test|dry-activate) echo "stand-in switch-to-configuration: nothing to activate"; exit 0 ;;
      *) echo "usage: $0 [switch|boot|test|dry-activate]" >&2; exit 1 ;;
    esac
    exec ${extlinuxConfBuilder} -t ${toString cfg.boot.loader.timeout} -c @out@ -d /boot -g ${toString extlinux.configurationLimit}
  '';
in
assertOk (pkgs.runCommand "nixos-system-${cfg.networking.hostName}-${nixosVersion}" {
  inherit switchToConfiguration;
  passAsFile = [ "switchToConfiguration" ];
  kernelParams = [ "loglevel=4" ] ++ cfg.boot.kernelParams;
} ''
  mkdir -p $out/bin
  ln -s ${init} $out/init
  ln -s ${kernel}/Image $out/kernel
  ln -s ${kernel}/dtbs $out/dtbs
  ln -s ${kernel}/lib/modules $out/kernel-modules
  ln -s ${initrd}/initrd $out/initrd
  ln -s ${etc}/etc $out/etc
  echo -n "$kernelParams" > $out/kernel-params
  echo -n "${nixosVersion}" > $out/nixos-version
  echo -n "${pkgs.system}" > $out/system
  sed "s|@out@|$out|g" "$switchToConfigurationPath" > $out/bin/switch-to-configuration
  chmod 0755 $out/bin/switch-to-configuration
'')
