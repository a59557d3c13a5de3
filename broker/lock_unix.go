//go:build unix

package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes an exclusive flock on Dir's lock file, so that a second
// broker (say `allezon broker` next to `allezon all` with the same default
// dir) fails to start instead of interleaving writes into the same
// segments. The kernel drops the lock when the process dies, kill -9 too.
func lockDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("broker: create data dir: %w", err)
	}
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("broker: open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("broker: %s: %w", dir, ErrDirLocked)
		}
		return nil, fmt.Errorf("broker: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
