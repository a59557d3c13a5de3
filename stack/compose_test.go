package stack

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The deployment's invariants, checked on the compose files as Docker
// itself reads them (`docker stack config`: interpolated, anchors and
// merges resolved, short syntax expanded) against the node map in
// stack/nodes.conf.

const root = ".." // the module root, where the compose files are

// Values for the variables the compose files require.
var testEnv = map[string]string{
	"ALLEZON_REGISTRY": "registry.example:5000",
	"ALLEZON_VERSION":  "1.2.3",
}

// Every service of both halves is classified; a new one must be, too.
//   - data: holds the platform's data; pinned to one node, never two on one
//   - coordination: small quorum members with a volume; pinned to one node
//   - stateless, monitoring: anywhere their label allows
//   - one-shot: runs to completion (restart on failure only)
var classes = map[string]string{
	"aerospike1": "data", "aerospike2": "data",
	"kafka1": "data", "kafka2": "data",
	"patroni1": "data", "patroni2": "data",
	"etcd1": "coordination", "etcd2": "coordination", "etcd3": "coordination",
	"kafka-controller": "coordination",
	"haproxy":          "stateless", "gateway": "stateless", "pipeline": "stateless",
	"prometheus": "monitoring", "grafana": "monitoring",
	"kafka-init": "one-shot", "migrate": "one-shot",
}

var wantReplicas = map[string]int{"gateway": 2, "pipeline": 2, "haproxy": 2}

