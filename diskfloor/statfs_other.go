//go:build !unix

package diskfloor

import "errors"

// Statfs is not implemented off unix: the watcher reports it on /health
// and holds nothing back.
func Statfs(string) (Usage, error) {
	return Usage{}, errors.ErrUnsupported
}

func distinct(paths []string) []string { return paths }
