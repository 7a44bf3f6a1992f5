package main

import "errors"

func runBuild(c *cli, args []string) int {
	return c.fail(errors.New("build: not implemented yet"))
}
