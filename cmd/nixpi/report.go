package main

import "errors"

func runReport(c *cli, args []string) int {
	return c.fail(errors.New("report: not implemented yet"))
}
