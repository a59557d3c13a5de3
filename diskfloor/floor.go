package diskfloor

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Floor is the free space to keep on a file system: Bytes, or Percent of
// the file system's size, whichever is larger. The zero Floor is off.
type Floor struct {
	Bytes   uint64
	Percent float64
}

// Off reports whether the floor keeps nothing free, so there is nothing
// to watch.
func (f Floor) Off() bool { return f.Bytes == 0 && f.Percent == 0 }

// of is the floor in bytes on a file system of total bytes.
func (f Floor) of(total uint64) uint64 {
	return max(f.Bytes, uint64(float64(total)*f.Percent/100))
}

// String is the floor as ParseFloor reads it.
func (f Floor) String() string {
	var parts []string
	if f.Bytes > 0 || f.Percent == 0 {
		parts = append(parts, exactBytes(f.Bytes))
	}
	if f.Percent > 0 {
		parts = append(parts, strconv.FormatFloat(f.Percent, 'g', -1, 64)+"%")
	}
	return strings.Join(parts, ",")
}

// units are the size suffixes ParseFloor accepts, binary and decimal.
var units = []struct {
	suffix string
	mult   uint64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1},
}

// ParseFloor reads a floor: a size ("512MiB", "1GiB", "2GB", a plain
// number of bytes), a percentage of the file system ("5%"), or both
// separated by a comma ("1GiB,2%": the larger one). "0" turns it off.
func ParseFloor(s string) (Floor, error) {
	var f Floor
	if strings.TrimSpace(s) == "" {
		return f, errors.New("empty disk floor: want a size like 1GiB, a percentage like 5%, or both")
	}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if p, ok := strings.CutSuffix(part, "%"); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil || v < 0 || v >= 100 || math.IsNaN(v) {
				return Floor{}, fmt.Errorf("disk floor %q: %q is not a percentage in [0, 100)", s, part)
			}
			f.Percent = v
			continue
		}
		b, err := parseBytes(part)
		if err != nil {
			return Floor{}, fmt.Errorf("disk floor %q: %w", s, err)
		}
		f.Bytes = b
	}
	return f, nil
}

func parseBytes(s string) (uint64, error) {
	mult := uint64(1)
	num := s
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsNaN(v) || v*float64(mult) > math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a size (want e.g. 512MiB, 1GiB, 2GB or bytes)", s)
	}
	return uint64(v * float64(mult)), nil
}

// exactBytes writes n in the largest binary unit that divides it.
func exactBytes(n uint64) string {
	for _, u := range units[:4] {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatUint(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}

// FormatBytes writes n for people, in the largest binary unit that keeps
// it at least 1, to a tenth: "300MiB", "1.9GiB".
func FormatBytes(n uint64) string {
	for _, u := range units[:4] {
		if n >= u.mult {
			return strconv.FormatFloat(math.Round(float64(n)/float64(u.mult)*10)/10, 'f', -1, 64) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}
