#!/usr/bin/env bash
# Restart under load (issue 14; RESTART.md): a server restarted again and again while loadgen
# runs churn (connect, one request, FIN, the reply, close — as fast as it goes) plus 100
# pingpong connections against it, in three ways:
#
#   handover     the zero-downtime restart: each new instance is started with --handover PATH
#                and takes the listening socket over from the running one, which finishes
#                its connections and exits (CONTRACT.md)
#   stop-start   naive (a): SIGTERM the running instance, then start a new one that binds
#                the port (retried until the old one has let go of it)
#   reuseport    naive (b): start a new instance with --reuse-port beside the running one
#                (also --reuse-port), then SIGTERM the old one
#
# for the echo and the http examples. loadgen (--scenario restart) reports client errors by
# kind: refused, reset, short (a reply cut by a FIN), corrupt, timeout, other. The script
# reports restarts done, how long each old instance took to exit after its successor was
# serving (handover, reuseport) or after its SIGTERM (stop-start) — min/median/max — and
# whether each exited 0; for handover, whether the last instance's fd count is back to the
# first one's baseline once the load stops. Exit status 1 if a handover run saw a client
# error, an old instance exiting other than 0 or late, or fds not back to baseline (the
# naive runs are expected to show errors: they are the baseline).
#
#   scripts/restart_bench.sh                        # 100 restarts per run, echo and http,
#                                                   # all three ways (about 5 min)
#   RESTART_BENCH_RESTARTS=5 scripts/restart_bench.sh      # a short run
#   RESTART_BENCH_SERVERS=echo RESTART_BENCH_MODES=handover RESTART_BENCH_RESTARTS=3 \
#       scripts/restart_bench.sh                    # a smoke (a few seconds)
#
# Knobs (environment): RESTART_BENCH_RESTARTS (100) restarts per run; RESTART_BENCH_SERVERS
# ("echo http"); RESTART_BENCH_MODES ("handover stop-start reuseport");
# RESTART_BENCH_SERVE_MS (200) how long each instance serves before the next restart;
# RESTART_BENCH_GRACE_MS (5000) the servers' --shutdown-timeout-ms; RESTART_BENCH_WORKERS
# (50) churn workers; RESTART_BENCH_PINGPONG (100) pingpong connections;
# RESTART_BENCH_SOURCE_IPS (16) loopback source addresses for the churn; RESTART_BENCH_PIN
# (1): servers on CPU RESTART_BENCH_SERVER_CPU (0), loadgen on RESTART_BENCH_LOAD_CPU (1),
# with taskset; RESTART_BENCH_PROFILE (release) the build profile.
#
# Output: the table on stdout and in $TARGET/restart_bench.md, one JSON line per run (loadgen's
# report plus the script's figures) in $TARGET/restart_bench.jsonl, the servers' and loadgen's
# stderr in $TARGET/restart_bench.log. Needs taskset (unless RESTART_BENCH_PIN=0) and python3.
# Respects CARGO_TARGET_DIR. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac

restarts="${RESTART_BENCH_RESTARTS:-100}"
servers="${RESTART_BENCH_SERVERS:-echo http}"
modes="${RESTART_BENCH_MODES:-handover stop-start reuseport}"
serve_ms="${RESTART_BENCH_SERVE_MS:-200}"
grace_ms="${RESTART_BENCH_GRACE_MS:-5000}"
workers="${RESTART_BENCH_WORKERS:-50}"
pingpong="${RESTART_BENCH_PINGPONG:-100}"
source_ips="${RESTART_BENCH_SOURCE_IPS:-16}"
pin="${RESTART_BENCH_PIN:-1}"
server_cpu="${RESTART_BENCH_SERVER_CPU:-0}"
load_cpu="${RESTART_BENCH_LOAD_CPU:-1}"
profile="${RESTART_BENCH_PROFILE:-release}"

