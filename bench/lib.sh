# Shared by the benchmarks: the test harness (private Postgres, simulator,
# daemon helpers; tests/integration/lib.sh), a shorter log dump on failure,
# and a snapshot of the binaries.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export SRC_DIR=${SRC_DIR:-$(cd "$BENCH_DIR/.." && pwd)}
. "$SRC_DIR/tests/integration/lib.sh"

# lib.sh prints the last 80 lines of every log when the script fails; for a
# benchmark the table is the result, so keep the tail short.
dump_logs() {
    local f
    for f in "$T"/*.log "$T"/pg/postgres.log; do
        [ -s "$f" ] || continue
        echo "----- $(basename "$f") (last 5 lines; KEEP_TMP=1 keeps the whole file) -----"
        tail -n 5 "$f"
    done
}

# Snapshot the binaries: a rebuild in the source tree during the benchmark
# must not swap (or break) the daemon between rounds. Sets BF_BUILT.
snapshot_binaries() {
    mkdir -p "$T/bin"
    cp "$BF_BIN" "$T/bin/backfilld" && cp "$BF_SIM" "$T/bin/alpaca-sim"
    BF_BUILT=$(date -r "$BF_BIN" '+%F %T')
    BF_BIN=$T/bin/backfilld
    BF_SIM=$T/bin/alpaca-sim
}

# Ends a round that ran past its deadline: SIGTERM, up to 5 s, then SIGKILL.
terminate() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}
