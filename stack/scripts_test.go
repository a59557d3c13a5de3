package stack

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The operator scripts' logic, run against a fake docker CLI: it logs
// every call and answers from canned outputs (FAKE_<words of the call>).
const fakeDocker = `#!/usr/bin/env bash
echo "docker $*" >>"$FAKE_LOG"
key="FAKE_$(printf '%s' "$1_$2" | tr -c 'A-Za-z0-9' '_')"
case "$1 $2" in
  "info --format") echo "active true"; exit 0 ;;
  "node inspect")
    if [[ $3 == --format ]]; then printf '%s\n' ${FAKE_NODE_LABELS:-}; fi
    exit 0 ;;
  "service inspect")
    for a in "$@"; do last=$a; done
    [[ ${FAKE_ONESHOT:-} == *" $last "* ]] && echo true || echo ""
    exit 0 ;;
  "secret inspect") exit "${FAKE_SECRET_EXISTS:-1}" ;;
esac
if [[ -n ${!key:-} ]]; then printf '%b\n' "${!key}"; fi
exit 0
`

func runScript(t *testing.T, env []string, script string, args ...string) (string, string, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "docker"), []byte(fakeDocker), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "docker.log")
	cmd := exec.Command("bash", append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "FAKE_LOG="+log, "HOME="+dir)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	calls, _ := os.ReadFile(log)
	return string(out), string(calls), err
}

func TestLabelNodes(t *testing.T) {
	out, calls, err := runScript(t, []string{"FAKE_NODE_LABELS=allezon.stale allezon.role other.label"}, "1-label-nodes.sh")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		"docker node update --label-add allezon.role=gateway node-1",
		"docker node update --label-add allezon.role=aerospike1 node-3",
		"docker node update --label-rm allezon.stale node-9",
	} {
		if !strings.Contains(calls, want) {
			t.Errorf("no %q in the docker calls:\n%s", want, calls)
		}
	}
	if strings.Contains(calls, "--label-rm allezon.role ") || strings.Contains(calls, "other.label") {
		t.Errorf("removed a label the map gives, or a foreign one:\n%s", calls)
	}
	if n := strings.Count(calls, "--label-add allezon.role="); n != 10 {
		t.Errorf("%d nodes got a role, want 10:\n%s", n, calls)
	}
	if !strings.Contains(calls, "--label-add allezon.etcd3=true --label-add allezon.role=pipeline node-9") &&
		!strings.Contains(calls, "--label-add allezon.role=pipeline --label-add allezon.etcd3=true node-9") {
		t.Errorf("node-9 did not get both its labels:\n%s", calls)
	}
}

func TestSecrets(t *testing.T) {
	secrets := t.TempDir()
	os.WriteFile(filepath.Join(secrets, "allezon_db_password"), []byte("given\n"), 0o600)
	out, calls, err := runScript(t, []string{"ALLEZON_SECRETS_DIR=" + secrets}, "3-secrets.sh")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, s := range []string{"allezon_db_password", "allezon_pg_superuser_password", "allezon_pg_replication_password", "allezon_grafana_admin_password"} {
		if !strings.Contains(calls, "docker secret create "+s+" "+filepath.Join(secrets, s)) {
			t.Errorf("secret %s not created:\n%s", s, calls)
		}
		b, err := os.ReadFile(filepath.Join(secrets, s))
		if err != nil {
			t.Fatal(err)
		}
		if s == "allezon_db_password" {
			if string(b) != "given\n" {
				t.Errorf("the operator's password file was changed: %q", b)
			}
			continue
		}
		if len(b) != 32 || strings.Trim(string(b), "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") != "" {
			t.Errorf("generated %s = %q, want 32 alphanumerics", s, b)
		}
		if fi, _ := os.Stat(filepath.Join(secrets, s)); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", s, fi.Mode().Perm())
		}
	}
	// Existing Swarm secrets are left alone.
	_, calls, err = runScript(t, []string{"ALLEZON_SECRETS_DIR=" + secrets, "FAKE_SECRET_EXISTS=0"}, "3-secrets.sh")
	if err != nil || strings.Contains(calls, "secret create") {
		t.Errorf("with the secrets in the swarm: err %v, calls:\n%s", err, calls)
	}
}

func TestWaitStack(t *testing.T) {
	wait := `source ./lib.sh; wait_stack allezon 0`
	for _, tc := range []struct {
		name string
		env  []string
		ok   bool
	}{
		{"all up", []string{`FAKE_service_ls=allezon_gateway 2/2\nallezon_migrate 0/1`, "FAKE_ONESHOT= allezon_migrate ",
			`FAKE_service_ps=Complete 3 seconds ago`}, true},
		{"a replica missing", []string{`FAKE_service_ls=allezon_gateway 1/2`}, false},
		{"scaled to zero", []string{`FAKE_service_ls=allezon_gateway 0/0`}, false},
		{"one-shot still running", []string{`FAKE_service_ls=allezon_migrate 1/1`, "FAKE_ONESHOT= allezon_migrate ",
			`FAKE_service_ps=Running 3 seconds ago`}, false},
		{"one-shot retried and completed", []string{`FAKE_service_ls=allezon_migrate 0/1`, "FAKE_ONESHOT= allezon_migrate ",
			`FAKE_service_ps=Complete 1 second ago\nFailed 9 seconds ago`}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runScript(t, tc.env, "-c", wait)
			if (err == nil) != tc.ok {
				t.Errorf("wait_stack: err %v, want ok=%v\n%s", err, tc.ok, out)
			}
		})
	}
}

// Every script answers --help with its usage, and refuses unknown options.
func TestScriptsHelp(t *testing.T) {
	scripts, err := filepath.Glob("*.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range scripts {
		if s == "lib.sh" {
			continue
		}
		out, _, err := runScript(t, nil, s, "--help")
		if err != nil || !strings.HasPrefix(out, "Usage: stack/"+s) {
			t.Errorf("%s --help: %v\n%s", s, err, out)
		}
		out, _, err = runScript(t, nil, s, "--no-such-option")
		if err == nil || !strings.Contains(out, "error:") {
			t.Errorf("%s --no-such-option: %v\n%s", s, err, out)
		}
	}
}
