package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/allezon/allezon/broker"
	"github.com/allezon/allezon/services/postgres"
)

// runMigrate creates or updates the PostgreSQL schema of the aggregates.
func runMigrate(ctx context.Context, args []string) error {
	var c config
	fs := newFlagSet("migrate")
	c.aggregatesFlags(fs)
	fs.String(&c.LogLevel, "log-level", "ALLEZON_LOG_LEVEL", "info", "debug, info, warn or error")
	c.LogFormat = "text"
	if err := fs.parse(args); err != nil {
		return err
	}
	if !isPostgres(c.Aggregates) {
		return errors.New("migrate: --aggregates must be a postgres:// DSN (Pebble needs no migration)")
	}
	if err := c.applyPasswordFile(); err != nil {
		return err
	}
	if err := postgres.Migrate(ctx, c.Aggregates); err != nil {
		return err
	}
	fmt.Println("migrate: schema up to date")
	return nil
}

// runBroker runs the embedded broker alone, so a gateway and a pipeline in
// separate processes can share an event log without a Kafka installation.
func runBroker(ctx context.Context, args []string) error {
	var c config
	fs := newFlagSet("broker")
	fs.String(&c.DataDir, "data", "ALLEZON_DATA_DIR", "./data", "data directory")
	fs.String(&c.BrokerAddr, "broker-addr", "ALLEZON_BROKER_ADDR", "127.0.0.1:9092", "listen address")
	fs.Int(&c.Partitions, "partitions", "ALLEZON_PARTITIONS", 2, "partitions of the events topic")
	fs.Duration(&c.EventsRetention, "events-retention", "ALLEZON_EVENTS_RETENTION", 24*60*60*1e9, "how long events are kept (once the group committed them)")
	fs.String(&c.Group, "group", "ALLEZON_GROUP", "allezon-pipeline", "consumer group of the stream workers: retention never deletes what it has not committed")
	fs.String(&c.LogLevel, "log-level", "ALLEZON_LOG_LEVEL", "info", "debug, info, warn or error")
	fs.String(&c.LogFormat, "log-format", "ALLEZON_LOG_FORMAT", "text", "text or json")
	if err := fs.parse(args); err != nil {
		return err
	}
	log, err := c.logger()
	if err != nil {
		return err
	}
	b, err := broker.Start(broker.Config{
		Dir: filepath.Join(c.DataDir, "events"), Addr: c.BrokerAddr, Topic: defaultTopic,
		Partitions: int32(c.Partitions), Retention: c.EventsRetention, Group: c.Group, Logger: log,
	})
	if err != nil {
		return err
	}
	defer b.Close()
	log.Info("broker listening", "addrs", b.Addrs(), "topic", defaultTopic)
	<-ctx.Done()
	return nil
}
