#!/usr/bin/env bash
# The proxy benchmark (issue 13; BENCHMARKS.md, "Proxy"): TCP proxies side by side, loadgen
# driving each through the proxy to an upstream, the CPU the proxy spends per unit of work.
#
#   scripts/proxy_bench.sh                          # everything, 3 rounds (about 10 min)
#   PROXY_BENCH_ROUNDS=1 PROXY_BENCH_SECONDS=2 PROXY_BENCH_BULK_BYTES=268435456 \
#       PROXY_BENCH_ONEWAY_BYTES=268435456 PROXY_BENCH_IDLE_CONNS=2000 scripts/proxy_bench.sh
#                                                   # a smoke run (about 1–2 min)
#   PROXY_BENCH_PROXIES="c-splice tokio finwait" PROXY_BENCH_SCENARIOS="bulk pingpong" \
#       scripts/proxy_bench.sh                      # a subset
#   PROXY_BENCH_FINWAIT_SPLICE_ARGS="--splice" scripts/proxy_bench.sh
#                                                   # adds finwait's proxy with those arguments
#
# Proxies (PROXY_BENCH_PROXIES, space-separated; default: all but finwait-splice, which is
# added when PROXY_BENCH_FINWAIT_SPLICE_ARGS is set):
#   c-splice             bench/peers/splice_proxy.c: epoll, splice(2) through a pipe pair per
#                        direction, kernel-default pipes (64 KiB) — the floor
#   c-splice-1m          the same with -p $PROXY_BENCH_PIPE_SIZE (default 1 MiB pipes)
#   c-rw                 bench/peers/rw_proxy.c: the same program copying with recv/send
#   tokio                bench/examples/tokio_proxy.rs: copy_bidirectional, current_thread
#   haproxy              HAProxy (Debian package), mode tcp, nbthread 1, no splicing
#   haproxy-splice-auto  the same with option splice-auto
#   haproxy-splice       the same with option splice-request + option splice-response
#   haproxy-splice-1m    the same with tune.pipesize $PROXY_BENCH_PIPE_SIZE (default 1 MiB)
#   finwait              examples/proxy.rs, with $PROXY_BENCH_FINWAIT_ARGS (default none)
#   finwait-splice       examples/proxy.rs with $PROXY_BENCH_FINWAIT_SPLICE_ARGS
#
# Scenarios (PROXY_BENCH_SCENARIOS; loadgen's, through the proxy):
#   bulk      echo upstream; PROXY_BENCH_BULK_BYTES (1 GiB) over PROXY_BENCH_BULK_CONNS (4)
#             connections, every echoed byte checked. Proxy CPU ms per GiB forwarded, where
#             forwarded counts both directions (2 x the bytes loadgen sent).
#   upload    one way, loadgen -> proxy -> a sink (bench/peers/oneway_upstream.c) that checks
#             the bytes and answers with their count: PROXY_BENCH_ONEWAY_BYTES (1 GiB) over
#             PROXY_BENCH_ONEWAY_CONNS (4). Proxy CPU ms per GiB.
#   download  one way, a source -> proxy -> loadgen, which checks the bytes. The same sizes.
#   pingpong  echo upstream; PROXY_BENCH_PINGPONG_CONNS (50) connections x 64 B for
#             PROXY_BENCH_SECONDS (3). Proxy CPU µs per message, p99 latency.
#   churn     echo upstream; PROXY_BENCH_CHURN_WORKERS (50) workers connect, send 64 B, end,
#             read the echo, close, for PROXY_BENCH_SECONDS, from PROXY_BENCH_CHURN_SOURCE_IPS
#             (8) loopback addresses. Proxy CPU µs per connection (a pair: two sockets).
#   idle      echo upstream; PROXY_BENCH_IDLE_CONNS (10000) idle connections: the proxy's RSS
#             delta per pair, and its fd count back to baseline after they closed.
#
# Layout: every run starts a fresh upstream and a fresh proxy. The proxy is pinned to CPU
# PROXY_BENCH_PROXY_CPU (0), loadgen and the upstream to PROXY_BENCH_LOAD_CPU (1), with
# taskset; PROXY_BENCH_PIN=0 disables pinning. CPU is the proxy's, every thread, from
# /proc/PID/task/*/schedstat, sampled by loadgen over the measured interval (--server-pid).
# PROXY_BENCH_ROUNDS (3) rounds; in each, every scenario runs every proxy in turn, each round
# starting with the next proxy; the tables show medians over the rounds, with ratios against
# the tokio proxy and against the C splice proxy, finwait's proxy against each peer round by
# round (each round's own ratio: its median and range), and the whole machine's CPU per unit
# (loadgen's machine_cpu_s: over loopback part of each side's TCP work runs on the other's CPU).
#
# Output: the tables on stdout and in $TARGET/proxy_bench.md, loadgen's JSON lines (plus
# "proxy" and "round") in $TARGET/proxy_bench.jsonl, diagnostics in $TARGET/proxy_bench.log.
# Needs gcc, taskset, ss, python3 (the tables); installs haproxy with apt-get when run as root
# (skips the HAProxy variants otherwise). Respects CARGO_TARGET_DIR. Run it on an otherwise
# idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac

