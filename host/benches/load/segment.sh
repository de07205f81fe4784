#!/usr/bin/env bash
# Batching benchmark against a receiver that enforces Segment's rules
# (issue 13, BENCHMARKS.md):
#   bash host/benches/load/segment.sh [events]     (default 100000)
# Needs nginx, wrk, jq and curl. The receiver is host/benches/segment_receiver.rs
# (400 for a request over 500 KB, a call over 32 KB or a malformed body;
# 429 + Retry-After above its request rate; GET /stats counts requests,
# answers, distinct messageIds). Measures in one run, each scenario on a
# fresh router (shipped defaults, a temp data dir, the bundled `segment`
# plugin) fed `events` license.validation.succeeded events by the bench's
# own client (64 connections, exactly `events` posts answered 202):
#   0. baseline: wrk -> nginx answering 204 (the machine's raw rate);
#  0b. baseline: durable ingest alone (nothing subscribed), the same client;
#   a. batched, `batch = { max_events = 100, max_bytes = "450KB",
#      max_wait = "500ms" }`: events/s delivered (first post to the
#      receiver holding every event's messageId), requests, events per
#      request, largest request, answers by status;
#   b. the same endpoint without `batch` (one /v1/batch request per event);
#   c. the receiver limited to 50 requests/s, the endpoint with
#      `rate_limit = "50/s"` and batches of 20 (LIMITED_BATCH; with 100 the
#      limit is above the ingest rate here and never binds): requests and
#      429s per second as the receiver saw them while limited (until the
#      posts are done and LIMITED_SECS more, default 5), then the limit
#      lifted (router.toml rewritten to scenario a's endpoint, hot-reloaded;
#      the receiver unlimited) and the backlog's time to drain;
#   d. the receiver limited to 50 requests/s, the endpoint WITHOUT
#      rate_limit (only 429 + Retry-After handling), then lifted the same
#      way (most deliveries were attempted and refused before the lift, so
#      the drain is delivery alone: no ingest, bodies already made);
#   e. (UNBATCHED_DRAIN=1) d with an unbatched endpoint, unbatched after
#      the lift too: delivery alone without batching, for the ratio.
# ROUTER_RATE sets c's rate_limit (default 50/s); SKIP_D=1 skips d;
# SKIP_AB=1 skips 0b, a and b; SKIP_B=1 skips b (its ratio line then
# compares a with itself); SKIP_C=1 stops after a and b (no c, d, e); ROUNDS=n runs a and b alternately n times
# (default 1) and gives the medians.
# SWITCHYARD_BIN=path runs another build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
events=${1:-100000}
conns=${CONNS:-64}
limited_secs=${LIMITED_SECS:-5}
bin="${SWITCHYARD_BIN:-$repo/target/release/switchyard}"
work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-segment.XXXXXX")
nginx_port=18214
rx_port=18300
router_port=18786
export EVENT_FILE="$here/event.json" BENCH_TOKEN="bench-token-0123456789"

command -v nginx >/dev/null && command -v wrk >/dev/null && command -v jq >/dev/null \
    || { echo "needs nginx, wrk and jq: apt-get install -y nginx wrk jq" >&2; exit 1; }
if [[ -z "${SWITCHYARD_BIN:-}" ]]; then
    (cd "$repo" && cargo build --release -p switchyard >/dev/null 2>&1) || { echo "build failed" >&2; exit 1; }
