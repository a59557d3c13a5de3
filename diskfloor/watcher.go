// Package diskfloor watches the free space of the file systems that hold
// the embedded stores' data (Pebble stores, the embedded broker's
// segments) and says when it is below a floor, so that writes are refused
// and commits held before any store fails for want of space. The floor is
// what keeps a full disk an outage rather than a crash: Pebble panics on a
// failed WAL write ("pebble: fatal commit error") by design.
package diskfloor

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// DefaultInterval is how often the watcher checks: statfs costs about a
// microsecond, and the floor must cover what is written between checks.
const DefaultInterval = 250 * time.Millisecond

// ErrBelowFloor is wrapped by the errors of Err and Ping while free space
// is below the floor.
var ErrBelowFloor = errors.New("free disk space below the floor")

// Usage is what statfs says of a file system: bytes free to an
// unprivileged writer, and its size.
type Usage struct {
	Free, Total uint64
}

// StatFunc reports the usage of the file system holding path.
type StatFunc func(path string) (Usage, error)

// Config configures Start.
type Config struct {
	// Paths are the data directories; Start watches each file system
	// once, under the first path on it. A path that does not exist yet
	// is measured on its nearest existing parent.
	Paths    []string
	Floor    Floor
	Interval time.Duration // default DefaultInterval
	Logger   *slog.Logger  // default slog.Default()
	// Stat defaults to Statfs; tests give a fake.
	Stat StatFunc
}

var (
	freeBytes = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "allezon_disk_free_bytes",
		Help: "Free bytes of the file system holding a data directory, at the last check.",
	}, []string{"path"})
	floorBytes = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "allezon_disk_floor_bytes",
		Help: "Free bytes the process keeps on the file system of a data directory (--min-free-disk); writes are refused below it.",
	}, []string{"path"})
	belowFloor = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "allezon_disk_below_floor",
		Help: "1 while the free space of a data directory's file system is below its floor (tags refused with 503, pipeline commits held), else 0.",
	}, []string{"path"})
)

// Watcher checks the file systems every Interval. Err and Ping read the
// result of the last check: they cost an atomic load.
type Watcher struct {
	paths []string
	floor Floor
	stat  StatFunc
	log   *slog.Logger

	// last is each path's state at the previous check, owned by check.
	last []pathState
	// below is the error Err returns, nil while every path has room;
	// health the error Ping returns (below, or statfs failing).
	below, health atomic.Pointer[error]

	stop chan struct{}
	done chan struct{}
}

type pathState struct {
	below   bool
	statErr bool
}

// Start checks once, so Err is right from the first request, and then
// every Interval until Close.
func Start(cfg Config) *Watcher {
	if cfg.Stat == nil {
		cfg.Stat = Statfs
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := newWatcher(distinct(cfg.Paths), cfg.Floor, cfg.Stat, cfg.Logger.With("component", "diskfloor"))
	w.log.Info("watching free disk space", "paths", w.paths, "floor", cfg.Floor.String(), "interval", cfg.Interval)
	w.check()
	go w.loop(cfg.Interval)
	return w
}

func newWatcher(paths []string, floor Floor, stat StatFunc, log *slog.Logger) *Watcher {
	return &Watcher{paths: paths, floor: floor, stat: stat, log: log,
		last: make([]pathState, len(paths)), stop: make(chan struct{}), done: make(chan struct{})}
}

func (w *Watcher) loop(interval time.Duration) {
	defer close(w.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.check()
		}
	}
}

// Close stops the checks.
func (w *Watcher) Close() {
	close(w.stop)
	<-w.done
}

// Err is nil while every file system has room above its floor, and an
// error wrapping ErrBelowFloor naming the file systems below it otherwise:
// writers must not write then.
func (w *Watcher) Err() error { return load(&w.below) }

// Ping is the watcher as a health check: Err, or the failure to statfs a
// data directory.
func (w *Watcher) Ping(context.Context) error { return load(&w.health) }

func load(p *atomic.Pointer[error]) error {
	if e := p.Load(); e != nil {
		return *e
	}
	return nil
}

// check measures every path, publishes the result and logs each change.
func (w *Watcher) check() {
	var below, unknown []string
	for i, path := range w.paths {
		u, err := w.stat(path)
		st := pathState{statErr: err != nil}
		if err != nil {
			unknown = append(unknown, "cannot measure free space on "+path+": "+err.Error())
		} else {
			floor := w.floor.of(u.Total)
			st.below = u.Free < floor
			freeBytes.WithLabelValues(path).Set(float64(u.Free))
			floorBytes.WithLabelValues(path).Set(float64(floor))
			belowFloor.WithLabelValues(path).Set(b2f(st.below))
			if st.below {
				below = append(below, "free space "+FormatBytes(u.Free)+" below the floor "+FormatBytes(floor)+" on "+path)
			}
		}
		w.logChange(path, w.last[i], st, u, err)
		w.last[i] = st
	}
	var belowErr error
	if len(below) > 0 {
		belowErr = &floorError{msg: strings.Join(below, "; ")}
	}
	healthErr := belowErr
	if len(unknown) > 0 {
		healthErr = errors.New(strings.Join(append(below, unknown...), "; "))
		if belowErr != nil {
			healthErr = &floorError{msg: healthErr.Error()}
		}
	}
	w.below.Store(&belowErr)
	w.health.Store(&healthErr)
}

// logChange logs a path's transitions only, never a steady state.
func (w *Watcher) logChange(path string, was, is pathState, u Usage, err error) {
	switch {
	case is.statErr && !was.statErr:
		w.log.Warn("cannot measure free disk space; writes are not held back for it", "path", path, "err", err)
	case !is.statErr && was.statErr:
		w.log.Info("free disk space measurable again", "path", path)
	}
	if is.statErr {
		return
	}
	floor := w.floor.of(u.Total)
	switch {
	case is.below && !was.below:
		w.log.Warn("free disk space below the floor: refusing tags (503) and holding pipeline commits until it is back",
			"path", path, "free_bytes", u.Free, "floor_bytes", floor)
	case !is.below && was.below:
		w.log.Info("free disk space back above the floor: writes resume", "path", path, "free_bytes", u.Free, "floor_bytes", floor)
	}
}

// floorError is the error of a file system below its floor.
type floorError struct{ msg string }

func (e *floorError) Error() string        { return e.msg }
func (e *floorError) Is(target error) bool { return target == ErrBelowFloor }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
