package cli

import "time"

// durationFlag is a time.Duration flag whose zero means "the package's
// default", which the help text states.
type durationFlag struct{ d time.Duration }

func (f *durationFlag) String() string {
	if f == nil || f.d == 0 {
		return ""
	}
	return f.d.String()
}

func (f *durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	f.d = d
	return err
}
