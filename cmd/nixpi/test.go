package main

import "errors"

func runTest(c *cli, args []string) int {
	return c.fail(errors.New("test: not implemented yet"))
}
