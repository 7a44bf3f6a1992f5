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
    # nix-channel.nix adds the channel rule; NIX_PATH reaches shells and
    # sudo through set-environment (environment.sessionVariables).
    "tmpfiles.d/00-nixos.conf" = concatMapStrings (r: r + "\n")
      (cfg.systemd.tmpfiles.rules ++ [ "f /root/.nix-channels - - - - ${cfg.system.defaultChannel} nixos\\n" ]);
    "set-environment" = "# stand-in set-environment (test data for nixpi's QEMU run)\n"
      + "export NIX_PATH=\"${concatStringsSep ":" cfg.nix.nixPath}\"\n";
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

  # What the configuration asks stage 1 to carry; the bootable stand-in loads
  # the QEMU machine's modules instead (StandInModules in builder/qemu).
  initrdModules = "initrd modules the configuration asks for: ${concatStringsSep " " cfg.boot.initrd.availableKernelModules}"
    + optionalString cfg.boot.initrd.systemd.tpm2.enable " tpm_tis (boot.initrd.systemd.tpm2.enable)";

  # The filesystems as "DEVICE MOUNTPOINT FSTYPE OPTIONS" lines, parents
  # first (attrNames sorts "/" before "/nix"). Stage 1 mounts those NixOS
  # needs for boot (its pathsNeededForBoot, or neededForBoot); stage 2 the
  # rest.
  pathsNeededForBoot = [ "/" "/nix" "/nix/store" "/var" "/var/log" "/var/lib" "/var/lib/nixos" "/etc" "/usr" ];
  mountLines = pred: concatMapStrings (path: let fs = cfg.fileSystems.${path}; in
      optionalString (pred path fs) "${fs.device} ${path} ${fs.fsType} ${concatStringsSep "," fs.options}\n")
    (attrNames cfg.fileSystems);
  earlyMounts = pkgs.writeText "stand-in-early-mounts"
    (mountLines (path: fs: fs.neededForBoot || builtins.elem path pathsNeededForBoot));
  mounts = pkgs.writeText "stand-in-mounts" (mountLines (_: _: true));
  swaps = pkgs.writeText "stand-in-swaps" (concatMapStrings (sw: "${sw.device}\n") cfg.swapDevices);
  fsLib = pkgs.writeText "stand-in-fs.sh" (builtins.readFile ./stand-in-fs.sh);

  # The units stage 2 starts: enabled, wanted by multi-user.target, each a
  # script that runs its ExecStart (a string, or a list run in order) with
  # busybox sh -c, or its script.
  units = lib.filterAttrs (_: u: u.enable && builtins.elem "multi-user.target" u.wantedBy) cfg.systemd.services;
  asList = v: if v == null then [ ] else if isList v then v else [ v ];
  unitScript = name: u: let execs = asList (u.serviceConfig.ExecStart or null); in
    pkgs.writeScript "stand-in-unit-${name}" ''
      #!${pkgs.busybox}/bin/sh
      # stand-in systemd unit ${name} (test data for nixpi's QEMU run): ${u.description}
      export PATH=${concatMapStrings (p: "${toString p}/bin:${toString p}/sbin:") u.path}${pkgs.busybox}/bin
      ${concatMapStrings (n: "export ${n}=${lib.escapeShellArg u.environment.${n}}\n") (attrNames u.environment)}
      ${if execs != [ ] then concatMapStrings (c: "sh -c ${lib.escapeShellArg c} || exit $?\n") execs
        else if u.script != "" then "set -e\n${u.script}\n"
        else "echo 'stand-in NixOS: ${name} has neither ExecStart nor script' >&2; exit 1\n"}
    '';
  unitsFile = pkgs.writeText "stand-in-units" (concatMapStrings (name: let u = units.${name}; in
      "start_unit ${lib.escapeShellArg name} ${lib.escapeShellArg (u.serviceConfig.Type or "simple")} ${unitScript name u}"
      + concatMapStrings (c: " " + lib.escapeShellArg c) (asList (u.unitConfig.ConditionPathExists or null)) + "\n")
    (attrNames units));

  # The initrd: with a real kernel, a newc archive with busybox, the
  # modules and the stand-in's stage 1 (written here, in order, with inode
  # numbers counted and times zero: busybox cpio -o copies them from the
  # build directory, which would make two builds differ); else a text file.
  initrd = if !kernel.standInBootable then
    pkgs.runCommand "initrd-stand-in-${kernel.version}" { modules = cfg.boot.initrd.availableKernelModules; } ''
      mkdir $out
      { echo "stand-in initrd for ${kernel.version} (test data, not an initrd)"
        for m in $modules; do echo "module $m"; done
        ${optionalString cfg.boot.initrd.systemd.tpm2.enable "echo module tpm_tis"}
      } > $out/initrd
    ''
  else pkgs.runCommand "initrd-stand-in-${kernel.version}" { inherit initrdModules; } ''
    modules=${kernel}/lib/modules/${kernel.version}
    mkdir -p root/bin root/etc root/lib/modules root/dev root/proc root/sys root/run root/mnt-root
    cp ${pkgs.busybox}/bin/busybox root/bin/busybox
    cp ${./stage-1-init.sh} root/init
    chmod 0755 root/init root/bin/busybox
    cp ${fsLib} root/etc/stand-in-fs.sh
    cp ${earlyMounts} root/etc/stand-in-early-mounts
    echo "$initrdModules" > root/etc/stand-in-initrd-modules
    cp $modules/stand-in-modules.load root/lib/modules/
    while read -r m; do
      mkdir -p "root/lib/modules/$(dirname "$m")"
      cp "$modules/$m" "root/lib/modules/$m"
    done < $modules/stand-in-modules.load

    ino=0
    pad() { [ "$1" -eq 0 ] || head -c $((4 - $1)) /dev/zero; }
    # entry MODE SIZE NLINK RDEVMAJOR RDEVMINOR NAME: one newc header.
    entry() {
      ino=$((ino + 1))
      printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
        "$ino" "$1" 0 0 "$3" 0 "$2" 0 0 "$4" "$5" $((''${#6} + 1)) 0 "$6"
      pad $(((110 + ''${#6} + 1) % 4))
    }
    mkdir $out
    (cd root && find . | sort) > files
    {
      cd root
      while read -r p; do
        p=''${p#./}
        if [ "$p" = . ]; then continue; fi
        if [ -d "$p" ]; then
          entry $((040755)) 0 2 0 0 "$p"
        else
          size=$(($(wc -c < "$p")))
          mode=$((0100644))
          [ -x "$p" ] && mode=$((0100755))
          entry "$mode" "$size" 1 0 0 "$p"
          cat "$p"
          pad $((size % 4))
        fi
      done < ../files
      entry $((020600)) 0 1 5 1 dev/console
      entry 0 0 1 0 0 'TRAILER!!!'
    } | gzip -9 > $out/initrd
    gzip -dc $out/initrd | cpio -t > listing 2>/dev/null
    grep -qx init listing && grep -qx bin/busybox listing || { echo "stand-in initrd: the archive does not list init and bin/busybox:"; cat listing; exit 1; }
  '';

  # The system's init: with a real kernel, the stand-in's stage 2; else a
  # script that says this toy does not boot.
  init = if kernel.standInBootable then
    pkgs.runCommand "stand-in-stage-2-init" { src = ./stage-2-init.sh; } ''
      { echo "#!${pkgs.busybox}/bin/sh"
        sed -e "s|@busybox@|${pkgs.busybox}|g" -e "s|@fsLib@|${fsLib}|g" -e "s|@mounts@|${mounts}|g" \
          -e "s|@swaps@|${swaps}|g" -e "s|@units@|${unitsFile}|g" -e "s|@nixosVersion@|${nixosVersion}|g" $src
      } > $out
      chmod 0755 $out
    ''
  else pkgs.writeScript "stand-in-init" ''
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
