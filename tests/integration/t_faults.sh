#!/usr/bin/env bash
# Faults the real API shows, all at once: 10% 5xx (JSON and HTML gateway
# pages), 5% malformed or truncated 200 bodies, short pages that still carry
# a token, and a trailing empty page. Small pages (limit 100) make every run
# walk several pages. The data must still end complete and exact.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start --fail-rate 0.10 --malformed-rate 0.05 --short-pages --trailing-empty --seed 7
bf migrate >/dev/null
SYMS="AAPL,AMZN,GOOGL,META,MSFT,NVDA,TSLA,JPM,V,XOM"
bf enqueue --symbols "$SYMS" --timeframe h1 --from 2024-01-01 --to 2024-06-30 >/dev/null
check "60 runs queued" "60" "$(sql "SELECT count(*) FROM job_runs")"

export BACKFILLD_PAGE_LIMIT=100 BACKFILLD_RATE_LIMIT=600000 BACKFILLD_RETRY_BASE_MS=5 \
    BACKFILLD_RETRY_MAX_MS=50 BACKFILLD_PAGE_RETRIES=8 BACKFILLD_RUN_RETRY_BASE_MS=50
daemon_start d1 --until-idle
daemon_wait "$DAEMON_PID" 240
check "daemon exits 0" "0" "$DAEMON_RC"
check "every run succeeded" "60" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"

load_expected h1 --symbols "$SYMS" --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-06-30)"
check_bars_exact

fivexx=$(sim_counter 'sum(v for k, v in c["by_status"].items() if k.startswith("5"))')
malformed=$(sim_counter 'c["by_status"].get("200_malformed", 0)')
log "simulator served $(sim_counter 'c["requests"]') requests: $fivexx 5xx, $malformed malformed"
check_cmd "5xx were injected" test "$fivexx" -gt 10
check_cmd "malformed bodies were injected" test "$malformed" -gt 5
retries=$(grep -c '"msg":"page retry"' "$T/d1.log" || true)
check_cmd "each fault was retried and logged ($retries page retries)" test "$retries" -ge $((fivexx + malformed))
# A malformed body is a page retry, or (when that page's retries were spent) a failed attempt.
# Single greps, or greps that read all their input: `grep | grep -q` under pipefail fails at
# random when grep -q exits early and the writer gets SIGPIPE.
grep -qE '"msg":"(page retry|run attempt failed, will retry)".*"error":"malformed response' "$T/d1.log" ||
    fail "no malformed response logged as the cause of a retry"
unnamed=$(grep '"msg":"page retry"' "$T/d1.log" | grep -vc '"job_id":[0-9]*,"symbol":"[A-Z]' || true)
check "every page retry line names the job and the symbol" "0" "$unnamed"
check "multi-page runs were walked" "1" "$(sql "SELECT (max(pages) > 3)::int FROM job_runs")"
finish
