package main

import (
	"fmt"

	"github.com/nixpi/nixpi/assets"
)

func runVersion(c *cli, args []string) int {
	if wantsHelp(args) {
		fmt.Fprintln(c.stdout, "usage: nixpi version (or nixpi --version)\n\nPrints the nixpi version.")
		return exitOK
	}
	if len(args) != 0 {
		return c.fail(usagef("version takes no arguments"))
	}
	fmt.Fprintln(c.stdout, "nixpi", assets.Version)
	return exitOK
}
