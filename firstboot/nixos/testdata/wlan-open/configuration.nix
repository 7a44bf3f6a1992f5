# /etc/nixos/configuration.nix, written by nixpi from nixpi.toml. Once you edit
# it on the Pi, nixpi never overwrites it. Apply changes with
# `nixos-rebuild switch`.
{ config, lib, pkgs, ... }:

{
  imports = [
    ./hardware-configuration.nix
  ];

  networking.hostName = "nixpi";
  time.timeZone = "UTC";
  i18n.defaultLocale = "en_US.UTF-8";
  console.keyMap = "us";

  users.users."pi" = {
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
    extraConfig = "country=FR";
    networks."Cafe" = {
    };
  };

  nix.settings = {
    experimental-features = [ "nix-command" "flakes" ];
    substituters = [ "https://cache.nixos.org" ];
    trusted-public-keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
    # This Pi has 2.0 GiB of memory: one build at a time, on one core.
    max-jobs = 1;
    cores = 1;
  };

  # The release this system was first installed with; keep it when upgrading.
  system.stateVersion = "26.05";
}
