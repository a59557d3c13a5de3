package stack

import (
	"fmt"
	"strconv"
	"strings"
)

// parseYAML reads the block-style YAML that `docker stack config` prints
// (the module has no YAML library, and none may be added for a test):
// block mappings and sequences, plain, single- and double-quoted scalars,
// literal block scalars (|, |-, |+), and the empty flow collections {} and
// []. Every scalar is a string; mappings are map[string]any and sequences
// []any. Anything else is an error, never a silent misreading. Anchors,
// tags and flow collections with content are not supported (docker prints
// none: it resolves them).
func parseYAML(src string) (any, error) {
	p := &yamlParser{}
	for i, raw := range strings.Split(strings.ReplaceAll(src, "\r\n", "\n"), "\n") {
		if strings.HasPrefix(strings.TrimLeft(raw, " "), "\t") {
			return nil, fmt.Errorf("yaml line %d: tab indentation", i+1)
		}
		p.lines = append(p.lines, yamlLine{no: i + 1, raw: raw})
	}
	p.skipBlank()
	if p.pos >= len(p.lines) {
		return map[string]any{}, nil
	}
	v, err := p.block(p.indent())
	if err != nil {
		return nil, err
	}
	p.skipBlank()
	if p.pos < len(p.lines) {
		return nil, p.errf("unexpected content")
	}
	return v, nil
}

type yamlLine struct {
	no  int
	raw string
}

type yamlParser struct {
	lines []yamlLine
	pos   int
}

func (p *yamlParser) errf(format string, args ...any) error {
	no := len(p.lines)
	if p.pos < len(p.lines) {
		no = p.lines[p.pos].no
	}
	return fmt.Errorf("yaml line %d: %s", no, fmt.Sprintf(format, args...))
}

func isBlank(s string) bool {
	t := strings.TrimSpace(s)
	return t == "" || strings.HasPrefix(t, "#") || t == "---"
}

func (p *yamlParser) skipBlank() {
	for p.pos < len(p.lines) && isBlank(p.lines[p.pos].raw) {
		p.pos++
	}
}

// indent is the indentation of the current line.
func (p *yamlParser) indent() int {
	raw := p.lines[p.pos].raw
	return len(raw) - len(strings.TrimLeft(raw, " "))
}

// block parses the mapping or sequence whose lines start at column ind.
func (p *yamlParser) block(ind int) (any, error) {
	text := strings.TrimSpace(p.lines[p.pos].raw)
	if text == "-" || strings.HasPrefix(text, "- ") {
		return p.sequence(ind)
	}
	return p.mapping(ind)
}

func (p *yamlParser) sequence(ind int) (any, error) {
	seq := []any{}
	for {
		p.skipBlank()
		if p.pos >= len(p.lines) || p.indent() < ind {
			return seq, nil
		}
		if p.indent() > ind {
			return nil, p.errf("bad indentation in a sequence")
		}
		text := strings.TrimSpace(p.lines[p.pos].raw)
		if text != "-" && !strings.HasPrefix(text, "- ") {
			return seq, nil // a mapping key at the same column ends a sequence nested under it
		}
		rest := strings.TrimPrefix(strings.TrimPrefix(text, "-"), " ")
		restCol := ind + (len(text) - len(rest))
		switch {
		case strings.TrimSpace(rest) == "":
			p.pos++
			p.skipBlank()
			if p.pos >= len(p.lines) || p.indent() <= ind {
				seq = append(seq, "")
				continue
			}
			v, err := p.block(p.indent())
			if err != nil {
				return nil, err
			}
			seq = append(seq, v)
		case strings.HasPrefix(rest, "- "):
			return nil, p.errf("nested inline sequences are not supported")
		case isMappingEntry(rest):
			// "- key: value": a mapping whose first line shares the dash's;
			// its other keys sit at restCol.
			p.lines[p.pos].raw = strings.Repeat(" ", restCol) + rest
			v, err := p.mapping(restCol)
			if err != nil {
				return nil, err
			}
			seq = append(seq, v)
		default:
			v, err := p.scalarValue(rest, ind)
			if err != nil {
				return nil, err
			}
			seq = append(seq, v)
		}
	}
}

func (p *yamlParser) mapping(ind int) (any, error) {
	m := map[string]any{}
	for {
		p.skipBlank()
		if p.pos >= len(p.lines) || p.indent() < ind {
			return m, nil
		}
		if p.indent() > ind {
			return nil, p.errf("bad indentation in a mapping")
		}
		text := strings.TrimSpace(p.lines[p.pos].raw)
		if text == "-" || strings.HasPrefix(text, "- ") {
			return nil, p.errf("sequence item where a mapping key was expected")
		}
		key, rest, err := splitKey(text)
		if err != nil {
			return nil, p.errf("%v", err)
		}
		if _, dup := m[key]; dup {
			return nil, p.errf("duplicate key %q", key)
		}
		if strings.TrimSpace(rest) == "" {
			p.pos++
			p.skipBlank()
			switch {
			case p.pos < len(p.lines) && p.indent() > ind:
				v, err := p.block(p.indent())
				if err != nil {
					return nil, err
				}
				m[key] = v
			case p.pos < len(p.lines) && p.indent() == ind && strings.HasPrefix(strings.TrimSpace(p.lines[p.pos].raw), "-"):
				// A sequence may sit at its key's column.
				v, err := p.sequence(ind)
				if err != nil {
					return nil, err
				}
				m[key] = v
			default:
				m[key] = ""
			}
			continue
		}
		v, err := p.scalarValue(strings.TrimLeft(rest, " "), ind)
		if err != nil {
			return nil, err
		}
		m[key] = v
	}
}