rounds="${PROXY_BENCH_ROUNDS:-3}"
seconds="${PROXY_BENCH_SECONDS:-3}"
bulk_bytes="${PROXY_BENCH_BULK_BYTES:-1073741824}"
bulk_conns="${PROXY_BENCH_BULK_CONNS:-4}"
oneway_bytes="${PROXY_BENCH_ONEWAY_BYTES:-1073741824}"
oneway_conns="${PROXY_BENCH_ONEWAY_CONNS:-4}"
pingpong_conns="${PROXY_BENCH_PINGPONG_CONNS:-50}"
churn_workers="${PROXY_BENCH_CHURN_WORKERS:-50}"
churn_source_ips="${PROXY_BENCH_CHURN_SOURCE_IPS:-8}"
idle_conns="${PROXY_BENCH_IDLE_CONNS:-10000}"
pipe_size="${PROXY_BENCH_PIPE_SIZE:-1048576}"
scenarios="${PROXY_BENCH_SCENARIOS:-bulk upload download pingpong churn idle}"
finwait_args="${PROXY_BENCH_FINWAIT_ARGS:-}"
finwait_splice_args="${PROXY_BENCH_FINWAIT_SPLICE_ARGS:-}"
default_proxies="c-splice c-splice-1m c-rw tokio haproxy haproxy-splice-auto haproxy-splice haproxy-splice-1m finwait"
[ -n "$finwait_splice_args" ] && default_proxies="$default_proxies finwait-splice"
proxies="${PROXY_BENCH_PROXIES:-$default_proxies}"
proxy_cpu="${PROXY_BENCH_PROXY_CPU:-0}"
load_cpu="${PROXY_BENCH_LOAD_CPU:-1}"

out_md="$target/proxy_bench.md"
out_json="$target/proxy_bench.jsonl"
log="$target/proxy_bench.log"
peers="$target/proxy_bench"
examples="$target/release/examples"
mkdir -p "$peers"
: >"$out_json"
: >"$log"
say() { echo "proxy_bench: $*" >&2; }

# ---- what it needs ------------------------------------------------------------------------

case " $proxies " in
*" haproxy"*)
    if ! command -v haproxy >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            say "installing haproxy"
            apt-get install -y haproxy >>"$log" 2>&1 \
                || { apt-get update >>"$log" 2>&1 && apt-get install -y haproxy >>"$log" 2>&1; } \
                || say "could not install haproxy (see $log)"
        fi
    fi
    if ! command -v haproxy >/dev/null 2>&1; then
        say "no haproxy: skipping the HAProxy variants"
        proxies="$(for p in $proxies; do case "$p" in haproxy*) ;; *) printf '%s ' "$p" ;; esac; done)"
    fi
    ;;
