package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// flagSet wraps flag.FlagSet so every flag has an ALLEZON_* environment
// equivalent: the environment sets the default, a flag on the command line
// wins. The usage text names the variable next to each flag.
type flagSet struct {
	*flag.FlagSet
	errs []error
}

func newFlagSet(name string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError)}
	return fs
}

func (fs *flagSet) env(name, env, def string) (string, string) {
	usage := fmt.Sprintf("[$%s]", env)
	if v, ok := os.LookupEnv(env); ok {
		return v, usage
	}
	return def, usage
}

func (fs *flagSet) String(p *string, name, env, def, help string) {
	v, u := fs.env(name, env, def)
	fs.StringVar(p, name, v, help+" "+u)
}

func (fs *flagSet) Duration(p *time.Duration, name, env string, def time.Duration, help string) {
	v, u := fs.env(name, env, def.String())
	d, err := time.ParseDuration(v)
	if err != nil {
		fs.errs = append(fs.errs, fmt.Errorf("$%s: %w", env, err))
	}
	fs.DurationVar(p, name, d, help+" "+u)
}

func (fs *flagSet) Int(p *int, name, env string, def int, help string) {
	v, u := fs.env(name, env, strconv.Itoa(def))
	n, err := strconv.Atoi(v)
	if err != nil {
		fs.errs = append(fs.errs, fmt.Errorf("$%s: %w", env, err))
	}
	fs.IntVar(p, name, n, help+" "+u)
}

func (fs *flagSet) Bool(p *bool, name, env string, def bool, help string) {
	v, u := fs.env(name, env, strconv.FormatBool(def))
	b, err := strconv.ParseBool(v)
	if err != nil {
		fs.errs = append(fs.errs, fmt.Errorf("$%s: %w", env, err))
	}
	fs.BoolVar(p, name, b, help+" "+u)
}

// parse parses args and reports bad environment values too.
func (fs *flagSet) parse(args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(fs.errs) > 0 {
		return fs.errs[0]
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return nil
}
