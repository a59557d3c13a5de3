//go:build unix

package diskfloor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Statfs measures the file system holding path, or its nearest existing
// parent while path does not exist yet (a store not opened so far will be
// created there). Free is what an unprivileged writer may use (f_bavail):
// the blocks reserved for root are a margin, not room.
func Statfs(path string) (Usage, error) {
	var st syscall.Statfs_t
	p, err := existing(path)
	if err != nil {
		return Usage{}, err
	}
	if err := syscall.Statfs(p, &st); err != nil {
		return Usage{}, fmt.Errorf("statfs %s: %w", p, err)
	}
	bs := uint64(st.Bsize)
	return Usage{Free: uint64(st.Bavail) * bs, Total: uint64(st.Blocks) * bs}, nil
}

// existing is path or its nearest existing parent.
func existing(path string) (string, error) {
	p := filepath.Clean(path)
	for {
		_, err := os.Stat(p)
		if err == nil {
			return p, nil
		}
		parent := filepath.Dir(p)
		if !errors.Is(err, os.ErrNotExist) || parent == p {
			return "", fmt.Errorf("stat %s: %w", p, err)
		}
		p = parent
	}
}

// distinct keeps the first path of each file system (by device number), so
// one full disk is reported once; paths it cannot stat are all kept.
func distinct(paths []string) []string {
	seen := map[uint64]bool{}
	var out []string
	for _, path := range paths {
		var st syscall.Stat_t
		p, err := existing(path)
		if err == nil {
			err = syscall.Stat(p, &st)
		}
		if err == nil {
			dev := uint64(st.Dev) // Dev is uint32 on some platforms
			if seen[dev] {
				continue
			}
			seen[dev] = true
		}
		out = append(out, path)
	}
	return out
}
