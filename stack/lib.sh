# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are used by the scripts that source this file
# Shared by the operator scripts in stack/ (sourced, not run). Every script
# runs with `set -euo pipefail` and talks to a Swarm manager through the
# docker CLI (the local engine, or DOCKER_HOST / a docker context).

# Stack names: the stateful half, then the stateless one.
DATA_STACK=allezon-data
APP_STACK=allezon
NETWORK=allezon

# Third-party images the scripts run as one-off containers on the stack's
# network; the same versions as in the compose files (stack/compose_test.go
# checks that).
KAFKA_IMAGE=apache/kafka:3.9.0
HAPROXY_IMAGE=haproxy:2.8.5-alpine
AEROSPIKE_TOOLS_IMAGE=aerospike/aerospike-tools:11.0.0

# Secrets: Swarm secret name = file name in the operator's secrets folder.
SECRETS=(allezon_db_password allezon_pg_superuser_password allezon_pg_replication_password allezon_grafana_admin_password)
ALLEZON_HOME=${ALLEZON_HOME:-$HOME/.allezon}
SECRETS_DIR=${ALLEZON_SECRETS_DIR:-$ALLEZON_HOME/secrets}
RELEASE_FILE=$ALLEZON_HOME/release

STACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$STACK_DIR/.." && pwd)

info() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2
  exit 1
}

# usage prints the comment block at the top of the calling script (after
# the shebang), without the leading "# ".
usage() {
  sed -n '2,/^[^#]/{/^#/!q;s/^# \{0,1\}//;p;}' "$0"
}

# wants_help exits with the usage when an argument asks for it.
wants_help() {
  local a
  for a in "$@"; do
    case $a in -h | --help | help)
      usage
      exit 0
      ;;
    esac
  done
}

# parse_timeout DEFAULT ARGS...: sets timeout from --timeout SECONDS (else
# DEFAULT) and dies on any other argument. The step scripts take only it.
parse_timeout() {
  timeout=$1
  shift
  while (($#)); do
    case $1 in
      --timeout)
        timeout=${2:?--timeout needs seconds}
        shift 2
        ;;
      *) die "unknown argument $1 (see --help)" ;;
    esac
  done
}

need_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' is needed and not installed"
  done
}

# need_manager checks that the docker CLI reaches a Swarm manager.
need_manager() {
  need_cmd docker
  local state
  state=$(docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}' 2>/dev/null) ||
    die "cannot reach a Docker engine (is DOCKER_HOST or the docker context right?)"
  [[ $state == "active true" ]] ||
    die "this engine is not a Swarm manager (swarm state: $state); run on a manager or point DOCKER_HOST at one"
}

# load_release sets ALLEZON_REGISTRY and ALLEZON_VERSION from the
# environment, or else from the release file 2-build-push.sh wrote.
load_release() {
  if [[ -z ${ALLEZON_REGISTRY:-} || -z ${ALLEZON_VERSION:-} ]] && [[ -r $RELEASE_FILE ]]; then
    # shellcheck source=/dev/null
    source "$RELEASE_FILE"
  fi
  [[ -n ${ALLEZON_REGISTRY:-} && -n ${ALLEZON_VERSION:-} ]] ||
    die "no release: set ALLEZON_REGISTRY and ALLEZON_VERSION, or run stack/2-build-push.sh first"
  export ALLEZON_REGISTRY ALLEZON_VERSION
  info "release $ALLEZON_REGISTRY/allezon:$ALLEZON_VERSION"
}

# save_release records the release for the scripts that follow.
save_release() {
  mkdir -p "$ALLEZON_HOME"
  printf 'ALLEZON_REGISTRY=%q\nALLEZON_VERSION=%q\n' "$1" "$2" >"$RELEASE_FILE"
}

# export_config_hashes names each Swarm config after its file's content
# (configs are immutable; a changed file gets a new name and rolls the
# services that mount it).
export_config_hashes() {
  local var file
  while read -r var file; do
    [[ -r $REPO_ROOT/$file ]] || die "missing config file $file"
    export "$var=$(sha256sum "$REPO_ROOT/$file" | cut -c1-12)"
  done <<'EOF'
ALLEZON_CFG_AEROSPIKE services/aerospike/aerospike.template.conf
ALLEZON_CFG_KAFKA services/kafka/create-topic.sh
ALLEZON_CFG_HAPROXY services/haproxy/haproxy.cfg
ALLEZON_CFG_PROMETHEUS services/prometheus/prometheus.yml
ALLEZON_CFG_PROMETHEUS_ALERTS services/prometheus/alerts.yml
ALLEZON_CFG_GRAFANA_DATASOURCE services/grafana/provisioning/datasources/prometheus.yml
ALLEZON_CFG_GRAFANA_DASHBOARDS services/grafana/provisioning/dashboards/allezon.yml
ALLEZON_CFG_GRAFANA_DASHBOARD services/grafana/dashboards/allezon.json
EOF
}

