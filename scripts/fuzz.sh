#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30), one after the other.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Each target starts from a temporary copy of its seed corpus (tests/fuzz_corpus/TARGET), so new
# inputs found during the run do not flood the repository; crashes land in
# fuzz/artifacts/TARGET/ (git-ignored). Prints exec/s and coverage per target and exits
# non-zero if any target crashed or failed to run. Replay a crash on stable with
#   cp fuzz/artifacts/TARGET/crash-* tests/fuzz_corpus/TARGET/ && cargo test --test fuzz_replays
# (or `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...` from fuzz/).
set -euo pipefail

seconds="${1:-30}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz_dir="$root/fuzz"
all_targets=(state_machine write_queue timers ids reactor http_request)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=("${all_targets[@]}")
fi

if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: the nightly toolchain is required: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz
fi

cd "$fuzz_dir"
echo "== building fuzz targets"
cargo +nightly fuzz build >/dev/null

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
summary=()
for target in "${targets[@]}"; do
    corpus="$work/corpus-$target"
    mkdir -p "$corpus" "$fuzz_dir/artifacts/$target"
    cp "$root/tests/fuzz_corpus/$target/"* "$corpus/" 2>/dev/null || true
    # The HTTP parser's size rules start at 8 KiB: allow inputs past it.
    extra=()
    if [ "$target" = http_request ]; then
        extra=(-max_len=20000)
    fi
    log="$work/$target.log"
    echo "== $target (${seconds}s)"
    status=0
    cargo +nightly fuzz run "$target" "$corpus" -- \
        -max_total_time="$seconds" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1 || status=$?
    # The last status line libFuzzer printed, e.g. "#12345 DONE cov: 812 ft: 2301 corp: ...".
    last="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
    execs="$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}' || true)"
    cov="$(sed -nE 's/.* cov: ([0-9]+) .*/\1/p' <<<"$last")"
    ft="$(sed -nE 's/.* ft: ([0-9]+) .*/\1/p' <<<"$last")"
    corp="$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$last")"
    line="$(printf '%-14s exec/s %-8s cov %-6s ft %-6s corpus %s' \
        "$target" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")"
    echo "   $last"
    if [ "$status" -ne 0 ] || grep -qE '^==[0-9]+==.*(ERROR|deadly signal)|panicked at' "$log"; then
        echo "   FAILED (exit $status); last lines of the log:"
        # The panic message follows its "panicked at" line.
        grep -E -A 8 'panicked at' "$log" | head -n 20 | sed 's/^/   | /'
        grep -E 'ERROR|SUMMARY|Test unit written|artifact_prefix' "$log" | head -n 10 | sed 's/^/   | /'
        failed+=("$target")
        line="$line  CRASH"
    fi
    summary+=("$line")
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
