#!/usr/bin/env bash
# A quick smoke of loadgen against the echo example (not a benchmark): every scenario runs
# briefly, must report zero errors, and the server's fds must return to baseline.
#
#   scripts/loadgen_smoke.sh [PROFILE]     PROFILE: debug (default) or release
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
profile="${1:-debug}"
flag=()
[ "$profile" = release ] && flag=(--release)
cd "$root"
cargo build "${flag[@]}" -p finwait --example echo --example loadgen
bin="$root/target/$profile/examples"
[ -n "${CARGO_TARGET_DIR:-}" ] && bin="$CARGO_TARGET_DIR/$profile/examples"

out="$(mktemp)"
"$bin/echo" --listen 127.0.0.1:0 >"$out" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do grep -q '^listening on ' "$out" && break; sleep 0.05; done
addr="$(sed -n 's/^listening on //p' "$out")"
[ -n "$addr" ] || { echo "echo did not start" >&2; exit 1; }

fail=0
run() {
    local line
    if ! line="$("$bin/loadgen" --connect "$addr" --server-pid "$pid" "$@")"; then
        echo "FAIL: loadgen $*: $line" >&2
        fail=1
        return
    fi
    echo "$line"
    case "$line" in
        *'"errors":0'*) ;;
        *) echo "FAIL: errors in: $line" >&2; fail=1 ;;
    esac
    case "$line" in
        *'"fds_back_to_baseline":false'*) echo "FAIL: leaked fds: $line" >&2; fail=1 ;;
    esac
}
run --scenario bulk --connections 2 --bytes 16777216
run --scenario pingpong --connections 8 --duration-s 1
run --scenario churn --connections 8 --duration-s 1
run --scenario idle --connections 500
kill -TERM "$pid"
wait "$pid" || { echo "FAIL: echo exited with $?" >&2; fail=1; }
trap 'rm -f "$out"' EXIT
[ "$fail" = 0 ] && echo "loadgen smoke: ok"
exit "$fail"
