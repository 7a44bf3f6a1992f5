# /etc/nixos/configuration.nix, written by nixpi from nixpi.toml. Once you edit
# it on the Pi, nixpi never overwrites it. Apply changes with
# `nixos-rebuild switch`.
{ config, lib, pkgs, ... }:

{
  imports = [
    ./hardware-configuration.nix
  ];

  networking.hostName = "garden-pi";
  time.timeZone = "Europe/Berlin";
  i18n.defaultLocale = "de_DE.UTF-8";
  console.keyMap = "de-latin1";

  users.users."alice" = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
    # The hash is in this root-only file, not in the world-readable Nix store.
    hashedPasswordFile = "/etc/nixos/secrets/alice.hashedPassword";
    openssh.authorizedKeys.keys = [
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINs/P2AHuutJrx8BjqQ9lRPc2W6FzD+noshMtddXmn3s pi@laptop"
      "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBO3urM/MHBKzqHXdF7d9mlXPmu0rbqVP6//bNg1jwkt8bXADqlzuTWfNFhrCzMevr/b/tt0D5AAH/8fa3gncV18="
    ];
  };

  users.users."bob" = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
    openssh.authorizedKeys.keys = [
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINs/P2AHuutJrx8BjqQ9lRPc2W6FzD+noshMtddXmn3s pi@laptop"
    ];
  };
  # A user with only ssh keys has no password to give sudo.
  security.sudo.wheelNeedsPassword = false;

  services.openssh.enable = true;

  # Wi-Fi from [wlan].
  networking.wireless = {
    enable = true;
    extraConfig = "country=DE";
    # The passphrase is in this file on the SSD, not in the Nix store.
    secretsFile = "/etc/nixos/secrets/wireless.conf";
    networks."Garden Wi-Fi \${x}" = {
      pskRaw = "ext:psk_nixpi";
      hidden = true;
    };
  };
  # nixpi writes the file root-only; wpa_supplicant runs as its own user.
  systemd.tmpfiles.rules = [ "z /etc/nixos/secrets/wireless.conf 0400 wpa_supplicant wpa_supplicant -" ];

  nix.settings = {
    experimental-features = [ "nix-command" "flakes" ];
    substituters = [ "https://cache.nixos.org" ];
    trusted-public-keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
    # This Pi has 1.0 GiB of memory: one build at a time, on one core.
    max-jobs = 1;
    cores = 1;
  };

  # The release this system was first installed with; keep it when upgrading.
  system.stateVersion = "26.05";
}
