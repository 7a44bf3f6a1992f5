package main

import "errors"

func runConfig(c *cli, args []string) int {
	return c.fail(errors.New("config: not implemented yet"))
}
