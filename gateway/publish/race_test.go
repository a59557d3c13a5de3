//go:build race

package publish

// raceEnabled: the race detector makes sync.Pool drop items on purpose.
const raceEnabled = true