esac

cargo build --release -p finwait -p finwait-bench \
    --example echo --example proxy --example loadgen --example tokio_proxy
for peer in splice_proxy rw_proxy oneway_upstream; do
    gcc -O2 -Wall -o "$peers/$peer" "bench/peers/$peer.c"
done

pin_proxy=()
pin_load=()
if [ "${PROXY_BENCH_PIN:-1}" != 0 ] && [ "$(nproc)" -ge 2 ]; then
    pin_proxy=(taskset -c "$proxy_cpu")
    pin_load=(taskset -c "$load_cpu")
fi

# Idle pairs hold two fds each in the proxy: raise the limit the children inherit.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit="$(ulimit -n)"
if [ "$fd_limit" != unlimited ] && [ $((2 * idle_conns + 256)) -gt "$fd_limit" ]; then
    idle_conns=$(((fd_limit - 512) / 2))
    say "RLIMIT_NOFILE is $fd_limit: idle runs use $idle_conns connections"
fi

# ---- processes ----------------------------------------------------------------------------

tmp="$(mktemp -d)"
started=()
cleanup() {
    local p
    for p in "${started[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# start NAME CMD... : runs CMD in the background and waits for its `listening on` line; sets
# pid and addr.
start() {
    local name="$1"
    shift
    "$@" >"$tmp/$name.out" 2>>"$log" &
    pid=$!
    started+=("$pid")
    addr=""
    for _ in $(seq 400); do
        addr="$(sed -n 's/^listening on //p' "$tmp/$name.out" | head -n 1)"
        [ -n "$addr" ] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.025
    done
    say "$name did not start: $*"
    return 1
}

# stop PID: SIGTERM, SIGKILL after 5 s.
stop() {
    local p="$1"
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    local rest=() q
    for q in "${started[@]}"; do [ "$q" = "$p" ] || rest+=("$q"); done
    started=("${rest[@]}")
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# haproxy_config VARIANT PORT UPSTREAM: TCP mode, one thread, the variant's splice options.
haproxy_config() {
    local splice pipes=""
    case "$1" in
    haproxy) splice="    no option splice-auto
    no option splice-request
    no option splice-response" ;;
    haproxy-splice-auto) splice="    option splice-auto" ;;
    haproxy-splice | haproxy-splice-1m) splice="    option splice-request
    option splice-response" ;;
    esac
    [ "$1" = haproxy-splice-1m ] && pipes="    tune.pipesize $pipe_size"
    cat <<EOF
global
    nbthread 1
    maxconn $((idle_conns + 64))
    # Pipes for splicing count against the fd limit too (2 each; HAProxy's default is a
    # quarter of maxconn): a few suffice for the benchmark's streams.
    maxpipes 64
$pipes

defaults
    mode tcp
    maxconn $((idle_conns + 64))
    timeout connect 5s
    timeout client 120s
    timeout server 120s
$splice

frontend proxy
    bind 127.0.0.1:$2
    default_backend upstream

backend upstream
    server upstream $3
EOF
}