flag=()
[ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" -p finwait --example echo --example http --example loadgen >&2
bin="$target/$profile/examples"

mkdir -p "$target"
jsonl="$target/restart_bench.jsonl"
table="$target/restart_bench.md"
log="$target/restart_bench.log"
: >"$jsonl"
: >"$log"

work="$(mktemp -d "${TMPDIR:-/tmp}/finwait-restart-bench.XXXXXX")"
# At exit, whatever this script started and is still running (its own jobs, not yet reaped,
# so their PIDs cannot have been reused) is killed by PID.
cleanup() {
    local p
    for p in $(jobs -p); do
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

if [ "$pin" = 1 ] && ! command -v taskset >/dev/null; then
    echo "restart_bench: no taskset: nothing is pinned" >&2
    pin=0
fi
if [ "$pin" = 1 ] && [ "$(nproc)" -le "$(( server_cpu > load_cpu ? server_cpu : load_cpu ))" ]; then
    echo "restart_bench: $(nproc) CPUs: nothing is pinned" >&2
    pin=0
fi
pin_to() { # CPU: the taskset prefix, or nothing
    if [ "$pin" = 1 ]; then echo "taskset -c $1"; fi
}
server_pin="$(pin_to "$server_cpu")"
load_pin="$(pin_to "$load_cpu")"

# A sleep that forks nothing: a read with a timeout on a FIFO nobody writes to.
mkfifo "$work/idle"
exec {idle_fd}<>"$work/idle"
nap() { read -r -t "$1" -u "$idle_fd" _ || true; }

seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); } # MS as seconds

now_us() { local t="${EPOCHREALTIME/./}"; echo "$((10#$t))"; }

# Whether PID has exited (gone, or a zombie waiting to be reaped).
has_exited() {
    local st
    [ -e "/proc/$1" ] || return 0
    { read -r st <"/proc/$1/stat"; } 2>/dev/null || return 0
    [[ "$st" == *") Z "* ]]
}

# Starts an instance of $server with the arguments given, stdout to $work/inst.N.out;
# sets $inst_pid and $inst_out.
n_inst=0
start_instance() {
    n_inst=$((n_inst + 1))
    inst_out="$work/inst.$n_inst.out"
    # shellcheck disable=SC2086
    $server_pin "$bin/$server" "$@" --shutdown-timeout-ms "$grace_ms" \
        >"$inst_out" 2>>"$log" </dev/null &
    inst_pid=$!
}

# Waits (at most 10 s) for $inst_pid's `listening on` line; sets $inst_addr. Returns 1 if the
# instance exited first (its status in $inst_rc) or did not say it in time.
wait_listening() {
    local deadline=$(($(now_us) + 10000000)) line=""
    inst_addr=""
    while :; do
        if [ -s "$inst_out" ]; then
            read -r line <"$inst_out" || true
            case "$line" in
            "listening on "*)
                inst_addr="${line#listening on }"
                return 0
                ;;
            esac
        fi
        if has_exited "$inst_pid"; then
            inst_rc=0
            wait "$inst_pid" || inst_rc=$?
            return 1
        fi
        [ "$(now_us)" -lt "$deadline" ] || return 1
        nap 0.001
    done
}

# Waits for PID to exit, at most the grace plus 5 s (then SIGKILL); sets $exit_ms (from
# $1, a now_us timestamp) and $exit_rc.
wait_exit() {
    local pid="$2" from="$1" limit=$(($(now_us) + (grace_ms + 5000) * 1000))
    while ! has_exited "$pid"; do
        if [ "$(now_us)" -ge "$limit" ]; then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        nap 0.001
    done
    local t
    t="$(now_us)"
    exit_rc=0
    wait "$pid" || exit_rc=$?
    exit_ms="$(((t - from) / 1000)).$(printf '%03d' $(((t - from) % 1000)))"
}

fd_count() { local fds=("/proc/$1/fd/"*); echo "${#fds[@]}"; }

cpu="$(grep -m 1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: //')"
machine="$(uname -sr), $(nproc) CPUs (${cpu:-unknown}), $(rustc --version | cut -d' ' -f1-2)"
echo "restart_bench: $machine; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

fail=0

