package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"
)

// fullRetentionName names the section of bench/fullretention, another
// program (run by `make bench-full`, since it needs 24 h of event time and
// takes long).
const fullRetentionName = "fullretention"

// The hook: with --full, the harness runs
//
//	go run ./bench/fullretention --results <results dir> [--quick]
//
// after its own scenarios, and expects it to write
// <results dir>/fullretention.json: one object in the shape of a section
// (title, intro [paragraphs], rows [{figure, target, result, pass}],
// tables, commands, files, notes). Any other JSON object is shown as a
// table of its top-level fields. Without --full, a fullretention.json left
// by an earlier run is included and dated as such.

// fullRetention runs bench/fullretention when asked to and renders its
// results, or says plainly that it was not run.
func (h *harness) fullRetention(ctx context.Context) *section {
	sec := &section{Name: fullRetentionName, Title: "Aggregates at full retention"}
	path := filepath.Join(h.opt.Results, fullRetentionName+".json")
	started := time.Now()
	if h.opt.Full {
		if _, err := os.Stat(filepath.Join(h.root, "bench", fullRetentionName)); err != nil {
			sec.Intro = []string{"**Not run:** `bench/fullretention` is not in this tree yet."}
			return sec
		}
		_ = os.Remove(path)
		if err := h.runFullRetention(ctx, sec); err != nil {
			return sec.fail(err)
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		sec.Intro = []string{"**Not run** in this run: `make bench-full` runs it (`bench/fullretention`)."}
		return sec
	}
	if info.ModTime().Before(started) {
		sec.Notes = append(sec.Notes, fmt.Sprintf("**Not from this run:** these figures come from an earlier `make bench-full`, written %s.",
			info.ModTime().UTC().Format("2006-01-02 15:04 UTC")))
	}
	if err := readFullRetention(path, sec); err != nil {
		return sec.fail(err)
	}
	sec.Files = append(sec.Files, path)
	return sec
}

func (h *harness) runFullRetention(ctx context.Context, sec *section) error {
	args := []string{"run", "./bench/" + fullRetentionName, "--results", h.opt.Results}
	if h.opt.Quick {
		args = append(args, "--quick")
	}
	sec.Commands = append(sec.Commands, shellJoin(append([]string{"go"}, args...)))
	h.log.Info("scenario", "name", fullRetentionName)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = h.root
	cmd.Stdout, cmd.Stderr = h.opt.Progress, h.opt.Progress
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bench/%s: %w", fullRetentionName, err)
	}
	return nil
}

// readFullRetention fills sec from the program's JSON, keeping the
// harness's own name and whatever notes it already has.
func readFullRetention(path string, sec *section) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var theirs section
	if err := json.Unmarshal(b, &theirs); err == nil && (len(theirs.Rows) > 0 || len(theirs.Tables) > 0) {
		notes := sec.Notes
		*sec = theirs
		sec.Name = fullRetentionName
		sec.Notes = append(notes, theirs.Notes...)
		if sec.Title == "" {
			sec.Title = "Aggregates at full retention"
		}
		return nil
	}
	var fields map[string]any
	if err := json.Unmarshal(b, &fields); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		v, _ := json.Marshal(fields[k])
		sec.add(k, "—", string(v), nil)
	}
	return nil
}
