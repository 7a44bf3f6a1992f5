package source

import (
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// TerminalProgress returns an Options.Progress that draws a progress bar
// (input bytes read) on f, or nil when f is not a terminal, so redirected
// output and CI logs stay free of control characters.
func TerminalProgress(f *os.File, description string) func(done, total int64) {
	if !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	var bar *progressbar.ProgressBar
	return func(done, total int64) {
		if bar == nil {
			bar = progressbar.NewOptions64(total,
				progressbar.OptionSetWriter(f),
				progressbar.OptionSetDescription(description),
				progressbar.OptionShowBytes(true),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionClearOnFinish(),
			)
		}
		bar.Set64(done)
		if total > 0 && done >= total {
			bar.Finish()
		}
	}
}
