#!/usr/bin/env bash
# The house rules that a machine can check (STYLE.md): every C file is
# formatted as .clang-format says, and none calls a banned function
# (sprintf strcpy strcat strtok atoi gets: unbounded or without error
# reporting). Run by `make test`; `make format` rewrites the files in place.
#
# Usage: tools/check-style.sh [--fix]
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t files < <(git ls-files --cached --others --exclude-standard '*.c' '*.h' 2>/dev/null ||
    find src include tools tests -name '*.[ch]')
[ ${#files[@]} -gt 0 ] || { echo "check-style: no C files found" >&2; exit 1; }
CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
command -v "$CLANG_FORMAT" >/dev/null || { echo "check-style: $CLANG_FORMAT is not installed (tools/deps.sh)" >&2; exit 1; }

if [ "${1:-}" = "--fix" ]; then
    "$CLANG_FORMAT" -i "${files[@]}"
    echo "check-style: formatted ${#files[@]} files"
    exit 0
fi

failed=0
# Formatting: --dry-run --Werror names each file and line that differs.
if ! "$CLANG_FORMAT" --dry-run --Werror "${files[@]}" 2>"${TMPDIR:-/tmp}/check-style.$$"; then
    grep -E '^[^ ].*: (warning|error):' "${TMPDIR:-/tmp}/check-style.$$" | cut -d: -f1 | sort | uniq -c |
        awk '{ printf "check-style: %s: %d place(s) not formatted as .clang-format says\n", $2, $1 }'
    echo "check-style: run 'make format' (tools/check-style.sh --fix) and commit the result"
    failed=1
fi
rm -f "${TMPDIR:-/tmp}/check-style.$$"

# Banned functions, as calls (snprintf and strtol are fine: the word must start there).
banned='(^|[^A-Za-z0-9_])(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|gets)[[:space:]]*\('
if grep -nE "$banned" "${files[@]}" >"${TMPDIR:-/tmp}/check-banned.$$"; then
    sed 's/^/check-style: banned function: /' "${TMPDIR:-/tmp}/check-banned.$$"
    failed=1
fi
rm -f "${TMPDIR:-/tmp}/check-banned.$$"

if [ "$failed" -ne 0 ]; then
    echo "check-style: FAILED"
    exit 1
fi
echo "check-style: ${#files[@]} files formatted, no banned function"
