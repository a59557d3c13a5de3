package stack

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

const dashboardFile = "../services/grafana/dashboards/allezon.json"

// dashboardMetrics returns every allezon_* series name the dashboard's
// queries use, by panel title.
func dashboardMetrics(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	names := map[string][]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				if tg.Datasource.UID != "allezon-prometheus" && tg.Datasource.UID != "" {
					t.Errorf("panel %q: datasource %q, want the provisioned allezon-prometheus", p.Title, tg.Datasource.UID)
				}
				for _, m := range metricName.FindAllString(tg.Expr, -1) {
					names[m] = append(names[m], p.Title)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return names
}

type panel struct {
	Title   string `json:"title"`
	Panels  []panel
	Targets []struct {
		Expr       string `json:"expr"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
}

var metricName = regexp.MustCompile(`\ballezon_[a-z0-9_]+`)

// exported parses the families of a Prometheus text exposition: name ->
// type.
func exported(r io.Reader) (map[string]string, error) {
	types := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
		}
	}
	return types, sc.Err()
}

// family maps a series name to its metric family: a histogram's _bucket,
// _sum and _count series (a summary's _sum and _count) belong to the base
// name, but only when the base really is such a family.
func family(series string, types map[string]string) string {
	if _, ok := types[series]; ok {
		return series
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(series, suf)
		if !ok {
			continue
		}
		switch types[base] {
		case "histogram":
			return base
		case "summary":
			if suf != "_bucket" {
				return base
			}
		}
	}
	return ""
}

func TestFamily(t *testing.T) {
	types := map[string]string{"a_seconds": "histogram", "b": "summary", "c_count": "counter", "d": "counter"}
	for series, want := range map[string]string{
		"a_seconds_bucket": "a_seconds", "a_seconds_sum": "a_seconds", "a_seconds_count": "a_seconds", "a_seconds": "a_seconds",
		"b_sum": "b", "b_count": "b", "b_bucket": "",
		"c_count": "c_count", "d_count": "", "d_bucket": "", "e": "",
	} {
		if got := family(series, types); got != want {
			t.Errorf("family(%q) = %q, want %q", series, got, want)
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Every metric the Grafana dashboard queries is exported by the real
// binary: built here, started with its embedded backends, fed one tag so
// the pipeline runs, and scraped.
func TestDashboardMetricsExist(t *testing.T) {
	wanted := dashboardMetrics(t)
	if len(wanted) < 10 {
		t.Fatalf("the dashboard queries only %d allezon metrics: %v", len(wanted), wanted)
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "allezon")
	build := exec.Command("go", "build", "-o", bin, "./cmd/allezon")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	proc := exec.CommandContext(ctx, bin, "all", "--http", addr, "--admin", "", "--data", filepath.Join(dir, "data"))
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	proc.Stdout, proc.Stderr = logf, logf
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = proc.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Logf("allezon log:\n%s", b)
		}
	})

	base := "http://" + addr
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("allezon did not become healthy on %s: %v", addr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	tag := `{"time":"2022-03-22T12:15:00.123Z","cookie":"c","country":"PL","device":"PC","action":"BUY","origin":"o",` +
		`"product_info":{"product_id":"1","brand_id":"b","category_id":"k","price":10}}`
	resp, err := client.Post(base+"/user_tags", "application/json", strings.NewReader(tag))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST /user_tags: %s", resp.Status)
	}

	// The pipeline's series appear once it consumed and flushed (1 s).
	var types map[string]string
	for {
		resp, err := client.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		types, err = exported(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := types["allezon_pipeline_consumer_lag"]; ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}

	var missing []string
	for series, panels := range wanted {
		if family(series, types) != "" {
			continue
		}
		missing = append(missing, fmt.Sprintf("%s (panels %q)", series, panels))
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("the dashboard queries %s, which allezon does not export", m)
	}
}