# One run: $server restarted $restarts times in $mode under load.
run() {
    local mode="$1"
    local sock="$work/$server.handover" addr first baseline="" load_pid stop="$work/stop"
    local exits=() codes=() downs=() done_restarts=0 late=0 bad_exit=0 fds_back=null
    local current old t0 i
    rm -f "$stop" "$sock"
    case "$mode" in
    handover) start_instance --handover "$sock" ;;
    stop-start) start_instance --listen 127.0.0.1:0 ;;
    reuseport) start_instance --listen 127.0.0.1:0 --reuse-port ;;
    esac
    wait_listening || { echo "restart_bench: $server did not start" >&2; return 1; }
    addr="$inst_addr"
    current="$inst_pid"
    first="$inst_pid"
    baseline="$(fd_count "$first")"
    # shellcheck disable=SC2086
    $load_pin "$bin/loadgen" --connect "$addr" --scenario restart --protocol "$server" \
        --connections "$workers" --pingpong "$pingpong" --source-ips "$source_ips" \
        --stop-file "$stop" >"$work/load.json" 2>>"$log" &
    load_pid=$!
    nap 0.5
    local run_start load_before
    run_start="$(now_us)"
    load_before="$(cut -d' ' -f1 /proc/loadavg)"
    for ((i = 1; i <= restarts; i++)); do
        nap "$(seconds "$serve_ms")"
        old="$current"
        case "$mode" in
        handover)
            start_instance --handover "$sock"
            if ! wait_listening; then
                echo "restart_bench: $server $mode $i: the successor did not take over" >&2
                fail=1
                break
            fi
            [ "$inst_addr" = "$addr" ] || { echo "restart_bench: $i: $inst_addr != $addr" >&2; fail=1; }
            t0="$(now_us)"
            ;;
        stop-start)
            t0="$(now_us)"
            kill -TERM "$old"
            # The new instance binds once the old one has closed its listener: until then
            # it exits 1 (address in use) and is started again.
            while :; do
                start_instance --listen "$addr"
                wait_listening && break
                if [ "$(($(now_us) - t0))" -gt 10000000 ]; then
                    echo "restart_bench: $server $mode $i: no new instance could bind" >&2
                    break 2
                fi
            done
            downs+=("$((($(now_us) - t0) / 1000))")
            ;;
        reuseport)
            start_instance --listen "$addr" --reuse-port
            if ! wait_listening; then
                echo "restart_bench: $server $mode $i: the new instance did not start" >&2
                break
            fi
            t0="$(now_us)"
            kill -TERM "$old"
            ;;
        esac
        current="$inst_pid"
        wait_exit "$t0" "$old"
        exits+=("$exit_ms")
        codes+=("$exit_rc")
        done_restarts=$i
        if [ "$exit_rc" != 0 ]; then
            bad_exit=$((bad_exit + 1))
            echo "restart_bench: $server $mode $i: the old instance exited $exit_rc after ${exit_ms} ms" >&2
        fi
        # Within its grace?
        if [ "${exit_ms%.*}" -ge "$grace_ms" ]; then late=$((late + 1)); fi
    done
    local run_ms
    run_ms="$((($(now_us) - run_start) / 1000))"
    touch "$stop"
    local load_rc=0
    wait "$load_pid" || load_rc=$?
    if [ "$mode" = handover ]; then
        # Back to the first instance's count before any client (same fds: stdio, poller,
        # waker, signal pipe, listener, handover socket), within 10 s of the load's end.
        fds_back=false
        for ((i = 0; i < 1000; i++)); do
            if [ "$(fd_count "$current")" = "$baseline" ]; then fds_back=true; break; fi
            nap 0.01
        done
    fi
    local last_fds
    last_fds="$(fd_count "$current")"
    kill -TERM "$current"
    wait_exit "$(now_us)" "$current"
    local last_rc="$exit_rc"
    if [ "$mode" = handover ] && [ -e "$sock" ]; then
        echo "restart_bench: the last instance left $sock behind" >&2
        fail=1
    fi
    local extra
    extra="$(python3 - "$server" "$mode" "$done_restarts" "$bad_exit" "$late" "$fds_back" \
        "$baseline" "$last_fds" "$last_rc" "$run_ms" "${exits[*]:-}" "${downs[*]:-}" \
        "$load_before" "$(cut -d' ' -f1 /proc/loadavg)" <<'EOF'
