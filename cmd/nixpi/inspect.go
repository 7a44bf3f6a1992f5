package main

import "errors"

func runInspect(c *cli, args []string) int {
	return c.fail(errors.New("inspect: not implemented yet"))
}
