#!/usr/bin/env bash
# Load benchmark of the PostgreSQL backend (issue 11, BENCHMARKS.md):
#   bash host/benches/load/cluster.sh [seconds]
# Needs nginx, wrk and PostgreSQL (tests/ci/postgres.sh installs and starts a
# throw-away cluster with PostgreSQL's default durability: fsync and
# synchronous_commit on). Measures in one sitting, for one node and for two
# nodes on one database:
#   0. the receiver's raw rate: wrk -> nginx answering 204 (the denominator);
#   1. durable ingest alone (no endpoint subscribed): wrk on every node at
#      once (64 connections split between them), summed; statements and
#      commits per event from pg_stat_statements / pg_stat_database;
#   2. ingest latency at a fixed total rate (PACED_RATE, default 8000/s,
#      split between the nodes; host/benches/ingest_paced.rs);
#   3. end to end: every node ingests and delivers to nginx; events stored
#      during the run, every delivery final, divided by the time from start
#      to fully drained; statements and commits per event.
# The routers run the shipped defaults ([store] pool_size 16, lease 30s).
# SWITCHYARD_BIN=path runs another build. NODES="1 2" (default) picks the
# cluster sizes. SOAK=secs first runs one node end to end at SOAK_RATE
# (default 2000/s) for that long, printing the hot tables' live and dead
# tuples, HOT updates, autovacuums and sizes every 10 s (ONLY_SOAK=1: only
# that).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
secs=${1:-10}
conns=${CONNS:-64}
bin="${SWITCHYARD_BIN:-$repo/target/release/switchyard}"
work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-cluster.XXXXXX")
nginx_port=18204
export EVENT_FILE="$here/event.json" BENCH_TOKEN="bench-token-0123456789"

if [[ -z "${SWITCHYARD_BIN:-}" ]]; then
    (cd "$repo" && cargo build --release -p switchyard >/dev/null 2>&1) || { echo "build failed" >&2; exit 1; }
