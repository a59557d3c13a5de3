package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// cpuProfile fetches a CPU profile of a running allezon from its admin
// listener (pprof) and saves it; BENCHMARKS.md then shows where the
// server's time went in the very run it judges.
func cpuProfile(ctx context.Context, admin string, d time.Duration, path string) error {
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, max(1, int(d.Seconds())))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: d + 30*time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cpu profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("cpu profile: %w", err)
	}
	return f.Close()
}

// component is a part of the server whose CPU share the report gives, by
// the functions on the stack (pprof's -focus) and those to leave out.
type component struct {
	name, focus, ignore string
}

// components are inclusive and may overlap where one part calls another
// (the pipeline runs sarama's consumer, for instance); each says what it
// holds.
var components = []component{
	{"HTTP: fasthttp reading requests and writing responses (outside the handlers)", `valyala/fasthttp`, `allezon/gateway\.\(\*Server\)\.route`},
	{"POST /user_tags handler: decode, profile append (incl. waiting for the WAL), publish (incl. waiting for the ack)", `gateway\.\(\*Server\)\.userTags`, ""},
	{"Pebble background: WAL writes and fsyncs, memtable flushes, compactions (both stores)", `pebble/v2.*(LogWriter|\(\*DB\)\.(compact|flush))`, ""},
	{"sarama: producer and consumer clients", `IBM/sarama`, ""},
	{"kfake: the embedded broker", `franz-go/pkg/kfake`, ""},
	{"pipeline: consume, decode, sum, commit aggregates", `allezon/pipeline`, ""},
	{"Go GC (background marking)", `runtime\.gcBgMarkWorker`, ""},
}

var accountingRE = regexp.MustCompile(`Showing nodes accounting for ([0-9.]+)(m?s), ([0-9.]+)% of ([0-9.]+)(m?s) total`)

// profileShares runs `go tool pprof` on the saved profile once per
// component and returns a table of each one's share of the samples, with
// the top functions by own time as a note.
func profileShares(ctx context.Context, binary, prof string) (table, string, error) {
	t := table{Header: []string{"component (inclusive; parts may overlap)", "CPU share"}}
	for _, c := range components {
		args := []string{"tool", "pprof", "-top", "-nodecount=1000000", "-nodefraction=0", "-edgefraction=0", "-focus=" + c.focus}
		if c.ignore != "" {
			args = append(args, "-ignore="+c.ignore)
		}
		out, err := exec.CommandContext(ctx, "go", append(args, binary, prof)...).Output()
		if err != nil {
			return t, "", fmt.Errorf("go tool pprof: %w", err)
		}
		share := "0 %"
		if m := accountingRE.FindSubmatch(out); m != nil {
			if pct, err := strconv.ParseFloat(string(m[3]), 64); err == nil {
				share = fmt.Sprintf("%.1f %%", pct)
			}
		}
		t.Rows = append(t.Rows, []string{c.name, share})
	}
	top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=20", binary, prof).Output()
	if err != nil {
		return t, "", fmt.Errorf("go tool pprof: %w", err)
	}
	return t, trimTop(string(top)), nil
}

// trimTop keeps pprof's table and its totals line, without the header
// lines that name temporary files.
func trimTop(s string) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// profileSection adds the profile of a run to sec: the component shares,
// the top functions and a link to the raw profile.
func (h *harness) profileSection(ctx context.Context, sec *section, prof string) {
	t, top, err := profileShares(ctx, h.bin.allezon, prof)
	if err != nil {
		sec.Notes = append(sec.Notes, "Where the time goes: the profile could not be read: "+err.Error())
		return
	}
	sec.Notes = append(sec.Notes, "**Where the server's time goes** (CPU profile of `allezon all` over the middle of the run, from its admin listener; "+
		"`go tool pprof "+filepath.Base(prof)+"` to explore it):")
	sec.Tables = append(sec.Tables, t)
	sec.Notes = append(sec.Notes, "Top functions by own time:\n\n```\n"+top+"\n```")
	sec.Files = append(sec.Files, prof)
}