// docker runs the docker CLI; the test fails (never skips) without it.
func docker(t *testing.T, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("docker")
	if err != nil {
		t.Fatalf("the docker CLI is not installed (%v): the deployment checks need `docker stack config` "+
			"(only the client, no engine); install Docker's CLI", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	cmd.Env = os.Environ()
	for k, v := range testEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	return out
}

// stackConfig is a compose file as `docker stack config` resolves it.
func stackConfig(t *testing.T, file string) map[string]any {
	t.Helper()
	out := docker(t, "stack", "config", "-c", file)
	v, err := parseYAML(string(out))
	if err != nil {
		t.Fatalf("%s: reading docker stack config's output: %v", file, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: not a mapping", file)
	}
	return m
}

type node struct {
	name   string
	labels map[string]string
}

func readNodes(path string) ([]node, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var nodes []node
	sc := bufio.NewScanner(f)
	for no := 1; sc.Scan(); no++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		n := node{name: fields[0], labels: map[string]string{}}
		for _, kv := range fields[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" || v == "" {
				return nil, fmt.Errorf("%s:%d: %q is not label=value", path, no, kv)
			}
			if _, dup := n.labels[k]; dup {
				return nil, fmt.Errorf("%s:%d: label %s twice", path, no, k)
			}
			n.labels[k] = v
		}
		nodes = append(nodes, n)
	}
	return nodes, sc.Err()
}

// Helpers over the generic tree.
func get(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any, path ...string) string { s, _ := get(v, path...).(string); return s }

func strs(v any, path ...string) []string {
	var out []string
	for _, x := range asList(get(v, path...)) {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func asList(v any) []any { l, _ := v.([]any); return l }

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }

var constraintRE = regexp.MustCompile(`^node\.labels\.([A-Za-z0-9._-]+)\s*(==|!=)\s*(\S+)$`)

// placement returns the nodes a service's constraints allow.
func placement(constraints []string, nodes []node) ([]string, error) {
	var out []string
	for _, n := range nodes {
		ok := true
		for _, c := range constraints {
			m := constraintRE.FindStringSubmatch(c)
			if m == nil {
				return nil, fmt.Errorf("constraint %q: only node.labels.<key> ==/!= <value> is used here", c)
			}
			v, has := n.labels[m[1]]
			if (m[2] == "==") != (has && v == m[3]) {
				ok = false
			}
		}
		if ok {
			out = append(out, n.name)
		}
	}
	return out, nil
}

var (
	pinnedTag    = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:-]*/?[a-z0-9._-]+:([A-Za-z0-9._-]+)$`)
	digestRef    = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)
	urlPassword  = regexp.MustCompile(`://[^/@\s]*:[^/@\s]*@`)
	secretishEnv = regexp.MustCompile(`(?i)PASSW|SECRET|TOKEN|CREDENTIAL|PRIVATE`)
	// Names that look secret but are not, and why.
	notSecret = map[string]string{
		"ETCD_INITIAL_CLUSTER_TOKEN": "an identifier that keeps clusters apart, not a credential",
	}
)

// imagePinned reports why an image reference is not pinned to a version.
func imagePinned(ref string) string {
	if digestRef.MatchString(ref) {
		return ""
	}
	m := pinnedTag.FindStringSubmatch(ref)
	switch {
	case m == nil:
		return "no tag (or a malformed reference)"
	case m[1] == "latest" || !strings.ContainsAny(m[1], "0123456789"):
		return "tag " + m[1] + " is not a version"
	}
	return ""
}

// checkStack returns every broken invariant of the two halves.
func checkStack(files map[string]map[string]any, nodes []node) []string {
	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }

	// The node map: ten nodes, one role each.
	roles := map[string]int{}
	for _, n := range nodes {
		r, ok := n.labels["allezon.role"]
		if !ok {
			fail("nodes.conf: node %s has no allezon.role", n.name)
		}
		roles[r]++
	}
	if len(nodes) != 10 {
		fail("nodes.conf: %d nodes, want 10", len(nodes))
	}
	for r, want := range map[string]int{"gateway": 2, "pipeline": 2, "aerospike1": 1, "aerospike2": 1,
		"kafka1": 1, "kafka2": 1, "patroni1": 1, "patroni2": 1} {
		if roles[r] != want {
			fail("nodes.conf: %d nodes with allezon.role=%s, want %d", roles[r], r, want)
		}
	}

	seen := map[string]string{}     // service -> file
	dataNode := map[string]string{} // node -> data service on it
	dataPin := map[string]string{}  // constraint set -> data service
	names := []string{}
	for file := range files {
		names = append(names, file)
	}
	sort.Strings(names)
	for _, file := range names {
		cfg := files[file]
		for name, v := range asMap(cfg["services"]) {
			svc := asMap(v)
			where := file + ": " + name
			if other, dup := seen[name]; dup {
				fail("%s: also in %s (the halves share one network and its DNS names)", where, other)
			}
			seen[name] = file
			class, ok := classes[name]
			if !ok {
				fail("%s: unclassified service: add it to classes in stack/compose_test.go", where)
				continue
			}

			if why := imagePinned(str(svc, "image")); why != "" {
				fail("%s: image %q not pinned to a version: %s", where, str(svc, "image"), why)
			}

			// Healthcheck, or a documented reason for none.
			test := strs(svc, "healthcheck", "test")
			reason := strings.TrimSpace(str(svc, "x-no-healthcheck-reason"))
			switch {
			case len(test) > 0 && test[0] != "NONE" && reason != "":
				fail("%s: has both a healthcheck and x-no-healthcheck-reason", where)
			case (len(test) == 0 || test[0] == "NONE") && reason == "":
				fail("%s: no healthcheck and no x-no-healthcheck-reason", where)
			case reason != "" && class != "one-shot":
				fail("%s: only one-shot services may go without a healthcheck", where)
			}

			// Restart policy and resource limits.
			cond := str(svc, "deploy", "restart_policy", "condition")
			if class == "one-shot" {
				if cond != "on-failure" && cond != "none" {
					fail("%s: one-shot service with restart condition %q, want on-failure or none", where, cond)
				}
				if str(svc, "deploy", "labels", "allezon.one-shot") != "true" {
					fail("%s: one-shot service without the deploy label allezon.one-shot=true (the scripts wait on it)", where)
				}
			} else if cond != "any" {
				fail("%s: restart condition %q, want any", where, cond)
			}
			if str(svc, "deploy", "resources", "limits", "memory") == "" || str(svc, "deploy", "resources", "limits", "cpus") == "" {
				fail("%s: no cpu and memory limits", where)
			}

			// Replicas.
			replicas := 1
			if s := str(svc, "deploy", "replicas"); s != "" {
				replicas, _ = strconv.Atoi(s)
			}
			want := 1
			if w, ok := wantReplicas[name]; ok {
				want = w
			}
			if str(svc, "deploy", "mode") == "global" {
				fail("%s: global mode: placement must be by label and replica count", where)
			}
			if replicas != want {
				fail("%s: %d replicas, want %d", where, replicas, want)
			}

			// Placement by node label, against the node map.
			constraints := strs(svc, "deploy", "placement", "constraints")
			if len(constraints) == 0 {
				fail("%s: no placement constraint", where)
				continue
			}
			on, err := placement(constraints, nodes)
			if err != nil {
				fail("%s: %v", where, err)
				continue
			}
			hasVolume := false
			for _, vol := range asList(svc["volumes"]) {
				if str(vol, "type") == "volume" {
					hasVolume = true
				}
			}
			switch {
			case len(on) == 0:
				fail("%s: no node of nodes.conf matches %v", where, constraints)
			case (class == "data" || class == "coordination" || hasVolume) && len(on) != 1:
				fail("%s: holds state but may run on %d nodes %v: pin it to one", where, len(on), on)
			case len(on) < replicas:
				fail("%s: %d replicas but only %d nodes %v", where, replicas, len(on), on)
			}
			if class == "data" {
				for _, n := range on {
					if other, ok := dataNode[n]; ok {
						fail("%s: shares node %s with data service %s", where, n, other)
					}
					dataNode[n] = name
				}
				key := strings.Join(slices.Sorted(slices.Values(constraints)), " && ")
				if other, ok := dataPin[key]; ok {
					fail("%s: pinned by the same label as data service %s (%s)", where, other, key)
				}
				dataPin[key] = name
			}

			// Secrets are files, never environment values.
			attached := map[string]bool{}
			for _, s := range asList(svc["secrets"]) {
				attached[str(s, "source")] = true
				if t := str(s, "target"); t != "" {
					attached[t] = true
				}
			}
			for k, v := range asMap(svc["environment"]) {
				val, _ := v.(string)
				if urlPassword.MatchString(val) {
					fail("%s: %s holds a URL with a password", where, k)
				}
				if _, ok := notSecret[k]; !ok && secretishEnv.MatchString(k) {
					if !strings.HasSuffix(k, "_FILE") || !strings.HasPrefix(val, "/run/secrets/") {
						fail("%s: %s looks like a secret in plain environment; pass a /run/secrets/ file (*_FILE)", where, k)
					}
				}
				if s, ok := strings.CutPrefix(val, "/run/secrets/"); ok && !attached[s] {
					fail("%s: %s names secret %s, which the service does not mount", where, k, s)
				}
			}
		}

		// Top-level secrets are external (created by stack/3-secrets.sh).
		for s, v := range asMap(cfg["secrets"]) {
			if str(v, "external") != "true" {
				fail("%s: secret %s is not external", file, s)
			}
		}
		// Config files exist.
		for c, v := range asMap(cfg["configs"]) {
			f := str(v, "file")
			if f == "" {
				fail("%s: config %s has no file", file, c)
				continue
			}
			if !filepath.IsAbs(f) {
				f = filepath.Join(root, f)
			}
			if _, err := os.Stat(f); err != nil {
				fail("%s: config %s: %v", file, c, err)
			}
		}
	}
	for name := range classes {
		if _, ok := seen[name]; !ok {
			fail("service %s is classified but in neither compose file", name)
		}
	}
	bad = append(bad, checkOps(files["2.docker-compose.yaml"])...)
	return bad
}

