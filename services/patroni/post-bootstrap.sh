#!/bin/sh
# Patroni's post_bootstrap hook: runs once, on the node that initialised the
# cluster, with a superuser connection string as its argument. Creates the
# application role (password from the allezon_db_password secret) and its
# database. The schema itself is `allezon migrate`'s job.
set -eu

conn=${1:?usage: allezon-post-bootstrap <connection string>}
pwfile=${ALLEZON_SECRETS_DIR:-/run/secrets}/allezon_db_password
if [ ! -r "$pwfile" ]; then
  echo "allezon-post-bootstrap: secret allezon_db_password is missing ($pwfile)" >&2
  exit 1
fi
ALLEZON_DB_PASSWORD=$(head -n 1 "$pwfile" | tr -d '\r\n')
export ALLEZON_DB_PASSWORD

# The password reaches psql through its environment (\getenv), never a
# command line; %L quotes it as an SQL literal.
psql -X -q -v ON_ERROR_STOP=1 "$conn" <<'SQL'
\getenv pw ALLEZON_DB_PASSWORD
SELECT format('CREATE ROLE allezon LOGIN PASSWORD %L', :'pw')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'allezon') \gexec
SELECT format('ALTER ROLE allezon LOGIN PASSWORD %L', :'pw') \gexec
SELECT 'CREATE DATABASE allezon OWNER allezon'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'allezon') \gexec
SQL
echo "allezon-post-bootstrap: role and database allezon ready"
