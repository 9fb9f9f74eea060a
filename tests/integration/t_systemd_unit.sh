#!/usr/bin/env bash
# The shipped systemd unit and example settings file stay correct:
#  - systemd-analyze rates the unit's sandbox at an exposure of 2.0 or less
#    (offline, so no running systemd is needed) and "verify" finds no errors;
#  - the unit keeps Type=notify, a watchdog and the three LoadCredential= lines
#    the daemon reads from $CREDENTIALS_DIRECTORY;
#  - config/backfilld.env.example lists exactly the keys of
#    "backfilld --help-config", each with its current default, and has the
#    secrets only as commented-out lines.
# Every check runs even after a failure, so one run reports all problems.
set -euo pipefail

SRC_DIR=${SRC_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BF_BIN=${BF_BIN:-$SRC_DIR/build/backfilld}
UNIT=$SRC_DIR/config/backfilld.service
ENV_EXAMPLE=$SRC_DIR/config/backfilld.env.example
MAX_EXPOSURE=2.0
NAME=$(basename "$0" .sh)
T=$(mktemp -d "/tmp/bf-$NAME.XXXXXX")
trap 'rm -rf "$T"' EXIT

PASSED=0
FAILED=0
ok() {
    PASSED=$((PASSED + 1))
    printf '[%s] ok - %s\n' "$NAME" "$1"
}
not_ok() {
    FAILED=$((FAILED + 1))
    printf '[%s] FAIL - %s\n' "$NAME" "$1" >&2
}
# expect DESCRIPTION command...: passes when the command succeeds.
expect() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}

for f in "$UNIT" "$ENV_EXAMPLE" "$BF_BIN"; do
    if [ ! -e "$f" ]; then
        echo "[$NAME] missing $f" >&2
        exit 1
    fi
done
command -v systemd-analyze >/dev/null || {
    echo "[$NAME] systemd-analyze not found (Debian: apt-get install systemd)" >&2
    exit 1
}

# --- Sandbox score --------------------------------------------------------------------------
# The summary line reads "→ Overall exposure level for backfilld.service: 1.1 OK 🙂".
rc=0
systemd-analyze security --offline=yes --no-pager "$UNIT" >"$T/security.txt" 2>&1 || rc=$?
line=$(grep -m1 'Overall exposure level' "$T/security.txt" || true)
echo "[$NAME] $line"
score=$(printf '%s\n' "$line" | sed -nE 's/.*: *([0-9]+(\.[0-9]+)?).*/\1/p')
if [ "$rc" -ne 0 ] || [ -z "$score" ]; then
    not_ok "systemd-analyze security ran (exit $rc) and printed a score"
    cat "$T/security.txt" >&2
elif awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'; then
    ok "exposure level $score <= $MAX_EXPOSURE"
else
    not_ok "exposure level $score > $MAX_EXPOSURE; what is still exposed:"
    grep '✗' "$T/security.txt" >&2 || true
fi

# "verify" insists that ExecStart= exists, so check a copy (same file name, so
# the unit name matches) that starts the binary under test.
# It also asks man for the Documentation=man:backfilld(8) page: MANPATH finds docs/backfilld.8.
mkdir -p "$T/unit" "$T/man/man8"
sed "s|^ExecStart=/usr/local/bin/backfilld |ExecStart=$BF_BIN |" "$UNIT" >"$T/unit/backfilld.service"
cp "$SRC_DIR/docs/backfilld.8" "$T/man/man8/"
if MANPATH=$T/man systemd-analyze verify "$T/unit/backfilld.service" >"$T/verify.txt" 2>&1 &&
    ! grep -q . "$T/verify.txt"; then
    ok "systemd-analyze verify: no errors or warnings"
else
    not_ok "systemd-analyze verify:"
    cat "$T/verify.txt" >&2
fi

# --- Required unit settings -----------------------------------------------------------------
has() { grep -Eq "^$1\$" "$UNIT"; }
expect "Type=notify" has 'Type=notify'
expect "NotifyAccess=main" has 'NotifyAccess=main'
expect "WatchdogSec= is set" has 'WatchdogSec=[0-9]+[a-z]*'
for cred in alpaca_key_id alpaca_secret_key database_url; do
    expect "LoadCredential=$cred" has "LoadCredential=$cred:/[^ ]+/$cred"
done
expect "DynamicUser=yes" has 'DynamicUser=yes'

# --- backfilld.env.example against --help-config --------------------------------------------
# --help-config prints a header line, then "KEY  DEFAULT  RELOAD  MEANING" per key.
"$BF_BIN" --help-config >"$T/help.txt"
tail -n +2 "$T/help.txt" | awk 'NF { print $1 }' | sort >"$T/help_keys"
# Example keys: active "KEY=value" lines and commented-out "#KEY=value" lines.
sed -nE 's/^#?([A-Z][A-Z0-9_]*)=.*/\1/p' "$ENV_EXAMPLE" | sort >"$T/example_keys"

unknown=$(comm -23 "$T/example_keys" "$T/help_keys" | tr '\n' ' ')
if [ -z "$unknown" ]; then
    ok "every key in backfilld.env.example is in --help-config ($(wc -l <"$T/example_keys") keys)"
else
    not_ok "keys in backfilld.env.example unknown to --help-config: $unknown"
fi
missing=$(comm -13 "$T/example_keys" "$T/help_keys" | tr '\n' ' ')
if [ -z "$missing" ]; then
    ok "every --help-config key is in backfilld.env.example"
else
    not_ok "keys missing from backfilld.env.example: $missing"
fi
dups=$(uniq -d "$T/example_keys" | tr '\n' ' ')
if [ -z "$dups" ]; then ok "no key appears twice"; else not_ok "keys listed twice: $dups"; fi

# Each active line carries the default --help-config shows ("(empty)" = nothing).
wrong=""
while IFS= read -r entry; do
    key=${entry%%=*}
    val=${entry#*=}
    def=$(awk -v k="$key" '$1 == k { print $2 }' "$T/help.txt")
    [ "$def" = "(empty)" ] && def=""
    [ "$val" = "$def" ] || wrong+="$key=$val (default '$def') "
done < <(grep -E '^[A-Z][A-Z0-9_]*=' "$ENV_EXAMPLE")
if [ -z "$wrong" ]; then
    ok "active lines in backfilld.env.example show the defaults"
else
    not_ok "values differ from the defaults: $wrong"
fi

for secret in APCA_API_KEY_ID APCA_API_SECRET_KEY BACKFILLD_DATABASE_URL; do
    if grep -Eq "^#$secret=" "$ENV_EXAMPLE" && ! grep -Eq "^[[:space:]]*$secret=" "$ENV_EXAMPLE"; then
        ok "$secret is present only commented out"
    else
        not_ok "$secret must appear as a commented-out line only"
    fi
done

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