func loadBoth(t *testing.T) (map[string]map[string]any, []node) {
	files := map[string]map[string]any{
		"1.docker-compose.yaml": stackConfig(t, "1.docker-compose.yaml"),
		"2.docker-compose.yaml": stackConfig(t, "2.docker-compose.yaml"),
	}
	nodes, err := readNodes("nodes.conf")
	if err != nil {
		t.Fatal(err)
	}
	return files, nodes
}

func TestStackInvariants(t *testing.T) {
	files, nodes := loadBoth(t)
	for _, b := range checkStack(files, nodes) {
		t.Error(b)
	}

	// The halves share the network that the first one creates.
	one, two := files["1.docker-compose.yaml"], files["2.docker-compose.yaml"]
	if n := asMap(get(one, "networks", "default")); str(n, "name") != "allezon" || str(n, "driver") != "overlay" || str(n, "attachable") != "true" {
		t.Errorf("1.docker-compose.yaml: default network %v, want the attachable overlay allezon", n)
	}
	if n := asMap(get(two, "networks", "default")); str(n, "name") != "allezon" || str(n, "external") != "true" {
		t.Errorf("2.docker-compose.yaml: default network %v, want the external allezon", n)
	}

	// The gateway: published through the routing mesh, rolling updates
	// that start the new task first.
	gw := get(two, "services", "gateway")
	published := false
	for _, p := range asList(get(gw, "ports")) {
		if str(p, "target") == "8088" && str(p, "published") == "8088" && str(p, "mode") == "ingress" {
			published = true
		}
	}
	if !published {
		t.Errorf("gateway: port 8088 not published in ingress mode: %v", get(gw, "ports"))
	}
	if o := str(gw, "deploy", "update_config", "order"); o != "start-first" {
		t.Errorf("gateway: update order %q, want start-first", o)
	}

	// The images we build come from the registry and tag given.
	reg, ver := testEnv["ALLEZON_REGISTRY"], testEnv["ALLEZON_VERSION"]
	for file, name := range map[string]string{"2.docker-compose.yaml gateway": "allezon", "2.docker-compose.yaml pipeline": "allezon",
		"2.docker-compose.yaml migrate": "allezon", "1.docker-compose.yaml patroni1": "allezon-patroni", "1.docker-compose.yaml patroni2": "allezon-patroni"} {
		f, svc, _ := strings.Cut(file, " ")
		if got, want := str(files[f], "services", svc, "image"), reg+"/"+name+":"+ver; got != want {
			t.Errorf("%s: image %q, want %q", file, got, want)
		}
	}

	// Prometheus scrapes every gateway and pipeline task on its ops port.
	prom, err := os.ReadFile(filepath.Join(root, "services/prometheus/prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	scrape := regexp.MustCompile(`names: \[tasks\.([a-z0-9-]+)\]\s+type: A\s+port: (\d+)`).FindAllStringSubmatch(string(prom), -1)
	scraped := map[string]bool{}
	for _, m := range scrape {
		scraped[m[1]] = true
		addr := str(two, "services", m[1], "environment", "ALLEZON_OPS_HTTP")
		if !strings.HasSuffix(addr, ":"+m[2]) {
			t.Errorf("prometheus.yml scrapes tasks.%s on port %s, but the service listens on %q", m[1], m[2], addr)
		}
	}
	for _, svc := range []string{"gateway", "pipeline"} {
		if !scraped[svc] {
			t.Errorf("prometheus.yml: no dns_sd_configs for tasks.%s", svc)
		}
	}
}

// The checks catch what they are for: each mutation of the real files
// must be reported.
func TestStackInvariantsBite(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		mutate     func(files map[string]map[string]any)
	}{
		{"two data services on one label", "shares node", func(f map[string]map[string]any) {
			asMap(get(f["1.docker-compose.yaml"], "services", "patroni2", "deploy", "placement"))["constraints"] = []any{"node.labels.allezon.role == kafka1"}
		}},
		{"unpinned data service", "holds state but may run on", func(f map[string]map[string]any) {
			asMap(get(f["1.docker-compose.yaml"], "services", "aerospike1", "deploy", "placement"))["constraints"] = []any{"node.labels.allezon.role != gateway"}
		}},
		{"latest image", "not pinned", func(f map[string]map[string]any) {
			asMap(get(f["1.docker-compose.yaml"], "services", "kafka1"))["image"] = "apache/kafka:latest"
		}},
		{"untagged image", "not pinned", func(f map[string]map[string]any) {
			asMap(get(f["2.docker-compose.yaml"], "services", "grafana"))["image"] = "grafana/grafana"
		}},
		{"password in a DSN", "URL with a password", func(f map[string]map[string]any) {
			asMap(get(f["2.docker-compose.yaml"], "services", "pipeline", "environment"))["ALLEZON_AGGREGATES"] = "postgres://allezon:hunter2@haproxy:5000/allezon"
		}},
		{"password variable", "plain environment", func(f map[string]map[string]any) {
			asMap(get(f["1.docker-compose.yaml"], "services", "patroni1", "environment"))["PATRONI_SUPERUSER_PASSWORD"] = "hunter2"
		}},
		{"secret file not mounted", "does not mount", func(f map[string]map[string]any) {
			asMap(get(f["2.docker-compose.yaml"], "services", "gateway"))["secrets"] = []any{}
		}},
		{"no healthcheck", "no healthcheck", func(f map[string]map[string]any) {
			delete(asMap(get(f["2.docker-compose.yaml"], "services", "pipeline")), "healthcheck")
		}},
		{"no ops listener", "want an ops listener", func(f map[string]map[string]any) {
			delete(asMap(get(f["2.docker-compose.yaml"], "services", "pipeline", "environment")), "ALLEZON_OPS_HTTP")
		}},
		{"ops port published", "is published", func(f map[string]map[string]any) {
			gw := asMap(get(f["2.docker-compose.yaml"], "services", "gateway"))
			gw["ports"] = append(asList(gw["ports"]), map[string]any{"target": "9088", "published": "9088", "mode": "ingress"})
		}},
		{"healthcheck on the API port", "does not use the ops port", func(f map[string]map[string]any) {
			asMap(get(f["2.docker-compose.yaml"], "services", "gateway", "healthcheck"))["test"] = []any{"CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8088/metrics"}
		}},
		{"three gateways", "3 replicas, want 2", func(f map[string]map[string]any) {
			asMap(get(f["2.docker-compose.yaml"], "services", "gateway", "deploy"))["replicas"] = "3"
		}},
		{"unknown service", "unclassified", func(f map[string]map[string]any) {
			asMap(f["2.docker-compose.yaml"]["services"])["redis"] = map[string]any{}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files, nodes := loadBoth(t)
			tc.mutate(files)
			bad := checkStack(files, nodes)
			if !slices.ContainsFunc(bad, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Errorf("want a report containing %q, got %q", tc.want, bad)
			}
		})
	}
}

// The operator scripts agree with the stack files: the one-off containers
// use the images the stacks run, and every Swarm config's name variable
// (ALLEZON_CFG_*) is hashed from the file that config is made of.
func TestScriptsMatchStackFiles(t *testing.T) {
	lib, err := os.ReadFile("lib.sh")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := loadBoth(t)
	images := map[string]bool{}
	for _, cfg := range files {
		for _, svc := range asMap(cfg["services"]) {
			images[str(svc, "image")] = true
		}
	}
	for _, v := range []string{"KAFKA_IMAGE", "HAPROXY_IMAGE", "AEROSPIKE_TOOLS_IMAGE"} {
		m := regexp.MustCompile(`(?m)^` + v + `=(\S+)$`).FindSubmatch(lib)
		if m == nil {
			t.Errorf("lib.sh: no %s", v)
			continue
		}
		ref := string(m[1])
		if why := imagePinned(ref); why != "" {
			t.Errorf("lib.sh: %s=%s: %s", v, ref, why)
		}
		if v != "AEROSPIKE_TOOLS_IMAGE" && !images[ref] {
			t.Errorf("lib.sh: %s=%s, which no service of the stack files runs", v, ref)
		}
	}

	hashed := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^(ALLEZON_CFG_[A-Z_]+) (\S+)$`).FindAllSubmatch(lib, -1) {
		hashed[string(m[1])] = string(m[2])
	}
	named := map[string]string{}
	for _, f := range []string{"1.docker-compose.yaml", "2.docker-compose.yaml"} {
		raw, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`name: \S*\$\{(ALLEZON_CFG_[A-Z_]+):-v1\}\n\s+file: \./(\S+)`).FindAllSubmatch(raw, -1) {
			named[string(m[1])] = string(m[2])
		}
		if n, want := len(regexp.MustCompile(`(?m)^    file: `).FindAll(raw, -1)), len(asMap(files[f]["configs"])); n != want {
			t.Errorf("%s: %d configs, %d of them named by an ALLEZON_CFG_ variable", f, want, n)
		}
	}
	if len(named) == 0 || !maps.Equal(named, hashed) {
		t.Errorf("config name variables of the stack files %v differ from those lib.sh hashes %v", named, hashed)
	}
}
