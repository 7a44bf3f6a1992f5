# The options the stand-in NixOS declares: those nixpi's templates set, and
# the few its toy toplevel reads. Each is declared where nixpkgs declares it
# (firstboot/nixos/options_test.go names the file); a definition of any
# other option fails as on NixOS ("The option `...' does not exist").
{ lib, pkgs }:
let
  inherit (lib) mkOption types;
  bool = default: mkOption { type = types.bool; inherit default; hasDefault = true; };
  list = mkOption { type = types.listOf; default = [ ]; hasDefault = true; };
  str = default: mkOption { type = types.str; inherit default; hasDefault = default != null; };
  nullOrStr = mkOption { type = types.nullOrStr; default = null; hasDefault = true; };
  attrs = mkOption { type = types.attrs; default = { }; hasDefault = true; };
in
{
  nixpkgs.hostPlatform = str null;
  networking.hostName = str "nixos";
  networking.wireless = {
    enable = bool false;
    extraConfig = mkOption { type = types.lines; default = ""; hasDefault = true; };
    secretsFile = nullOrStr;
    networks._attrsOf = {
      pskRaw = nullOrStr;
      hidden = bool false;
    };
  };
  time.timeZone = nullOrStr;
  i18n.defaultLocale = str "en_US.UTF-8";
  console.keyMap = str "us";
  users.users._attrsOf = {
    isNormalUser = bool false;
    extraGroups = list;
    hashedPasswordFile = nullOrStr;
    openssh.authorizedKeys.keys = list;
  };
  security.sudo.wheelNeedsPassword = bool true;
  services.openssh.enable = bool false;
  systemd.tmpfiles.rules = list;
  # The units the stand-in's stage 2 starts (those wantedBy
  # multi-user.target); nixos/lib/systemd-unit-options.nix declares them.
  systemd.services._attrsOf = {
    enable = bool true;
    description = str "";
    wantedBy = list;
    after = list;
    wants = list;
    requires = list;
    path = list;
    environment = attrs;
    script = mkOption { type = types.lines; default = ""; hasDefault = true; };
    unitConfig = attrs;
    serviceConfig = attrs;
  };
  nix.settings = mkOption { type = types.settings; default = { }; hasDefault = true; };
  # nixos/modules/config/nix-channel.nix: the search path (NIX_PATH in
  # /etc/set-environment) and the channel /root/.nix-channels starts with.
  nix.nixPath = mkOption {
    type = types.listOf;
    default = [
      "nixpkgs=/nix/var/nix/profiles/per-user/root/channels/nixos"
      "nixos-config=/etc/nixos/configuration.nix"
      "/nix/var/nix/profiles/per-user/root/channels"
    ];
    hasDefault = true;
  };
  system.defaultChannel = str "https://nixos.org/channels/nixos-unstable";
  system.stateVersion = str null;
  documentation.nixos.enable = bool true;
  boot.loader.grub.enable = bool true;
  boot.loader.timeout = mkOption { type = types.int; default = 5; hasDefault = true; };
  boot.loader.generic-extlinux-compatible = {
    enable = bool false;
    configurationLimit = mkOption { type = types.int; default = 20; hasDefault = true; };
  };
  boot.kernelPackages = mkOption { type = types.raw; default = pkgs.linuxPackages; hasDefault = true; };
  boot.kernelParams = list;
  boot.initrd.availableKernelModules = list;
  boot.initrd.systemd.tpm2.enable = bool true;
  hardware.enableRedistributableFirmware = bool false;
  hardware.deviceTree.filter = nullOrStr;
  fileSystems._attrsOf = {
    device = str null;
    fsType = str "auto";
    options = mkOption { type = types.listOf; default = [ "defaults" ]; hasDefault = true; };
    # Stage 1 mounts it (with /, /nix, /var, ... as NixOS's pathsNeededForBoot).
    neededForBoot = bool false;
  };
  swapDevices = list;
  environment.systemPackages = list;
  environment.etc._attrsOf = {
    text = mkOption { type = types.lines; default = null; hasDefault = true; };
  };
}
