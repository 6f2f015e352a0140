#!/bin/sh
# The stand-in postgres image's entrypoint (Dockerfile.postgres): on an empty PGDATA, creates
# the cluster with POSTGRES_USER (default postgres) as its superuser, POSTGRES_PASSWORD as its
# password and a database POSTGRES_DB (default: the user's name), accepting password
# (SCRAM) logins from the network; then runs the command, `postgres` listening on every
# address.
set -eu

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --pgdata="$PGDATA" --username="$user" --pwfile="$pwfile" --encoding=UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo 'host all all all scram-sha-256' >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    if [ "$db" != postgres ]; then
        echo "CREATE DATABASE \"$db\" OWNER \"$user\";" \
            | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
    echo "docker-entrypoint.sh: created the cluster in $PGDATA with database $db"
fi

if [ "${1:-}" = postgres ]; then
    shift
    exec postgres -D "$PGDATA" "$@"
fi
exec "$@"
