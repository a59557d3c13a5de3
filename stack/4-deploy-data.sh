#!/usr/bin/env bash
# Usage: stack/4-deploy-data.sh [--timeout SECONDS]
#
# Step 4: deploy the stateful half (1.docker-compose.yaml) as the stack
# "allezon-data" and wait until it is healthy: every service running and
# passing its healthcheck, the events topic created, one Patroni leader
# behind HAProxy, an Aerospike cluster of 2, a Kafka topic of 2 partitions.
# Safe to re-run: an unchanged service is left alone, a changed one rolls.
# Needs the labels (step 1), the images (step 2: the release in
# ~/.allezon/release, or ALLEZON_REGISTRY and ALLEZON_VERSION) and the
# secrets (step 3).
#   --timeout SECONDS  how long to wait for health (default 900)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wants_help "$@"

parse_timeout 900 "$@"
need_manager
load_release
need_secrets allezon_db_password allezon_pg_superuser_password allezon_pg_replication_password
for label in role=aerospike1 role=aerospike2 role=kafka1 role=kafka2 role=patroni1 role=patroni2 role=pipeline etcd3=true kraft3=true; do
  [[ -n $(docker node ls -q --filter "node.label=allezon.$label") ]] ||
    die "no node carries the label allezon.$label: run stack/1-label-nodes.sh"
done
export_config_hashes
info "deploying $DATA_STACK from 1.docker-compose.yaml"
(cd "$REPO_ROOT" && docker stack deploy --with-registry-auth --prune -c 1.docker-compose.yaml "$DATA_STACK")
wait_stack "$DATA_STACK" "$timeout" || die "the stateful half is not healthy"
fails=0
check_patroni || fails=$((fails + 1))
check_aerospike || fails=$((fails + 1))
check_kafka || fails=$((fails + 1))
((fails == 0)) || die "$fails checks failed; see above"
info "the stateful half is up; next: stack/5-migrate.sh"
