#!/usr/bin/env bash
# Usage: stack/7-health.sh [--host HOST]
#
# Step 7 (and any time after): check the whole deployment and say what is
# wrong. Every service of both stacks running all its replicas, the
# gateway's and the pipeline's /health (every backend "ok") on their ops
# ports (9088, 9089, reached on the stack's network), the published API
# port HOST:8088 answering and serving no /health or /metrics, one Patroni
# leader and a replica, Aerospike cluster of 2,
# the events topic with its in-sync replicas, Prometheus scraping every
# gateway and pipeline task, Grafana answering on HOST:3000.
# Exits non-zero when a check fails.
#   --host HOST  a node's address for the published ports (default localhost)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wants_help "$@"

host=localhost
while (($#)); do
  case $1 in
    --host)
      host=${2:?--host needs an address}
      shift 2
      ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
need_manager
need_cmd curl
fails=0
failed() {
  info "FAIL: $*"
  fails=$((fails + 1))
}

for stack in "$DATA_STACK" "$APP_STACK"; do
  wait_stack "$stack" 0 || failed "stack $stack: services not fully up"
done
check_patroni || failed "patroni/haproxy"
check_aerospike || failed "aerospike"
check_kafka || failed "kafka"

# /health is on the ops ports, which only the stack's network reaches; the
# service's virtual IP spreads requests over its tasks: ask a few times.
for svc_port in gateway:9088 pipeline:9089; do
  svc=${svc_port%:*}
  n_tasks=$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "${APP_STACK}_$svc" 2>/dev/null || echo 0)
  body=
  for _ in $(seq 1 $((2 * n_tasks))); do
    if ! body=$(one_off --entrypoint wget "$HAPROXY_IMAGE" -q -O - -T 5 "http://$svc_port/health" 2>&1); then
      failed "$svc /health on $svc_port: $body"
      break
    fi
  done
  [[ $body == *'"status":"ok"'* ]] && info "$svc: $body"
done

# The published port serves the API only: /health there is a 404.
code=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://$host:8088/health" 2>&1) || code="no answer ($code)"
[[ $code == 404 ]] || failed "published port $host:8088: /health answered $code, want 404 (ops endpoints belong on the ops port)"

# Prometheus: every gateway and pipeline task is a target, and up.
targets=$(one_off --entrypoint wget "$HAPROXY_IMAGE" -q -O - -T 5 \
  'http://prometheus:9090/api/v1/query?query=sum%20by%20(job)%20(up%7Bjob%3D~%22gateway%7Cpipeline%22%7D)' 2>&1) ||
  failed "prometheus does not answer: $targets"
info "prometheus, targets up by job: $(grep -o '"job":"[a-z]*"},"value":\[[0-9.]*,"[0-9]*"' <<<"$targets" | sed 's/"job":"\([a-z]*\)"},"value":\[[0-9.]*,"\([0-9]*\)"/\1=\2/' | tr '\n' ' ')"
for svc in gateway pipeline; do
  want=$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "${APP_STACK}_$svc" 2>/dev/null || echo "?")
  grep -q "\"job\":\"$svc\"},\"value\":\[[0-9.]*,\"$want\"" <<<"$targets" ||
    failed "prometheus: not all $want $svc tasks are up as targets"
done

curl -fsS -m 5 -o /dev/null "http://$host:3000/api/health" || failed "grafana does not answer on $host:3000"

((fails == 0)) || die "$fails checks failed"
info "all checks passed; dashboards: http://$host:3000 (admin, password in $SECRETS_DIR/allezon_grafana_admin_password)"