# start_proxy NAME UPSTREAM: sets pid and addr.
start_proxy() {
    local name="$1" up="$2"
    case "$name" in
    c-splice) start "$name" "${pin_proxy[@]}" "$peers/splice_proxy" 0 "$up" ;;
    c-splice-1m) start "$name" "${pin_proxy[@]}" "$peers/splice_proxy" -p "$pipe_size" 0 "$up" ;;
    c-rw) start "$name" "${pin_proxy[@]}" "$peers/rw_proxy" 0 "$up" ;;
    tokio) start "$name" "${pin_proxy[@]}" "$examples/tokio_proxy" --upstream "$up" ;;
    finwait)
        # shellcheck disable=SC2086 # the extra arguments are words
        start "$name" "${pin_proxy[@]}" "$examples/proxy" --upstream "$up" $finwait_args
        ;;
    finwait-splice)
        # shellcheck disable=SC2086
        start "$name" "${pin_proxy[@]}" "$examples/proxy" --upstream "$up" $finwait_splice_args
        ;;
    haproxy*)
        local port
        port="$(free_port)"
        haproxy_config "$name" "$port" "$up" >"$tmp/$name.cfg"
        "${pin_proxy[@]}" haproxy -db -f "$tmp/$name.cfg" >>"$log" 2>&1 &
        pid=$!
        started+=("$pid")
        addr="127.0.0.1:$port"
        for _ in $(seq 400); do
            [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ] && return 0
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.025
        done
        say "haproxy ($name) did not start"
        return 1
        ;;
    *)
        say "unknown proxy $name"
        return 1
        ;;
    esac
}

# run PROXY SCENARIO ROUND: one fresh upstream, one fresh proxy, one loadgen run.
run() {
    local name="$1" scenario="$2" round="$3" up_pid up_addr px_pid line args
    case "$scenario" in
    upload) start upstream "${pin_load[@]}" "$peers/oneway_upstream" sink 127.0.0.1:0 ;;
    download)
        start upstream "${pin_load[@]}" "$peers/oneway_upstream" source \
            $((oneway_bytes / oneway_conns)) 127.0.0.1:0
        ;;
    *) start upstream "${pin_load[@]}" "$examples/echo" ;;
    esac
    up_pid="$pid"
    up_addr="$addr"
    if ! start_proxy "$name" "$up_addr"; then
        stop "$up_pid"
        echo "{\"proxy\":\"$name\",\"round\":$round,\"scenario\":\"$scenario\",\"errors\":1}" >>"$out_json"
        return
    fi
    px_pid="$pid"
    case "$scenario" in
    bulk) args=(--connections "$bulk_conns" --bytes "$bulk_bytes") ;;
    upload | download) args=(--connections "$oneway_conns" --bytes "$oneway_bytes") ;;
    pingpong) args=(--connections "$pingpong_conns" --duration-s "$seconds") ;;
    churn) args=(--connections "$churn_workers" --duration-s "$seconds" --source-ips "$churn_source_ips") ;;
    idle) args=(--connections "$idle_conns") ;;
    esac
    say "round $round: $scenario through $name"
    line="$("${pin_load[@]}" "$examples/loadgen" --connect "$addr" --scenario "$scenario" \
        --server-pid "$px_pid" "${args[@]}" 2>>"$log")" || true
    stop "$px_pid"
    stop "$up_pid"
    case "$line" in
    '{'*) ;;
    *) line="{\"scenario\":\"$scenario\",\"errors\":1}" ;;
    esac
    case "$line" in *'"errors":0}') ;; *) say "errors in: $line" ;; esac
    echo "{\"proxy\":\"$name\",\"round\":$round,${line#\{}" >>"$out_json"
}

# ---- the rounds ---------------------------------------------------------------------------

read -r -a proxy_list <<<"$proxies"
n="${#proxy_list[@]}"
[ "$n" -gt 0 ] || { say "no proxies to run"; exit 1; }
for round in $(seq "$rounds"); do
    for scenario in $scenarios; do
        for i in $(seq 0 $((n - 1))); do
            run "${proxy_list[$(((i + round - 1) % n))]}" "$scenario" "$round"
        done
    done
done

# ---- the tables ---------------------------------------------------------------------------

