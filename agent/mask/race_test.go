//go:build race

package mask

// raceEnabled: the race detector slows the property tests tenfold, so they
// split at fewer offsets.
const raceEnabled = true