fi
paced_bin=$(cd "$repo" && cargo bench -p switchyard --bench ingest_paced --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="ingest_paced" and m.get("executable"): print(m["executable"])')
command -v nginx >/dev/null && command -v wrk >/dev/null || { echo "needs nginx and wrk: apt-get install -y nginx wrk" >&2; exit 1; }

pids=()
cleanup() {
    [[ -f "$work/nginx.pid" ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -n "${SWITCHYARD_TEST_PG_DIR:-}" ]] && bash "$repo/tests/ci/postgres.sh" stop "$SWITCHYARD_TEST_PG_DIR" || true
    rm -rf "$work"
}
trap cleanup EXIT

pgenv=$(bash "$repo/tests/ci/postgres.sh" start)
eval "$pgenv"
admin=$SWITCHYARD_TEST_DATABASE_URL

sed -e "s#__DIR__#$work#g" -e "s#__PORT__#$nginx_port#g" "$here/nginx.conf" > "$work/nginx.conf"
nginx -c "$work/nginx.conf"
sleep 0.5

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "PostgreSQL: $(psql "$admin" -tAc 'show server_version'), fsync $(psql "$admin" -tAc 'show fsync'), synchronous_commit $(psql "$admin" -tAc 'show synchronous_commit')"
echo "event: $(wc -c < "$EVENT_FILE") bytes, $conns connections in all, ${secs}s per run"
echo

wrk_rate() { awk '/Requests\/sec/{print $2}'; }
echo "== 0. receiver raw rate (wrk -> nginx 204)"
raw=$(wrk -t2 -c"$conns" -d"${secs}s" "http://127.0.0.1:$nginx_port/" | wrk_rate)
echo "nginx: $raw req/s"

newdb() {
    local name="bench_$(date +%s%N)"
    psql "$admin" -qc "CREATE DATABASE $name"
    echo "${admin%/*}/$name"
}
q() { psql "$db" -tAc "$1"; }

config() { # $1 = port, $2 = subscriptions line
    cat <<EOF
[server]
listen = "127.0.0.1:$1"
data_dir = "$work/data-$1"
[store]
backend = "postgres"
url = "$db"
[plugins]
dir = "$repo/plugins/dist"
[delivery]
allow_http = true
allow_private_networks = true
[[accounts]]
id = "bench"
token = "$BENCH_TOKEN"
[[endpoints]]
id = "nginx"
account = "bench"
url = "http://127.0.0.1:$nginx_port/hook"
secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
$2
EOF
}

ports=()
start_nodes() { # $1 = nodes, $2 = subscriptions line
    db=$(newdb)
    ports=()
    pids=()
    for i in $(seq "$1"); do
        local port=$((18686 + i))
        config "$port" "$2" > "$work/node$i.toml"
        RUST_LOG=warn "$bin" serve -c "$work/node$i.toml" > "$work/node$i.out" 2> "$work/node$i.err" &
        pids+=($!)
        ports+=("$port")
    done
    for i in $(seq "$1"); do
        for _ in $(seq 100); do grep -q "listening on" "$work/node$i.out" 2>/dev/null && break; sleep 0.1; done
        grep -q "listening on" "$work/node$i.out" || { echo "node $i did not start:"; cat "$work/node$i.err"; exit 1; }
    done
    sleep 1 # every node has seen the others' heartbeat
}
stop_nodes() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    pids=()
}
reset_stats() {
    psql "$admin" -qc "SELECT pg_stat_statements_reset()" >/dev/null
    q "SELECT pg_stat_reset()" >/dev/null
    commits0=$(q "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
}
per_event() { # $1 = events
    local stmts commits
    stmts=$(psql "$admin" -tAc "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '${db##*/}') AND query NOT ILIKE '%pg_stat%'")
    commits=$(( $(q "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()") - commits0 ))
    [[ -n "${TOP_STATEMENTS:-}" ]] && psql "$admin" -tAc "SELECT round(total_exec_time)::text || ' ms total, ' || calls || ' calls, ' || round(mean_exec_time::numeric, 2) || ' ms mean: ' || left(regexp_replace(query, '\s+', ' ', 'g'), 90) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '${db##*/}') ORDER BY total_exec_time DESC LIMIT 6"
    echo "statements $stmts, commits $commits => $(awk -v s="$stmts" -v e="$1" 'BEGIN{printf "%.3f", s/e}') statements/event, $(awk -v s="$commits" -v e="$1" 'BEGIN{printf "%.3f", s/e}') commits/event (heartbeats and renewals included)"
}
wrk_all() { # $1 = label; wrk on every node at once, connections split
    local n=${#ports[@]} c=$((conns / ${#ports[@]})) i=0 w=()
    for port in "${ports[@]}"; do
        i=$((i + 1))
        wrk -t1 -c"$c" -d"${secs}s" --latency -s "$here/post.lua" "http://127.0.0.1:$port/v1/accounts/bench/events" > "$work/$1-$i.txt" &
        w+=($!)
    done
    wait "${w[@]}"
    local rate=0 p99s="" errs=0
    for i in $(seq "$n"); do
        rate=$(awk -v a="$rate" -v b="$(wrk_rate < "$work/$1-$i.txt")" 'BEGIN{printf "%.0f", a+b}')
        p99s="$p99s $(awk '$1=="99%"{print $2}' "$work/$1-$i.txt")"
        errs=$((errs + $(awk '/Non-2xx/{print $5}' "$work/$1-$i.txt" | grep . || echo 0)))
    done
    echo "$rate req/s (p99 per node:$p99s; non-2xx $errs)"
}

# Cumulative CPU seconds of the routers, PostgreSQL, nginx and wrk.
cpu_split() {
    local r p n w
    r=$(ps -C switchyard -o times= | awk '{s+=$1} END{print s+0}')
    p=$(ps -u postgres -o times= | awk '{s+=$1} END{print s+0}')
    n=$(ps -C nginx -o times= | awk '{s+=$1} END{print s+0}')
    w=$(ps -C wrk -o times= | awk '{s+=$1} END{print s+0}')
    echo "routers=$r postgres=$p nginx=$n wrk=$w"
}

table_stats() { # one line per hot table: live and dead tuples, HOT updates, autovacuums, size
    q "SELECT relname || ': live ' || n_live_tup || ', dead ' || n_dead_tup
              || ', updates ' || n_tup_upd || ' (HOT ' || n_tup_hot_upd || ')'
              || ', autovacuums ' || autovacuum_count
              || ', ' || pg_size_pretty(pg_total_relation_size(relid))
       FROM pg_stat_user_tables WHERE relname IN ('events', 'deliveries', 'attempts') ORDER BY relname"
}

if [[ -n "${SOAK:-}" ]]; then
    # Sustained end to end on one node, paced below capacity, for SOAK
    # seconds: does dead-tuple bloat build up in the hot tables?
    soak_rate=${SOAK_RATE:-2000}
    echo
    echo "== soak: 1 node, end to end to nginx, $soak_rate events/s for $SOAK s; tables every 10 s"
    start_nodes 1 ""
    URL="http://127.0.0.1:${ports[0]}/v1/accounts/bench/events" TOKEN="$BENCH_TOKEN" RATE="$soak_rate" SECS="$SOAK" \
        CONNS=32 "$paced_bin" > "$work/soak.txt" 2>&1 &
    soak_pid=$!
    t=0
    while kill -0 "$soak_pid" 2>/dev/null; do
        sleep 10
        t=$((t + 10))
        echo "t=${t}s pending $(q "SELECT count(*) FROM deliveries WHERE due_ms IS NOT NULL")"
        table_stats | sed 's/^/    /'
    done
    grep '^paced ingest' "$work/soak.txt" || cat "$work/soak.txt"
    stop_nodes
    [[ -n "${ONLY_SOAK:-}" ]] && exit 0
fi

for nodes in ${NODES:-1 2}; do
    echo
    echo "== $nodes node(s): 1. durable ingest alone (no endpoint subscribed)"
    start_nodes "$nodes" 'subscriptions = ["nothing.matches"]'
    reset_stats
    out=$(wrk_all "ingest-$nodes")
    events=$(q "SELECT count(*) FROM events")
    rate=${out%% *}
    echo "ingest: $out; $events events stored"
    echo "ingest/raw: $(awk -v r="$rate" -v n="$raw" 'BEGIN{printf "%.3f", r/n}')"
    per_event "$events"

    paced=${PACED_RATE:-8000}
    echo "== $nodes node(s): 2. ingest latency at $paced events/s in all"
    i=0
    w=()
    for port in "${ports[@]}"; do
        i=$((i + 1))
        URL="http://127.0.0.1:$port/v1/accounts/bench/events" TOKEN="$BENCH_TOKEN" RATE=$((paced / nodes)) SECS="$secs" \
            CONNS=$((64 / nodes)) "$paced_bin" > "$work/paced-$i.txt" 2>&1 &
        w+=($!)
    done
    wait "${w[@]}"
    for i in $(seq "$nodes"); do echo "node $i: $(grep '^paced ingest' "$work/paced-$i.txt")"; done
    stop_nodes

    echo "== $nodes node(s): 3. end to end to nginx"
    start_nodes "$nodes" ""
    reset_stats
    cpu0=$(cpu_split)
    t0=$(date +%s.%N)
    out=$(wrk_all "e2e-$nodes")
    for _ in $(seq 1200); do
        [[ "$(q "SELECT count(*) FROM deliveries WHERE due_ms IS NOT NULL")" == 0 ]] && break
        sleep 0.1
    done
    t1=$(date +%s.%N)
    events=$(q "SELECT count(*) FROM events")
    delivered=$(q "SELECT count(*) FROM deliveries WHERE status = 'delivered'")
    e2e=$(awk -v d="$delivered" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", d/(b-a)}')
    cpu1=$(cpu_split)
    echo "CPU seconds used during it: $(paste <(echo "$cpu0" | tr ' ' '\n') <(echo "$cpu1" | tr ' ' '\n') | awk '{split($1,a,"=");split($2,b,"="); printf "%s %.1f  ", a[1], b[2]-a[2]}')"
    echo "ingest during it: $out"
    echo "e2e: $events events, $delivered delivered in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s => $e2e deliveries/s; e2e/raw $(awk -v r="$e2e" -v n="$raw" 'BEGIN{printf "%.3f", r/n}')"
    per_event "$events"
    stop_nodes
done