{
    echo "## Proxy benchmark"
    echo
    echo "$(date -u +%Y-%m-%d), commit \`$(git rev-parse --short HEAD 2>/dev/null || echo '?')\`," \
        "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), Linux $(uname -r);" \
        "proxy on CPU $proxy_cpu, loadgen and upstream on CPU $load_cpu$([ ${#pin_proxy[@]} = 0 ] && echo ' (not pinned)');" \
        "$rounds round(s), medians. bulk $bulk_bytes B over $bulk_conns connections;" \
        "upload/download $oneway_bytes B over $oneway_conns; pingpong $pingpong_conns x 64 B for $seconds s;" \
        "churn $churn_workers workers for $seconds s; idle $idle_conns connections.$(
            [ -n "$finwait_args" ] && printf ' finwait: `%s`.' "$finwait_args")$(
            [ -n "$finwait_splice_args" ] && printf ' finwait-splice: `%s`.' "$finwait_splice_args")"
    echo
    PROXIES="${proxy_list[*]}" SCENARIOS="$scenarios" python3 - "$out_json" <<'EOF'
import json, os, statistics, sys

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
proxies = os.environ["PROXIES"].split()
scenarios = os.environ["SCENARIOS"].split()
GIB = float(1 << 30)

def cpu_s(r):
    v = r.get("server_sched_cpu_s")
    return v if v is not None else r.get("server_cpu_s")

def per_unit(r):
    """The proxy's CPU per unit of the run's scenario (None when not measured)."""
    s, c = r["scenario"], cpu_s(r)
    if s == "idle":
        return r.get("server_bytes_per_conn")
    if c is None:
        return None
    if s == "bulk" and r.get("bytes"):
        return c * 1e3 / (2 * r["bytes"] / GIB)  # forwarded: both directions
    if s in ("upload", "download") and r.get("bytes"):
        return c * 1e3 / (r["bytes"] / GIB)
    if s in ("pingpong", "churn"):
        return r.get("server_sched_us_per_op", r.get("server_cpu_us_per_op"))
    return None

def machine_per_unit(r):
    """Every CPU's busy time per unit: the proxy, loadgen, the upstream and the kernel's work
    for all three, wherever it ran (None when not measured)."""
    s, c = r["scenario"], r.get("machine_cpu_s")
    if c is None:
        return None
    if s == "bulk" and r.get("bytes"):
        return c * 1e3 / (2 * r["bytes"] / GIB)
    if s in ("upload", "download") and r.get("bytes"):
        return c * 1e3 / (r["bytes"] / GIB)
    if s in ("pingpong", "churn"):
        return r.get("machine_cpu_us_per_op")
    return None

def rate(r):
    return {"bulk": "gib_per_s", "upload": "gib_per_s", "download": "gib_per_s",
            "pingpong": "msg_per_s", "churn": "conns_per_s"}.get(r["scenario"])

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

cells = {}
for p in proxies:
    for s in scenarios:
        rs = [r for r in runs if r.get("proxy") == p and r.get("scenario") == s]
        key = rate(rs[0]) if rs else None
        cells[p, s] = {
            "cpu": median([per_unit(r) for r in rs]),
            "machine": median([machine_per_unit(r) for r in rs]),
            "p99": median([r.get("p99_us") for r in rs]),
            "rate": median([r.get(key) for r in rs]) if key else None,
            # loadgen counts an idle run whose proxy's fds are not back at the baseline 5 s
            # after the close as an error; that shows in its own column instead.
            "errors": sum(r.get("errors", 1) - (r.get("fds_back_to_baseline") is False) for r in rs),
            "fds": max((r["server_fds_after"] - r["server_fds_baseline"] for r in rs
                        if "server_fds_after" in r), default=None) if s == "idle" else None,
            "n": len(rs),
        }

def fmt(v, digits=3):
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"

units = {"bulk": "bulk echo ms/GiB", "upload": "upload ms/GiB", "download": "download ms/GiB",
         "pingpong": "pingpong µs/msg", "churn": "churn µs/conn", "idle": "idle B/pair"}
cols = [s for s in units if s in scenarios]

print("Proxy CPU per unit of work (idle: the proxy's RSS per idle pair):\n")
head = [units[s] for s in cols]
if "pingpong" in cols:
    head.insert(cols.index("pingpong") + 1, "pingpong p99 µs")
