#!/usr/bin/env bash
# One-shot: create (or check) the Allezon events topic and its dead-letter
# topic (<topic>-dlq, where the pipeline puts events it cannot count) once
# both brokers are up. Runs in the kafka-init service of 1.docker-compose.yaml, inside the
# apache/kafka image. Idempotent: an existing topic is left as it is, but a
# topic with fewer partitions than asked fails the run loudly.
#
# Environment: BOOTSTRAP (host:port,...), TOPIC, PARTITIONS, REPLICATION,
# MIN_INSYNC, RETENTION_MS, BROKERS (how many brokers must be registered),
# DLQ_TOPIC, DLQ_RETENTION_MS.
set -euo pipefail

BOOTSTRAP=${BOOTSTRAP:?BOOTSTRAP must name the brokers}
TOPIC=${TOPIC:-allezon-events}
PARTITIONS=${PARTITIONS:-2}
REPLICATION=${REPLICATION:-2}
MIN_INSYNC=${MIN_INSYNC:-1}
RETENTION_MS=${RETENTION_MS:-172800000}
BROKERS=${BROKERS:-2}
DLQ_TOPIC=${DLQ_TOPIC:-${TOPIC}-dlq}
DLQ_RETENTION_MS=${DLQ_RETENTION_MS:-604800000}
BIN=/opt/kafka/bin

echo "kafka-init: waiting for ${BROKERS} brokers at ${BOOTSTRAP}"
for attempt in $(seq 1 60); do
  # One "id: N" line per registered broker.
  n=$("${BIN}/kafka-broker-api-versions.sh" --bootstrap-server "${BOOTSTRAP}" 2>/dev/null | grep -c '(id: [0-9]*' || true)
  if [ "${n}" -ge "${BROKERS}" ]; then
    break
  fi
  echo "kafka-init: ${n} of ${BROKERS} brokers up (attempt ${attempt}/60)"
  sleep 5
done
if [ "${n}" -lt "${BROKERS}" ]; then
  echo "kafka-init: gave up: only ${n} of ${BROKERS} brokers answered" >&2
  exit 1
fi

"${BIN}/kafka-topics.sh" --bootstrap-server "${BOOTSTRAP}" --create --if-not-exists \
  --topic "${TOPIC}" --partitions "${PARTITIONS}" --replication-factor "${REPLICATION}" \
  --config "min.insync.replicas=${MIN_INSYNC}" \
  --config "retention.ms=${RETENTION_MS}" \
  --config "unclean.leader.election.enable=false"

# One partition: dead letters are rare, and an operator reads them in order.
"${BIN}/kafka-topics.sh" --bootstrap-server "${BOOTSTRAP}" --create --if-not-exists \
  --topic "${DLQ_TOPIC}" --partitions 1 --replication-factor "${REPLICATION}" \
  --config "min.insync.replicas=${MIN_INSYNC}" \
  --config "retention.ms=${DLQ_RETENTION_MS}" \
  --config "unclean.leader.election.enable=false"

desc=$("${BIN}/kafka-topics.sh" --bootstrap-server "${BOOTSTRAP}" --describe --topic "${TOPIC}")
echo "${desc}"
have=$(grep -o 'PartitionCount: *[0-9]*' <<<"${desc}" | grep -o '[0-9]*$')
if [ "${have}" != "${PARTITIONS}" ]; then
  # The pipeline's per-minute cells are keyed to partitions: changing their
  # number on a live topic moves keys, so it is an operator's decision.
  echo "kafka-init: topic ${TOPIC} has ${have} partitions, want ${PARTITIONS}; not changing it" >&2
  exit 1
fi
echo "kafka-init: dead-letter topic ${DLQ_TOPIC} ready (retention ${DLQ_RETENTION_MS} ms)"
echo "kafka-init: topic ${TOPIC} ready (${PARTITIONS} partitions, replication ${REPLICATION}, min.insync.replicas ${MIN_INSYNC})"
