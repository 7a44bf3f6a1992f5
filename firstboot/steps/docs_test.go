package steps_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/steps"
)

// stepsDoc lists the steps for users, one numbered item each.
const stepsDoc = "../../docs/how-it-works.md"

// stepItem is a numbered list item that starts with a step's name:
// "12. `system`: ...".
var stepItem = regexp.MustCompile("^([0-9]+)\\. `([a-z0-9-]+)`")

// The documented step list is All(), in order and numbered from 1: a
// step added, removed or moved fails here until the page says so.
func TestDocumentedStepsAreAll(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(stepsDoc)
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for i, line := range strings.Split(string(data), "\n") {
		m := stepItem.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if n, _ := strconv.Atoi(m[1]); n != len(documented)+1 {
			t.Errorf("%s:%d: step %q is numbered %d, want %d", stepsDoc, i+1, m[2], n, len(documented)+1)
		}
		documented = append(documented, m[2])
	}
	var want []string
	for _, s := range steps.All() {
		want = append(want, s.Name())
	}
	if strings.Join(documented, " ") != strings.Join(want, " ") {
		t.Errorf("%s lists the steps\n  %s\nbut steps.All() runs\n  %s\nupdate the page's numbered list", stepsDoc, strings.Join(documented, " "), strings.Join(want, " "))
	}
}