// isMappingEntry reports whether s starts with a key followed by ":".
func isMappingEntry(s string) bool {
	_, _, err := splitKey(s)
	return err == nil
}

// splitKey splits "key: rest" (or "key:") with a plain or quoted key.
func splitKey(s string) (key, rest string, err error) {
	if s == "" {
		return "", "", fmt.Errorf("empty line")
	}
	if s[0] == '"' || s[0] == '\'' {
		k, n, err := quoted(s)
		if err != nil {
			return "", "", err
		}
		after := s[n:]
		if after != ":" && !strings.HasPrefix(after, ": ") {
			return "", "", fmt.Errorf("no ':' after the quoted key %q", k)
		}
		return k, strings.TrimPrefix(after, ":"), nil
	}
	if strings.ContainsAny(s[:1], "[]{}&*!|>%@`") {
		return "", "", fmt.Errorf("unsupported syntax %q", s)
	}
	if i := strings.Index(s, ": "); i >= 0 {
		return s[:i], s[i+1:], nil
	}
	if strings.HasSuffix(s, ":") {
		return s[:len(s)-1], "", nil
	}
	return "", "", fmt.Errorf("not a mapping entry: %q", s)
}

// scalarValue reads the value after "key: " or "- ": an inline scalar, an
// empty flow collection, or a literal block scalar on the next lines
// (indented more than parent). It consumes the line(s).
func (p *yamlParser) scalarValue(s string, parent int) (any, error) {
	s = strings.TrimRight(s, " ")
	switch {
	case s == "{}":
		p.pos++
		return map[string]any{}, nil
	case s == "[]":
		p.pos++
		return []any{}, nil
	case s == "|" || s == "|-" || s == "|+":
		p.pos++
		return p.literal(s[1:], parent), nil
	case s[0] == '"' || s[0] == '\'':
		v, n, err := quoted(s)
		if err != nil {
			return nil, p.errf("%v", err)
		}
		if strings.TrimSpace(s[n:]) != "" {
			return nil, p.errf("text after a quoted scalar: %q", s[n:])
		}
		p.pos++
		return v, nil
	case strings.ContainsAny(s[:1], "[{&*!|>%@`"):
		return nil, p.errf("unsupported YAML syntax %q", s)
	case strings.Contains(s, " #"):
		return nil, p.errf("comment after a value: %q", s)
	}
	p.pos++
	return s, nil
}

// literal reads a literal block scalar's lines, indented more than parent.
func (p *yamlParser) literal(chomp string, parent int) string {
	var lines []string
	ind := -1
	for p.pos < len(p.lines) {
		raw := p.lines[p.pos].raw
		if strings.TrimSpace(raw) == "" {
			lines = append(lines, "")
			p.pos++
			continue
		}
		n := len(raw) - len(strings.TrimLeft(raw, " "))
		if n <= parent || (ind >= 0 && n < ind) {
			break
		}
		if ind < 0 {
			ind = n
		}
		lines = append(lines, raw[ind:])
		p.pos++
	}
	// Trailing blank lines belong to the chomping, not the content.
	end := len(lines)
	for end > 0 && lines[end-1] == "" {
		end--
	}
	body := strings.Join(lines[:end], "\n")
	switch chomp {
	case "-":
		return body
	case "+":
		return body + strings.Repeat("\n", len(lines)-end+1)
	}
	if body == "" {
		return ""
	}
	return body + "\n"
}

// quoted reads a single- or double-quoted scalar at the start of s and
// returns its value and length.
func quoted(s string) (string, int, error) {
	q := s[0]
	for i := 1; i < len(s); i++ {
		switch {
		case q == '\'' && s[i] == '\'':
			if i+1 < len(s) && s[i+1] == '\'' {
				i++
				continue
			}
			return strings.ReplaceAll(s[1:i], "''", "'"), i + 1, nil
		case q == '"' && s[i] == '\\':
			i++
		case q == '"' && s[i] == '"':
			v, err := strconv.Unquote(s[:i+1])
			if err != nil {
				return "", 0, fmt.Errorf("double-quoted scalar %s: %v", s[:i+1], err)
			}
			return v, i + 1, nil
		}
	}
	return "", 0, fmt.Errorf("unterminated quoted scalar %q", s)
}
