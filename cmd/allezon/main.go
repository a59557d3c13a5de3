// Command allezon is the whole platform in one binary: every component in
// one process (allezon all), or each on its own against the production
// backends (allezon gateway, allezon pipeline).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name, help string
	run        func(ctx context.Context, args []string) error
}

var commands = []command{
	{"all", "every component in one process, embedded backends by default", runAll},
	{"gateway", "the HTTP gateway alone", runGateway},
	{"pipeline", "a stream worker alone (aggregates)", runPipeline},
	{"migrate", "create or update the PostgreSQL schema (idempotent)", runMigrate},
	{"broker", "a standalone embedded Kafka-protocol broker (kfake) for multi-process runs", runBroker},
	{"loadgen", "the testing platform: replay a deterministic stream and check every answer", runLoadgen},
	{"version", "print the version", runVersion},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "allezon:", err)
		os.Exit(1)
	}
}

func dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		if len(args) == 0 {
			return errors.New("missing command")
		}
		return nil
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:])
		}
	}
	usage()
	return fmt.Errorf("unknown command %q", args[0])
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: allezon <command> [flags]   (allezon <command> -h lists the flags)")
	fmt.Fprintln(os.Stderr, "\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-9s %s\n", c.name, c.help)
	}
}

func runVersion(_ context.Context, args []string) error {
	fs := newFlagSet("version")
	if err := fs.parse(args); err != nil {
		return err
	}
	fmt.Println("allezon", version)
	return nil
}
