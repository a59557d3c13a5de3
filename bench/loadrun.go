package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/allezon/allezon/loadgen"
)

// loadRun is one run of `allezon loadgen`: the testing platform is the
// load of every scenario, so the figures are the ones it reports and the
// answers it checked.
type loadRun struct {
	name    string
	args    []string
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error

	Command string          // as run
	Report  *loadgen.Report // nil when the run left no report
	JSON    string          // path of the JSON report
	Text    string          // path of the text report (its stdout)
	Plot    string          // path of the plot, "" when not asked for
	CPU     float64         // CPU seconds the loadgen process used
}

// startLoadgen starts allezon loadgen against url with args, writing
// <name>.json, <name>.txt and, when plot is set and loadgen can, <name>.png
// into the results directory.
func (h *harness) startLoadgen(name, url string, args []string, plot bool) (*loadRun, error) {
	r := &loadRun{
		name: name,
		JSON: filepath.Join(h.opt.Results, name+".json"),
		Text: filepath.Join(h.opt.Results, name+".txt"),
		done: make(chan struct{}),
	}
	r.args = append([]string{"loadgen", "--url", "http://" + url}, args...)
	r.args = append(r.args, "--json", r.JSON)
	if plot && h.bin.plot {
		r.Plot = filepath.Join(h.opt.Results, name+".png")
		r.args = append(r.args, "--plot", r.Plot)
	}
	for _, p := range []string{r.JSON, r.Text, filepath.Join(h.opt.Results, name+".png")} {
		_ = os.Remove(p) // never report a previous run's file as this one's
	}
	out, err := os.Create(r.Text)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	r.cmd = exec.Command(h.bin.allezon, r.args...)
	r.cmd.Stdout, r.cmd.Stderr = out, h.opt.Progress
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	r.Command = shellJoin(append([]string{h.bin.allezon}, r.args...))
	h.log.Info("loadgen", "scenario", name, "cmd", r.Command)
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start loadgen: %w", err)
	}
	go func() { r.exitErr = r.cmd.Wait(); close(r.done) }()
	return r, nil
}

// wait waits for loadgen to end (interrupting it if ctx ends) and reads
// its report. An exit status that is not 0 is not an error here: loadgen
// exits 1 on any failed request or mismatch, which the report counts.
func (r *loadRun) wait(ctx context.Context) error {
	select {
	case <-r.done:
	case <-ctx.Done():
		r.interrupt()
	}
	if st := r.cmd.ProcessState; st != nil {
		r.CPU = (st.UserTime() + st.SystemTime()).Seconds()
	}
	b, err := os.ReadFile(r.JSON)
	if err != nil {
		return fmt.Errorf("loadgen %s left no report (exit: %v): %w", r.name, r.exitErr, err)
	}
	var rep loadgen.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("loadgen %s report: %w", r.name, err)
	}
	r.Report = &rep
	if r.Plot != "" {
		if _, err := os.Stat(r.Plot); err != nil {
			r.Plot = ""
		}
	}
	return nil
}

// interrupt ends a run early as Ctrl-C would: loadgen still writes its
// report, marked interrupted.
func (r *loadRun) interrupt() {
	_ = r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// runLoadgen runs loadgen to its end.
func (h *harness) runLoadgen(ctx context.Context, name, url string, args []string, plot bool) (*loadRun, error) {
	r, err := h.startLoadgen(name, url, args, plot)
	if err != nil {
		return nil, err
	}
	if err := r.wait(ctx); err != nil {
		return r, err
	}
	if ctx.Err() != nil {
		return r, errors.New("interrupted")
	}
	return r, nil
}

// ackedRate is the sustained rate: tags acknowledged per second of the
// sending phase.
func ackedRate(rep *loadgen.Report) float64 {
	if rep.Elapsed <= 0 {
		return 0
	}
	return float64(rep.TagsAcked) / rep.Elapsed.Seconds()
}
