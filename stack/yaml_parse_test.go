package stack

import (
	"reflect"
	"strings"
	"testing"
)

// The parser reads what docker stack config prints (this sample is its
// output for a compose file full of awkward strings).
func TestParseYAML(t *testing.T) {
	src := `version: "3.8"
services:
  a:
    command:
      - sh
      - -c
      - 'echo a: b'
      - '- dash'
      - it's
      - '#hash'
      - |
        multi
        line
      - "tab\there"
      - ""
      - "true"
      - '*star'
      - 'trailing '
      - |-
        no newline
    deploy:
      placement:
        constraints:
          - node.labels.allezon.role == gateway
    environment:
      K: 'x: y'
      WEIRD KEY: v
    image: x:1
    ports:
      - mode: ingress
        target: 8088
        published: "8088"
      - mode: host
        target: 9
volumes:
  data: {}
list:
- at the key's column
empty: []
`
	got, err := parseYAML(src)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"version": "3.8",
		"services": map[string]any{"a": map[string]any{
			"command": []any{"sh", "-c", "echo a: b", "- dash", "it's", "#hash", "multi\nline\n",
				"tab\there", "", "true", "*star", "trailing ", "no newline"},
			"deploy":      map[string]any{"placement": map[string]any{"constraints": []any{"node.labels.allezon.role == gateway"}}},
			"environment": map[string]any{"K": "x: y", "WEIRD KEY": "v"},
			"image":       "x:1",
			"ports": []any{
				map[string]any{"mode": "ingress", "target": "8088", "published": "8088"},
				map[string]any{"mode": "host", "target": "9"},
			},
		}},
		"volumes": map[string]any{"data": map[string]any{}},
		"list":    []any{"at the key's column"},
		"empty":   []any{},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parsed\n%#v\nwant\n%#v", got, want)
	}
}

func TestParseYAMLRefuses(t *testing.T) {
	for _, src := range []string{
		"a: [1, 2]\n",
		"a: {b: c}\n",
		"a: &x 1\n",
		"a: 1\na: 2\n",
		"a: 'open\n",
		"a: b # comment\n",
		"a:\n  - x\n  y: z\n",
	} {
		if v, err := parseYAML(src); err == nil {
			t.Errorf("%q parsed as %#v, want an error", src, v)
		} else if !strings.Contains(err.Error(), "line") {
			t.Errorf("%q: error without a line number: %v", src, err)
		}
	}
}
