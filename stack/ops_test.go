package stack

import (
	"fmt"
	"strings"
)

// checkOps: the gateway and the pipeline serve /metrics and /health on an
// ops port (ALLEZON_OPS_HTTP) that is not published, apart from the
// gateway's published API port, and their healthchecks use it.
func checkOps(two map[string]any) []string {
	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	for _, name := range []string{"gateway", "pipeline"} {
		svc := get(two, "services", name)
		ops := str(svc, "environment", "ALLEZON_OPS_HTTP")
		_, port, ok := strings.Cut(ops, ":")
		if !ok || port == "" {
			fail("%s: ALLEZON_OPS_HTTP %q, want an ops listener (host:port)", name, ops)
			continue
		}
		if _, api, _ := strings.Cut(str(svc, "environment", "ALLEZON_HTTP_ADDR"), ":"); api == port {
			fail("%s: the ops port %s is the API port", name, port)
		}
		for _, p := range asList(get(svc, "ports")) {
			if str(p, "target") == port {
				fail("%s: the ops port %s is published", name, port)
			}
		}
		if test := strings.Join(strs(svc, "healthcheck", "test"), " "); !strings.Contains(test, "127.0.0.1:"+port+"/") {
			fail("%s: healthcheck %q does not use the ops port %s", name, test, port)
		}
	}
	return bad
}