fi
rx_bin=$(cd "$repo" && cargo bench -p switchyard --bench segment_receiver --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="segment_receiver" and m.get("executable"): print(m["executable"])')
[[ -x "$rx_bin" ]] || { echo "cannot build the segment_receiver bench" >&2; exit 1; }

router_pid=
rx_pid=
cleanup() {
    [[ -f "$work/nginx.pid" ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    [[ -n "$router_pid" ]] && kill "$router_pid" 2>/dev/null || true
    [[ -n "$rx_pid" ]] && kill "$rx_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git -C "$repo" rev-parse --short HEAD); event: $(wc -c < "$EVENT_FILE") bytes; $events events per scenario, $conns connections"
echo

sed -e "s#__DIR__#$work#g" -e "s#__PORT__#$nginx_port#g" "$here/nginx.conf" > "$work/nginx.conf"
nginx -c "$work/nginx.conf"
sleep 0.5
echo "== 0. baseline: wrk -> nginx 204"
raw=$(wrk -t2 -c"$conns" -d5s "http://127.0.0.1:$nginx_port/" | awk '/Requests\/sec/{print $2}')
echo "nginx: $raw req/s"
kill "$(cat "$work/nginx.pid")"; rm -f "$work/nginx.pid"

LISTEN="127.0.0.1:$rx_port" "$rx_bin" serve > "$work/rx.out" 2>&1 &
rx_pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$rx_port/stats" >/dev/null && break; sleep 0.1; done

rx() { curl -sf -X "$1" "http://127.0.0.1:$rx_port$2"; }
stats() { rx GET /stats; }
now_ms() { date +%s%3N; }

metric() { # sum of a metric's samples matching a filter
    curl -s "http://127.0.0.1:$router_port/metrics" | awk -v m="$1" -v f="$2" '$1 ~ "^"m && $1 ~ f {s+=$2} END{printf "%d", s}'
}

config() { # $1 = extra endpoint lines
    cat <<EOF
[server]
listen = "127.0.0.1:$router_port"
data_dir = "$work/data"
[plugins]
dir = "$repo/plugins/dist"
[delivery]
allow_http = true
allow_private_networks = true
[[accounts]]
id = "bench"
token = "$BENCH_TOKEN"
[[endpoints]]
id = "segment"
account = "bench"
url = "http://127.0.0.1:$rx_port/v1/batch"
secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
plugins = [ { name = "segment", config = { write_key = "wk_bench" } } ]
$1
EOF
}

start_router() { # $1 = extra endpoint lines
    # A fresh store; the compiled-plugin cache is kept between scenarios.
    [[ -d "$work/data/plugin-cache" ]] && mv "$work/data/plugin-cache" "$work/plugin-cache"
    rm -rf "$work/data"
    if [[ -d "$work/plugin-cache" ]]; then mkdir -p "$work/data" && mv "$work/plugin-cache" "$work/data/plugin-cache"; fi
    config "$1" > "$work/router.toml"
    RUST_LOG=warn "$bin" serve -c "$work/router.toml" > "$work/router.out" 2> "$work/router.err" &
    router_pid=$!
    for _ in $(seq 1200); do grep -q "listening on" "$work/router.out" 2>/dev/null && break; sleep 0.1; done
    grep -q "listening on" "$work/router.out" || { echo "router did not start:"; cat "$work/router.out" "$work/router.err"; exit 1; }
    for _ in $(seq 300); do [[ "$(metric switchyard_plugins_loaded '')" -ge 1 ]] && return; sleep 0.1; done
    echo "the segment plugin did not load:"; tail -5 "$work/router.err"; exit 1
}
stop_router() {
    kill "$router_pid"; wait "$router_pid" 2>/dev/null || true; router_pid=
}

post_events() { # the bench client; prints its line
    URL="http://127.0.0.1:$router_port/v1/accounts/bench/events" TOKEN="$BENCH_TOKEN" EVENTS="$events" CONNS="$conns" \
        "$rx_bin" post
}

wait_all() { # until the receiver holds every ingested event's messageId (max $1 s)
    local ingested
    ingested=$(metric switchyard_events_ingested_total '')
    for _ in $(seq $(( ${1:-600} * 5 ))); do
        [[ "$(stats | jq .distinct)" -ge "$ingested" ]] && return 0
        sleep 0.2
    done
    echo "NOT ALL DELIVERED: $(stats | jq -c '{distinct, events, requests}') of $ingested ingested"
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # CPU time, in clock ticks
hz=$(getconf CLK_TCK)

report() { # $1 = name, $2 = t0 (ms), $cpu0 = router ticks at t0; prints the scenario's lines, sets $rate
    local s ingested distinct requests ok span cpu
    s=$(stats)
    ingested=$(metric switchyard_events_ingested_total '')
    distinct=$(jq .distinct <<<"$s")
    requests=$(jq .requests <<<"$s")
    ok=$(jq '.by_status["200"] // 0' <<<"$s")
    span=$(( $(jq .last_new_id_ms <<<"$s") - $2 ))
    rate=$(awk -v d="$distinct" -v ms="$span" 'BEGIN{printf "%.0f", d*1000/ms}')
    cpu=$(awk -v a="$cpu0" -v b="$(ticks "$router_pid")" -v hz="$hz" 'BEGIN{printf "%.1f", (b-a)/hz}')
    echo "$1: $distinct of $ingested ingested events delivered (distinct messageIds) in $(awk -v ms="$span" 'BEGIN{printf "%.2f", ms/1000}') s => **$rate events/s delivered**"
    echo "  requests $requests (200: $ok, 400: $(jq '.by_status["400"] // 0' <<<"$s"), 413: $(jq '.by_status["413"] // 0' <<<"$s"), 429: $(jq '.by_status["429"] // 0' <<<"$s")); $(awk -v e="$(jq .events <<<"$s")" -v r="$ok" 'BEGIN{printf "%.1f", (r ? e/r : 0)}') events per accepted request (most $(jq .most_calls <<<"$s")); largest request $(jq .largest_request <<<"$s") bytes; dedupe-key repeats $(jq .repeats <<<"$s")"
    echo "  router: batch requests $(metric switchyard_batch_requests_total ''), batched deliveries $(metric switchyard_batched_deliveries_total ''), requests delayed by rate_limit $(metric switchyard_rate_limited_requests_total ''); CPU ${cpu} s from the first post ($(awk -v c="$cpu" -v d="$distinct" 'BEGIN{printf "%.1f", c*1e6/d}') µs per event), receiver CPU $(awk -v a="$rx0" -v b="$(ticks "$rx_pid")" -v hz="$hz" 'BEGIN{printf "%.1f", (b-a)/hz}') s; peak RSS $(( $(awk '/VmHWM/{print $2}' "/proc/$router_pid/status") / 1024 )) MiB"
    [[ "$(jq '.reasons | length' <<<"$s")" -gt 0 ]] && echo "  400 reasons: $(jq -c .reasons <<<"$s")"
    return 0
}

throughput() { # $1 = name, $2 = extra endpoint lines
    start_router "$2"
    rx POST /reset >/dev/null
    local t0 perf_pid=
    if [[ -n "${PERF:-}" ]]; then # PERF=dir: perf record -g of the router per scenario
        mkdir -p "$PERF"
        perf record -g -p "$router_pid" -o "$PERF/$1.perf.data" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    cpu0=$(ticks "$router_pid"); rx0=$(ticks "$rx_pid")
    t0=$(now_ms)
    echo "  client: $(post_events)"
    wait_all 600
    [[ -n "$perf_pid" ]] && { kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; }
    report "$1" "$t0"
    stop_router
}

BATCH='batch = { max_events = 100, max_bytes = "450KB", max_wait = "500ms" }'
# 50 requests of 100 events are 5,000 events/s, above what this router
# ingests on 2 shared cores: the limit would never bind. The limited
# scenarios batch by 20 (1,000 events/s at the limit) so a backlog forms.
LIMITED_BATCH=${LIMITED_BATCH:-'batch = { max_events = 20, max_bytes = "450KB", max_wait = "500ms" }'}

if [[ -z "${SKIP_AB:-}" ]]; then
echo
echo "== 0b. baseline: durable ingest alone (the endpoint subscribes to nothing), the same client"
start_router 'subscriptions = ["nothing.matches"]'
cpu0=$(ticks "$router_pid")
out=$(post_events)
ingest_alone=$(sed -n 's/.*(\([0-9]*\)\/s over.*/\1/p' <<<"$out")
echo "  client: $out"
echo "  router CPU $(awk -v a="$cpu0" -v b="$(ticks "$router_pid")" -v hz="$hz" -v n="$events" 'BEGIN{printf "%.1f s (%.1f µs per event)", (b-a)/hz, (b-a)/hz*1e6/n}')"
stop_router
rounds=${ROUNDS:-1}
brates=(); urates=()
for round in $(seq "$rounds"); do
    echo
    echo "== a. batched: $BATCH (round $round of $rounds)"
    throughput "batched" "$BATCH"
    brates+=("$rate")
    [[ -n "${SKIP_B:-}" ]] && { urates+=("$rate"); continue; }
    echo
    echo "== b. unbatched, one request per event (round $round of $rounds)"
    throughput "unbatched" ""
    urates+=("$rate")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
batched=$(median "${brates[@]}"); unbatched=$(median "${urates[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }
echo
echo "events/s delivered, batched: ${brates[*]} (median $batched); unbatched: ${urates[*]} (median $unbatched)"
echo "batched / unbatched: $(ratio "$batched" "$unbatched"); batched / ingest alone: $(ratio "$batched" "$ingest_alone"); unbatched / ingest alone: $(ratio "$unbatched" "$ingest_alone"); batched / nginx raw: $(ratio "$batched" "$raw"); unbatched / nginx raw: $(ratio "$unbatched" "$raw")"
fi

limited() { # $1 = name, $2 = extra endpoint lines while limited, $3 = after the lift (default scenario a's)
    rx POST '/limit?rps=50' >/dev/null
    start_router "$2"
    rx POST /reset >/dev/null
    local t0 prev=0 prev429=0 s r r429 i=0 after=0 line="" peak=0
    cpu0=$(ticks "$router_pid"); rx0=$(ticks "$rx_pid")
    t0=$(now_ms)
    post_events > "$work/post.txt" &
    local post_pid=$!
    # Sample the receiver every second until the posts are done and
    # LIMITED_SECS more have passed.
    while :; do
        i=$((i + 1))
        sleep "$(awk -v t0="$t0" -v i="$i" -v now="$(now_ms)" 'BEGIN{d=(t0+i*1000-now)/1000; print (d>0?d:0)}')"
        s=$(stats)
        r=$(jq .requests <<<"$s"); r429=$(jq '.by_status["429"] // 0' <<<"$s")
        line="$line $((r - prev))/$((r429 - prev429))"
        [[ $((r - prev)) -gt "$peak" ]] && peak=$((r - prev))
        prev=$r; prev429=$r429
        if ! kill -0 "$post_pid" 2>/dev/null; then
            after=$((after + 1))
            [[ "$after" -ge "$limited_secs" ]] && break
        fi
    done
    wait "$post_pid" || true
    echo "  client: $(cat "$work/post.txt")"
    echo "  receiver, requests/429s in each second while limited:$line"
    s=$(stats)
    local ok limited_429 backlog ingested ms
    ms=$(( $(now_ms) - t0 ))
    ok=$(jq '.by_status["200"] // 0' <<<"$s"); limited_429=$(jq '.by_status["429"] // 0' <<<"$s")
    ingested=$(metric switchyard_events_ingested_total '')
    backlog=$(( ingested - $(jq .distinct <<<"$s") ))
    echo "  limited for $(awk -v ms="$ms" 'BEGIN{printf "%.1f", ms/1000}') s: $ok requests answered 200 ($(awk -v r="$ok" -v ms="$ms" 'BEGIN{printf "%.1f", r*1000/ms}')/s; busiest second $peak requests), $limited_429 answered 429; $(jq .distinct <<<"$s") events delivered, backlog $backlog of $ingested; router: $(metric switchyard_rate_limited_requests_total '') requests delayed by rate_limit"
    # Lift: the router.toml of scenario a (no rate_limit; hot reload) and
    # the receiver unlimited.
    config "${3-$BATCH}" > "$work/router.toml.new" && mv "$work/router.toml.new" "$work/router.toml"
    rx POST '/limit?rps=0' >/dev/null
    local t_lift
    t_lift=$(now_ms)
    # Sample every second until the receiver holds every event.
    i=0; line=""; prev=$(jq .requests <<<"$s"); local pd d
    pd=$(jq .distinct <<<"$s")
    while [[ "$(jq .distinct <<<"$s")" -lt "$ingested" && "$i" -lt 600 ]]; do
        i=$((i + 1))
        sleep "$(awk -v t0="$t_lift" -v i="$i" -v now="$(now_ms)" 'BEGIN{d=(t0+i*1000-now)/1000; print (d>0?d:0)}')"
        s=$(stats)
        r=$(jq .requests <<<"$s"); d=$(jq .distinct <<<"$s")
        line="$line $((r - prev))/$((d - pd))"
        prev=$r; pd=$d
    done
    echo "  receiver, requests/new events in each second after the lift:$line"
    s=$(stats)
    if [[ "$backlog" -gt 0 ]]; then
        local drain_ms=$(( $(jq .last_new_id_ms <<<"$s") - t_lift ))
        echo "  lifted: the backlog of $backlog events drained in $(awk -v ms="$drain_ms" 'BEGIN{printf "%.2f", ms/1000}') s ($(awk -v b="$backlog" -v ms="$drain_ms" 'BEGIN{printf "%.0f", b*1000/ms}') events/s, delivery alone: every event was already ingested)"
    else
        echo "  lifted: no backlog left"
    fi
    report "$1 (whole run)" "$t0"
    stop_router
}

[[ -n "${SKIP_C:-}" ]] && exit 0
echo
router_rate=${ROUTER_RATE:-50/s}
echo "== c. receiver limited to 50 requests/s, endpoint rate_limit = \"$router_rate\" and $LIMITED_BATCH, then lifted"
limited "limited+rate_limit" "$LIMITED_BATCH
rate_limit = \"$router_rate\""
if [[ -z "${SKIP_D:-}" ]]; then
    echo
    echo "== d. receiver limited to 50 requests/s, endpoint WITHOUT rate_limit (429 + Retry-After only), $LIMITED_BATCH, then lifted"
    limited "limited, no rate_limit" "$LIMITED_BATCH"
fi
if [[ -n "${UNBATCHED_DRAIN:-}" ]]; then
    echo
    echo "== e. as d, unbatched before and after the lift (the backlog's drain without batching, for the ratio)"
    limited "limited, unbatched" "" ""
fi
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