print("| proxy | " + " | ".join(head) + " |")
print("|---|" + "---:|" * len(head))
for p in proxies:
    row = []
    for s in cols:
        row.append(fmt(cells[p, s]["cpu"]))
        if s == "pingpong":
            row.append(fmt(cells[p, s]["p99"]))
    print(f"| {p} | " + " | ".join(row) + " |")

for base, label in (("tokio", "the tokio proxy"), ("c-splice", "the C splice proxy")):
    if base not in proxies:
        continue
    print(f"\nRatio to {label} (per unit of work, lower is cheaper):\n")
    print("| proxy | " + " | ".join(s for s in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for p in proxies:
        row = []
        for s in cols:
            a, b = cells[p, s]["cpu"], cells[base, s]["cpu"]
            row.append(f"{a / b:.2f}" if a is not None and b else "–")
        print(f"| {p} | " + " | ".join(row) + " |")

rcols = [s for s in cols if s != "idle"]

# finwait's proxy against each peer round by round: each round's own ratio (the proxies of a
# round run one after the other, so they share its state of the machine), its median over
# the rounds and its range.
for me in [m for m in ("finwait-splice", "finwait") if m in proxies]:
    print(f"\n{me} against each proxy, round by round (median of each round's own ratio of "
          "proxy CPU per unit, and its range):\n")
    print("| against | " + " | ".join(rcols) + " |")
    print("|---|" + "---|" * len(rcols))
    for p in proxies:
        if p == me:
            continue
        row = []
        for s in rcols:
            mine = {r["round"]: per_unit(r) for r in runs if r.get("proxy") == me and r.get("scenario") == s}
            xs = [mine[r["round"]] / per_unit(r) for r in runs
                  if r.get("proxy") == p and r.get("scenario") == s and mine.get(r["round"])
                  and per_unit(r)]
            row.append(f"{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})" if xs else "–")
        print(f"| {p} | " + " | ".join(row) + " |")

if any(cells[p, s]["machine"] is not None for p in proxies for s in rcols):
    print("\nWhole machine CPU per unit of work (every CPU's busy time: the proxy, loadgen, the"
          " upstream and the kernel's work for them wherever it ran; over loopback a packet's"
          " receive path runs on the sending CPU, so part of the proxy's peers' TCP work lands"
          " on the proxy's CPU, and part of its own on theirs, by timing):\n")
    print("| proxy | " + " | ".join(units[s] for s in rcols) + " |")
    print("|---|" + "---:|" * len(rcols))
    for p in proxies:
        print(f"| {p} | " + " | ".join(fmt(cells[p, s]["machine"]) for s in rcols) + " |")
rate_units = {"bulk": "bulk GiB/s (echoed)", "upload": "upload GiB/s",
              "download": "download GiB/s", "pingpong": "msg/s", "churn": "conn/s"}
print("\nThroughput and checks (errors summed over the rounds; bytes and echoes are checked by"
      " loadgen, uploads by the sink; idle fds left: the proxy's fds 5 s after the idle"
      " connections closed, minus its baseline, the most over the rounds):\n")
head = [rate_units[s] for s in rcols] + ["errors"] + (["idle fds left"] if "idle" in cols else [])
print("| proxy | " + " | ".join(head) + " |")
print("|---|" + "---:|" * len(head))
for p in proxies:
    row = [fmt(cells[p, s]["rate"], 4) for s in rcols]
    row.append(str(sum(cells[p, s]["errors"] for s in cols)))
    if "idle" in cols:
        left = cells[p, "idle"]["fds"]
        row.append("–" if left is None else f"{left:+d}" if left else "0")
    print(f"| {p} | " + " | ".join(row) + " |")
EOF
} | tee "$out_md"
errors="$(grep -c -v '"errors":0}' "$out_json" || true)"
[ "$errors" = 0 ] || say "$errors run(s) reported errors (idle: fds not back at baseline counts): see $out_json and $log"
