package main

import "errors"

func runEeprom(c *cli, args []string) int {
	return c.fail(errors.New("eeprom: not implemented yet"))
}
