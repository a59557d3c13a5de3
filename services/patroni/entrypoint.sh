#!/bin/sh
# Entry point of the Patroni image: export the passwords from the Swarm
# secrets to Patroni alone (never in the service's environment), then
# replace this shell with Patroni so it gets the signals.
set -eu

secret() {
  f=${ALLEZON_SECRETS_DIR:-/run/secrets}/$1
  if [ ! -r "$f" ]; then
    echo "allezon-patroni: secret $1 is missing (mount it at $f)" >&2
    exit 1
  fi
  # First line, without its newline.
  head -n 1 "$f" | tr -d '\r\n'
}

: "${PATRONI_NAME:?set PATRONI_NAME (patroni1 or patroni2)}"
: "${PATRONI_ETCD3_HOSTS:?set PATRONI_ETCD3_HOSTS (etcd1:2379,...)}"
PATRONI_SUPERUSER_PASSWORD=$(secret allezon_pg_superuser_password)
PATRONI_REPLICATION_PASSWORD=$(secret allezon_pg_replication_password)
PATRONI_REWIND_PASSWORD=$PATRONI_SUPERUSER_PASSWORD
export PATRONI_SUPERUSER_PASSWORD PATRONI_REPLICATION_PASSWORD PATRONI_REWIND_PASSWORD

mkdir -p /var/lib/postgresql/data
chmod 0700 /var/lib/postgresql/data
exec patroni /etc/patroni/patroni.yml
