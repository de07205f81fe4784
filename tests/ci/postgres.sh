#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the tests (Debian's `postgresql`,
# installed if missing). PostgreSQL refuses to run as root, so as root the
# server runs as the `postgres` user (runuser).
#
#   eval "$(bash tests/ci/postgres.sh start)"   # exports SWITCHYARD_TEST_DATABASE_URL
#                                              # and SWITCHYARD_TEST_PG_DIR
#   bash tests/ci/postgres.sh stop  <dir>      # stop it and delete its files
#   bash tests/ci/postgres.sh pause <dir>      # stop the server, keep the data
#   bash tests/ci/postgres.sh resume <dir>     # start it again on the same port
#
# The cluster listens on 127.0.0.1 on a free port, trusts local
# connections, keeps PostgreSQL's default durability (fsync and
# synchronous_commit on) and loads pg_stat_statements.
set -euo pipefail

bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
        echo "installing postgresql (apt-get)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq postgresql postgresql-contrib >&2
        d=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    fi
    echo "$d"
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_ctl_in() {
    local dir=$1; shift
    as_pg "$(bindir)/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 "$@" >&2
}

case "${1:-}" in
start)
    bin=$(bindir)
    dir=$(mktemp -d /tmp/switchyard-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 400
shared_buffers = 256MB
shared_preload_libraries = 'pg_stat_statements'
log_min_messages = warning
CONF
    pg_ctl_in "$dir" start
    as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' >&2
    echo "export SWITCHYARD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
    echo "export SWITCHYARD_TEST_PG_DIR=$dir"
    ;;
stop)
    dir=${2:?usage: postgres.sh stop <dir>}
    [ -d "$dir/data" ] && pg_ctl_in "$dir" stop -m immediate || true
    rm -rf "$dir"
    ;;
pause)
    dir=${2:?usage: postgres.sh pause <dir>}
    pg_ctl_in "$dir" stop -m fast
    ;;
resume)
    dir=${2:?usage: postgres.sh resume <dir>}
    pg_ctl_in "$dir" start
    ;;
*)
    echo "usage: $0 start | stop <dir> | pause <dir> | resume <dir>" >&2
    exit 2
    ;;
esac
