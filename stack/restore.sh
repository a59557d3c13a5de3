#!/usr/bin/env bash
# Usage: stack/restore.sh --from DIR [--only postgres|aerospike] [--yes]
#
# Restore a backup made by stack/backup.sh into the running deployment.
#   aggregates.dump  pg_restore --clean into "allezon" through HAProxy's
#                    read-write port (the Patroni leader; the replica
#                    follows). The pipeline is scaled to 0 meanwhile and back
#                    afterwards: it then resumes from the Kafka offsets stored
#                    in the restored tables and re-reads the events after
#                    them, so the aggregates catch up exactly as long as those
#                    events are still in Kafka (48 h retention).
#   profiles.asb     asrestore into the namespace "allezon"; records written
#                    since the backup stay (a restore adds, it does not wipe).
# --only restores one of the two; --yes skips the confirmation.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wants_help "$@"

from="" only="" yes=false
while (($#)); do
  case $1 in
    --from)
      from=${2:?--from needs a backup folder}
      shift 2
      ;;
    --only)
      only=${2:?--only needs postgres or aerospike}
      [[ $only == postgres || $only == aerospike ]] || die "--only takes postgres or aerospike"
      shift 2
      ;;
    --yes)
      yes=true
      shift
      ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ -n $from ]] || die "give the backup folder: --from DIR (see --help)"
[[ $only == aerospike || -s $from/aggregates.dump ]] || die "$from/aggregates.dump is missing"
[[ $only == postgres || -s $from/profiles.asb ]] || die "$from/profiles.asb is missing"
need_manager
docker network inspect "$NETWORK" >/dev/null 2>&1 || die "network $NETWORK is missing: is the stack deployed?"
if ! $yes; then
  read -r -p "Restore $from into the running deployment, replacing the aggregates database? [y/N] " answer
  [[ $answer == [yY]* ]] || die "not confirmed"
fi

if [[ $only != aerospike ]]; then
  load_release
  PGPASSWORD=$(secret_value allezon_db_password)
  export PGPASSWORD
  pipeline=${APP_STACK}_pipeline
  pipeline_replicas=
  if docker service inspect "$pipeline" >/dev/null 2>&1; then
    pipeline_replicas=$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "$pipeline")
    info "scaling $pipeline to 0 (was $pipeline_replicas) during the restore"
    docker service scale --detach=false "$pipeline=0" >/dev/null
    trap 'info "scaling $pipeline back to $pipeline_replicas"; docker service scale --detach=false "$pipeline=$pipeline_replicas" >/dev/null' EXIT
  fi
  info "pg_restore of $from/aggregates.dump via haproxy:5000 (the leader)"
  one_off -i -e PGPASSWORD --entrypoint pg_restore "$ALLEZON_REGISTRY/allezon-patroni:$ALLEZON_VERSION" \
    --host haproxy --port 5000 --username allezon --dbname allezon \
    --clean --if-exists --no-owner --single-transaction --exit-on-error <"$from/aggregates.dump" ||
    die "pg_restore failed (the single transaction left the database as it was)"
  info "aggregates restored"
fi

if [[ $only != postgres ]]; then
  info "asrestore of $from/profiles.asb via aerospike1"
  one_off -i "$AEROSPIKE_TOOLS_IMAGE" asrestore --host aerospike1:3000 --input-file - <"$from/profiles.asb" ||
    die "asrestore failed"
  info "profiles restored"
fi
info "restore complete; check with stack/7-health.sh"
