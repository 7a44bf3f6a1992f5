// Command nixpi-firstboot is the device service: "hook" (run once by systemd.run
// from cmdline.txt), "run" (the unattended install, a systemd unit), "status".
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "nixpi-firstboot: not implemented yet")
	os.Exit(1)
}
