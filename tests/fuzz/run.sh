#!/usr/bin/env bash
# Runs every libFuzzer target for SECONDS each, one after the other, and fails
# if any of them found a crash, a sanitizer report, a leak, a timeout or a
# broken invariant (every target still runs, so one report shows them all).
#
#   tests/fuzz/run.sh BUILD_DIR [SECONDS]     (make fuzz / make test-fuzz call this)
#
# Each target works on BUILD_DIR/fuzz/corpus/<target>: the seeds in
# tests/fuzz/corpus/<target> are copied in first, and what the fuzzer adds
# stays there for the next run, so the source tree is never written to. A
# crashing input is saved under BUILD_DIR/fuzz/artifacts/<target>/ and the
# tail of the fuzzer's log is printed. At the end, one line per target gives
# libFuzzer's final count: "#N DONE cov: ... exec/s: R".
set -euo pipefail

build=${1:?usage: run.sh BUILD_DIR [SECONDS]}
secs=${2:-60}
src=$(cd "$(dirname "$0")" && pwd)
# One target per fuzz_<name>.c, as CMakeLists.txt builds them; each has corpus/<name>/.
targets=()
for f in "$src"/fuzz_*.c; do
    t=${f##*/fuzz_}
    targets+=("${t%.c}")
done

# Largest input per target: a few bars pages' worth for JSON, past the 8 KiB
# line buffer for the config, past METRICS_MAX_HEAD + 1 for a request head.
max_len() {
    case $1 in
    bars_multi | bars_single) echo 16384 ;;
    error_message) echo 4096 ;;
    time) echo 64 ;;
    config) echo 16384 ;;
    metrics_request) echo 9000 ;;
    *) echo 4096 ;;
    esac
}
dict() {
    case $1 in
    bars_multi | bars_single | error_message) echo bars.dict ;;
    *) echo "$1.dict" ;;
    esac
}

summary=()
failed=0
for t in "${targets[@]}"; do
    exe=$build/fuzz_$t
    corpus=$build/fuzz/corpus/$t
    artifacts=$build/fuzz/artifacts/$t
    log=$build/fuzz/$t.log
    [ -x "$exe" ] || { echo "fuzz: $exe is missing; build the fuzz_targets target" >&2; exit 1; }
    mkdir -p "$corpus" "$artifacts"
    cp "$src/corpus/$t/"* "$corpus/"
    opts=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")"
          -print_final_stats=1 -artifact_prefix="$artifacts/")
    [ -f "$src/$(dict "$t")" ] && opts+=(-dict="$src/$(dict "$t")")
    echo "fuzz: $t for ${secs}s"
    # Leaks count as findings (libFuzzer's default); UBSan reports abort (-fno-sanitize-recover).
    if UBSAN_OPTIONS=print_stacktrace=1 "$exe" "${opts[@]}" "$corpus" >"$log" 2>&1; then
        done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
        summary+=("$t: ${done_line:-no DONE line}")
    else
        failed=1
        echo "fuzz: $t FAILED; log $log, inputs in $artifacts/" >&2
        tail -n 60 "$log" >&2
        summary+=("$t: FAILED")
    fi
done
printf 'fuzz: %s\n' "${summary[@]}"
exit $failed