import json, statistics, sys
(server, mode, done, bad, late, fds_back, baseline, last_fds, last_rc, run_ms,
 exits, downs, load_before, load_after) = sys.argv[1:]
exits = [float(x) for x in exits.split()]
downs = [float(x) for x in downs.split()]
def stats(xs):
    return [min(xs), statistics.median(xs), max(xs)] if xs else None
print(json.dumps({
    "server": server, "mode": mode, "restarts": int(done), "old_exit_not_0": int(bad),
    "old_exit_late": int(late), "old_exit_ms": stats(exits), "bind_gap_ms": stats(downs),
    "fds_back_to_baseline": json.loads(fds_back), "fd_baseline": int(baseline),
    "last_fds": int(last_fds), "last_exit": int(last_rc), "restart_loop_ms": int(run_ms),
    "loadavg_before": float(load_before), "loadavg_after": float(load_after),
}))
EOF
)"
    python3 -c 'import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); a.update(b); print(json.dumps(a))' \
        "$(cat "$work/load.json")" "$extra" >>"$jsonl"
    if [ "$mode" = handover ]; then
        local errors
        errors="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["errors"])' "$(cat "$work/load.json")")"
        if [ "$errors" != 0 ] || [ "$bad_exit" != 0 ] || [ "$late" != 0 ] \
            || [ "$fds_back" != true ] || [ "$done_restarts" != "$restarts" ] || [ "$last_rc" != 0 ]; then
            fail=1
        fi
    fi
    echo "restart_bench: $server $mode: $done_restarts restarts, loadgen exit $load_rc" >&2
}

for server in $servers; do
    for mode in $modes; do
        run "$mode"
    done
done

python3 - "$jsonl" "$machine" "$restarts" "$serve_ms" "$grace_ms" "$workers" "$pingpong" >"$table" <<'EOF'
import json, sys
path, machine, restarts, serve_ms, grace_ms, workers, pingpong = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
def ms(v):
    return "–" if v is None else " / ".join(f"{x:.0f}" if x >= 10 else f"{x:.1f}" for x in v)
print(f"Machine: {machine}\n")
print(f"{restarts} restarts per run, each instance serving {serve_ms} ms; churn: {workers} workers; "
      f"{pingpong} pingpong connections; --shutdown-timeout-ms {grace_ms}.\n")
print("| server | restart | done | churn conn/s | pingpong msg/s | refused | reset | short (empty) | corrupt | timeout | other | pingpong closed before a reply (retried) | old exit ms min / median / max | old exits ≠ 0 / after the grace | fds back |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
for r in rows:
    fds = {True: "yes", False: "**no**", None: "–"}[r.get("fds_back_to_baseline")]
    print(f"| {r['server']} | {r['mode']} | {r['restarts']} | {r['conns_per_s']:.0f} | {r['msgs_per_s']:.0f} "
          f"| {r['refused']} | {r['reset']} | {r['short']} ({r['short_empty']}) | {r['corrupt']} | {r['timeout']} "
          f"| {r['other']} | {r['closed_before_reply']} | {ms(r['old_exit_ms'])} | {r['old_exit_not_0']} / {r['old_exit_late']} | {fds} |")
print()
print("- 1-minute load average before / after each run (the machine's, this run's own load "
      "included): " + "; ".join(f"{r['server']} {r['mode']} {r['loadavg_before']:.2f} / "
                                f"{r['loadavg_after']:.2f}" for r in rows))
gaps = [r for r in rows if r.get("bind_gap_ms")]
if gaps:
    for r in gaps:
        print(f"- {r['server']} stop-start: from SIGTERM to the new instance listening, ms min / median / max: {ms(r['bind_gap_ms'])}")
EOF
cat "$table"
if [ "$fail" != 0 ]; then
    echo "restart_bench: FAILED: a handover run had client errors, an old instance that did not exit 0 in time, or fds not back to baseline (see above and $log)" >&2
fi
exit "$fail"
