#!/usr/bin/env bash
# Builds the release examples the macro benchmark drives, then runs it:
#   finwait `echo` vs raw-mio `mio_echo` vs `tokio_echo`, driven by `loadgen`; then
#   `echo --reactors 2` vs `echo --reactors 1` (server CPU per operation, target <= 1.05x).
#
#   scripts/bench.sh                 # the whole macro benchmark (about two minutes)
#   FINWAIT_BENCH_REACTORS=only scripts/bench.sh   # only the --reactors comparison
#   FINWAIT_BENCH_REACTORS=0 scripts/bench.sh      # only the peer comparison
#   BENCH_MICRO=1 scripts/bench.sh   # also the criterion micro benches (hot_paths, timers)
#   FINWAIT_BENCH_BASELINE_ECHO=/tmp/fw-base/target/release/examples/echo scripts/bench.sh
#                                    # adds that build's echo as server finwait-baseline, with
#                                    # finwait/finwait-baseline per scenario (BENCHMARKS.md)
#
# Every FINWAIT_BENCH_* variable of bench/benches/macro_echo.rs passes through (for example
# FINWAIT_BENCH_SECONDS=10). The table goes to stdout and to $TARGET/macro_echo.md, the raw
# JSON lines to $TARGET/macro_echo.jsonl. Respects CARGO_TARGET_DIR.
set -euo pipefail
# cargo bench runs macro_echo from bench/: a relative path given here must not change meaning.
if [ -n "${FINWAIT_BENCH_BASELINE_ECHO:-}" ]; then
    FINWAIT_BENCH_BASELINE_ECHO="$(realpath -- "$FINWAIT_BENCH_BASELINE_ECHO")"
    export FINWAIT_BENCH_BASELINE_ECHO
fi
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"

# Syscalls per operation: perf (counted in the kernel) if it works, else strace.
if ! perf stat -x , -e raw_syscalls:sys_enter -- true >/dev/null 2>&1 \
    && ! command -v strace >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench.sh: installing strace to count syscalls" >&2
        apt-get install -y strace >/dev/null 2>&1 \
            || { apt-get update >/dev/null 2>&1 && apt-get install -y strace >/dev/null 2>&1; } \
            || echo "bench.sh: no strace: syscalls/op will not be measured" >&2
    fi
fi

# finwait's examples and the bench member's tokio_echo: one workspace, one target directory.
cargo build --release -p finwait -p finwait-bench \
    --example echo --example mio_echo --example loadgen --example tokio_echo

mkdir -p "$target"
# Absolute: cargo bench runs macro_echo from bench/, where a relative path has no target/
# (the lines were silently lost).
json="$(realpath -- "$target")/macro_echo.jsonl"
: > "$json"
FINWAIT_BENCH_JSON="$json" cargo bench -p finwait-bench --bench macro_echo | tee "$target/macro_echo.md"

if [ "${BENCH_MICRO:-0}" != 0 ]; then
    cargo bench -p finwait-bench --bench hot_paths --bench timers
fi