need_secrets() {
  local s missing=()
  for s in "$@"; do
    docker secret inspect "$s" >/dev/null 2>&1 || missing+=("$s")
  done
  ((${#missing[@]} == 0)) || die "missing Swarm secrets: ${missing[*]} (run stack/3-secrets.sh)"
}

# secret_value prints a secret from the operator's secrets folder (Swarm
# never gives a secret back).
secret_value() {
  local f=$SECRETS_DIR/$1
  [[ -r $f ]] || die "$f is missing: the scripts read $1 from there (ALLEZON_SECRETS_DIR)"
  head -n 1 "$f" | tr -d '\r\n'
}

# one_off runs a container on the stack's (attachable) network and removes
# it afterwards; arguments are docker run's.
one_off() {
  docker run --rm --network "$NETWORK" "$@"
}

# stack_services lists "name replicas" of a stack's services.
stack_services() {
  docker service ls --filter "label=com.docker.stack.namespace=$1" --format '{{.Name}} {{.Replicas}}'
}

# wait_stack waits until every service of stack $1 runs all its replicas
# (healthy: Swarm counts a task with a healthcheck only once it passes) and
# every one-shot service (deploy label allezon.one-shot=true) completed.
wait_stack() {
  local stack=$1 timeout=${2:-600} start=$SECONDS name replicas pending state
  info "waiting up to ${timeout}s for stack $stack"
  while :; do
    pending=()
    while read -r name replicas; do
      if [[ $(docker service inspect --format '{{index .Spec.Labels "allezon.one-shot"}}' "$name") == true ]]; then
        state=$(docker service ps --format '{{.CurrentState}}' "$name")
        grep -q '^Complete' <<<"$state" || pending+=("$name (one-shot: $(head -n 1 <<<"$state"))")
      elif [[ ! $replicas =~ ^([0-9]+)/([0-9]+) ]] || [[ ${BASH_REMATCH[1]} != "${BASH_REMATCH[2]}" ]] || ((BASH_REMATCH[2] == 0)); then
        pending+=("$name $replicas")
      fi
    done < <(stack_services "$stack")
    if ((${#pending[@]} == 0)); then
      info "stack $stack: every service is up"
      return 0
    fi
    if ((SECONDS - start >= timeout)); then
      info "stack $stack: still waiting after ${timeout}s for:"
      printf '  %s\n' "${pending[@]}" >&2
      info "look at: docker service ps --no-trunc <service>; docker service logs <service>"
      return 1
    fi
    info "waiting for ${#pending[@]} services: ${pending[*]}"
    sleep 10
  done
}

# check_patroni: exactly one leader, and a replica (warns without one).
check_patroni() {
  local n leaders=() replicas=()
  for n in patroni1 patroni2; do
    if one_off --entrypoint wget "$HAPROXY_IMAGE" -q -O /dev/null -T 3 "http://$n:8008/primary" 2>/dev/null; then
      leaders+=("$n")
    elif one_off --entrypoint wget "$HAPROXY_IMAGE" -q -O /dev/null -T 3 "http://$n:8008/replica" 2>/dev/null; then
      replicas+=("$n")
    fi
  done
  ((${#leaders[@]} == 1)) || {
    info "patroni: ${#leaders[@]} leaders (${leaders[*]:-none}), want 1"
    return 1
  }
  info "patroni: leader ${leaders[0]}, replicas: ${replicas[*]:-none}"
  ((${#replicas[@]} > 0)) || info "patroni: WARNING: no streaming replica, a node failure would stop writes"
  one_off --entrypoint wget "$HAPROXY_IMAGE" -q -O /dev/null -T 3 http://haproxy:8404/healthz ||
    {
      info "haproxy: /healthz does not answer"
      return 1
    }
}

# check_aerospike: both nodes see a cluster of 2.
check_aerospike() {
  local n stats size
  for n in aerospike1 aerospike2; do
    stats=$(one_off "$AEROSPIKE_TOOLS_IMAGE" asinfo -h "$n" -p 3000 -v statistics) ||
      {
        info "aerospike: $n does not answer"
        return 1
      }
    size=$(tr ';' '\n' <<<"$stats" | sed -n 's/^cluster_size=//p')
    [[ $size == 2 ]] || {
      info "aerospike: $n sees a cluster of ${size:-?} nodes, want 2"
      return 1
    }
  done
  info "aerospike: cluster of 2 nodes"
}

# check_kafka: the events topic has 2 partitions, each with 2 in-sync replicas.
check_kafka() {
  local desc
  desc=$(one_off "$KAFKA_IMAGE" /opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka1:9092,kafka2:9092 \
    --describe --topic allezon-events) || {
    info "kafka: cannot describe topic allezon-events"
    return 1
  }
  grep -q 'PartitionCount: 2' <<<"$desc" || {
    info "kafka: allezon-events does not have 2 partitions:"$'\n'"$desc"
    return 1
  }
  if grep -E 'Partition: [0-9]+' <<<"$desc" | grep -vqE 'Isr: [0-9]+,[0-9]+'; then
    info "kafka: WARNING: a partition has fewer than 2 in-sync replicas:"$'\n'"$desc"
  fi
  info "kafka: topic allezon-events has 2 partitions"
}
