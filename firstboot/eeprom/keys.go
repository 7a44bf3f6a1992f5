package eeprom

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// KnownKey says whether key is a property the Pi 4 bootloader reads from
// bootconf.txt, spelt as it reads it: names are case-sensitive, so
// boot_order is not BOOT_ORDER. The list is Raspberry Pi's "Raspberry Pi 4
// bootloader configuration" page (raspberrypi/documentation,
// computers/raspberry-pi/bcm2711-bootloader.adoc), plus
// USB_MSD_BOOT_MAX_RETRIES, which Raspberry Pi's own 2020 images carry.
// An unknown key is not an error (a newer bootloader may know it), only
// worth a warning: the bootloader ignores what it does not know.
func KnownKey(key string) bool {
	switch key {
	case "BOOT_UART", "WAKE_ON_GPIO", "POWER_OFF_ON_HALT", "BOOT_ORDER", "MAX_RESTARTS",
		"SD_BOOT_MAX_RETRIES", "NET_BOOT_MAX_RETRIES", "USB_MSD_BOOT_MAX_RETRIES",
		"DHCP_TIMEOUT", "DHCP_REQ_TIMEOUT", "TFTP_FILE_TIMEOUT", "TFTP_IP", "TFTP_PREFIX",
		"TFTP_PREFIX_STR", "PXE_OPTION43", "DHCP_OPTION97", "MAC_ADDRESS", "MAC_ADDRESS_OTP",
		"CLIENT_IP", "SUBNET", "GATEWAY", "DISABLE_HDMI", "HDMI_DELAY", "ENABLE_SELF_UPDATE",
		"FREEZE_VERSION", "HTTP_HOST", "HTTP_PORT", "HTTP_PATH", "IMAGER_REPO_URL",
		"NET_INSTALL_ENABLED", "NET_INSTALL_KEYBOARD_WAIT", "NETCONSOLE", "PARTITION",
		"USB_MSD_EXCLUDE_VID_PID", "USB_MSD_DISCOVER_TIMEOUT", "USB_MSD_LUN_TIMEOUT",
		"USB_MSD_PWR_OFF_TIME", "USB_MSD_STARTUP_DELAY", "VL805", "XHCI_DEBUG":
		return true
	}
	return false
}

// UnknownKeyWarning says why key is not one the Pi 4 bootloader knows,
// naming the known key it differs from only in case; "" for a known key.
func UnknownKeyWarning(key string) string {
	if KnownKey(key) {
		return ""
	}
	if upper := strings.ToUpper(key); KnownKey(upper) {
		return fmt.Sprintf("%s is not a Pi 4 bootloader setting: the bootloader's names are case-sensitive, and it ignores %s; did you mean %s?", key, key, upper)
	}
	return fmt.Sprintf("%s is not a setting Raspberry Pi documents for the Pi 4 bootloader, which ignores what it does not know: check its spelling (the documented ones are listed at https://www.raspberrypi.com/documentation/computers/raspberry-pi.html#raspberry-pi-bootloader-configuration)", key)
}

// CheckSig checks that sig, a bootconf.sig as rpi-eeprom-digest writes
// it (the sha256 of the file it signs in hex, then optional "ts: N" and
// "rsa2048: ..." lines), is for signed.
func CheckSig(sig, signed []byte) error {
	first, _, _ := bytes.Cut(sig, []byte("\n"))
	got := strings.ToLower(strings.TrimSpace(string(first)))
	if _, err := hex.DecodeString(got); err != nil || len(got) != sha256.Size*2 {
		return fmt.Errorf("it does not start with a sha256 in hex, so it is not a .sig made by rpi-eeprom-digest")
	}
	sum := sha256.Sum256(signed)
	if want := hex.EncodeToString(sum[:]); got != want {
		return fmt.Errorf("it signs sha256 %s, the config's is %s: it is the signature of another config", got, want)
	}
	return nil
}
