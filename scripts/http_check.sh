#!/usr/bin/env bash
# Smoke-checks the `http` example with real clients: curl (HTTP/1.1 and HTTP/1.0) and a
# short wrk load run. Installs curl and wrk with apt-get if they are missing.
#
#   scripts/http_check.sh            (CARGO_TARGET_DIR is honoured)
#
# Exits non-zero on any failure: wrong status or body, any wrk socket error or non-2xx
# response, or a server that does not start. The server is killed by its PID on exit.
# No `set -e`: every check reports and the script fails at the end; fatal steps exit explicitly.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if ((${#need[@]})); then
    echo "== installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    apt_log="$(mktemp)"
    $SUDO apt-get update -qq >"$apt_log" 2>&1 || { cat "$apt_log"; echo "FAIL: apt-get update"; exit 1; }
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >"$apt_log" 2>&1 \
        || { cat "$apt_log"; echo "FAIL: apt-get install ${need[*]}"; exit 1; }
    rm -f "$apt_log"
fi

echo "== building the http example (release)"
cargo build --release --example http --quiet || { echo "FAIL: build"; exit 1; }

workdir="$(mktemp -d)" || exit 1
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

"$TARGET_DIR/release/examples/http" --listen 127.0.0.1:0 >"$workdir/stdout" 2>"$workdir/stderr" &
server_pid=$!

addr=""
for _ in $(seq 1 100); do
    if line="$(head -n1 "$workdir/stdout" 2>/dev/null)" && [[ "$line" == "listening on "* ]]; then
        addr="${line#listening on }"
        break
    fi
    kill -0 "$server_pid" 2>/dev/null || { echo "FAIL: server exited"; cat "$workdir/stderr"; exit 1; }
    sleep 0.05
done
[ -n "$addr" ] || { echo "FAIL: no 'listening on' line within 5 s"; exit 1; }
echo "== server pid $server_pid listening on $addr"

fail=0
check() { # description, condition-status
    if [ "$2" -eq 0 ]; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi
}

echo "== curl -sS -i http://$addr/"
out="$(curl -sS -i --max-time 5 "http://$addr/")"
printf '%s\n' "$out"
head -n1 <<<"$out" | grep -q '^HTTP/1.1 200 '; check "curl: status 200" $?
[ "$(curl -sS --max-time 5 "http://$addr/")" = "Hello, World!" ]; check "curl: body is Hello, World!" $?

echo "== curl -sS -i --http1.0 http://$addr/"
out="$(curl -sS -i --http1.0 --max-time 5 "http://$addr/")"
printf '%s\n' "$out"
head -n1 <<<"$out" | grep -q ' 200 '; check "curl --http1.0: status 200" $?
grep -qi '^Connection: close' <<<"$out"; check "curl --http1.0: Connection: close" $?
tail -n1 <<<"$out" | grep -qx 'Hello, World!'; check "curl --http1.0: body" $?

echo "== wrk -t2 -c64 -d3s http://$addr/"
wrk_out="$(wrk -t2 -c64 -d3s "http://$addr/")" || { echo "FAIL: wrk exited non-zero"; fail=1; }
printf '%s\n' "$wrk_out"
if grep -q 'Socket errors' <<<"$wrk_out"; then
    echo "FAIL: wrk reported socket errors"; fail=1
else
    echo "ok: wrk: no socket errors"
fi
if grep -q 'Non-2xx or 3xx responses' <<<"$wrk_out"; then
    echo "FAIL: wrk reported non-2xx/3xx responses"; fail=1
else
    echo "ok: wrk: every response 2xx"
fi
requests="$(awk '/requests in/ {print $1}' <<<"$wrk_out")"
[ "${requests:-0}" -gt 0 ]; check "wrk: $requests requests completed" $?

kill -0 "$server_pid" 2>/dev/null; check "server still running after the load" $?
if [ -s "$workdir/stderr" ]; then
    echo "== server stderr"
    cat "$workdir/stderr"
fi
[ "$fail" -eq 0 ] && echo "== all checks passed"
exit "$fail"
