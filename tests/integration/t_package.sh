#!/usr/bin/env bash
# The Debian package and the install rules:
#  - packaging/build-deb.sh (what "make package" runs) builds the .deb, and
#    lintian --pedantic finds nothing but the overrides it ships, each used;
#  - its control data: name and version (= backfilld --version and the
#    changelog), Depends: computed from the binary's shared libraries
#    (libc6, libcurl4, libpq5, libuv1, libcjson1, with versions), the conffile
#    /etc/backfilld/backfilld.env, and maintainer scripts that never start,
#    restart or enable anything (run for every action with stub systemctl and
#    deb-systemd-invoke, in a mount namespace where systemd looks like PID 1);
#  - "dpkg --root" into a scratch Debian 12 root (usrmerge links; the host's
#    records of the libraries, so dpkg checks Depends: against real versions)
#    installs every file where it belongs; the installed units pass
#    "systemd-analyze verify" (man page found) and rate 2.0 or less in
#    "systemd-analyze security"; the installed binary runs --help, --version,
#    and check-config with the installed settings file against a database;
#  - an edited conffile survives reinstalling; removal keeps it, purge removes it;
#  - "cmake --install" honours DESTDIR and --prefix (ExecStart= follows the
#    prefix) and never overwrites an existing /etc/backfilld/backfilld.env;
#  - the man page renders without warnings and names every --help-config key.
set -euo pipefail # also if lib.sh cannot be read: nothing may run with $T unset
. "$(dirname "$0")/lib.sh"

MAX_EXPOSURE=2.0
for tool in dpkg-deb dpkg-shlibdeps lintian systemd-analyze cpack unshare; do
    command -v "$tool" >/dev/null || fail "$tool not found (tools/deps.sh installs it)"
done

# --- build ---------------------------------------------------------------------------------
B=$T/build
rc=0
bash "$SRC_DIR/packaging/build-deb.sh" "$B" >"$T/build-deb.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || cat "$T/build-deb.out" >&2
check "build-deb.sh (make package) builds a lintian-clean .deb" "0" "$rc"
DEB=$(tail -n 1 "$T/build-deb.out")
check_cmd "the .deb exists: $(basename "$DEB")" test -f "$DEB"
VERSION=$("$B/backfilld" --version | awk '{ print $2 }')
check "the file is named after the version" "backfilld_${VERSION}_amd64.deb" "$(basename "$DEB")"

lintian --pedantic --display-info --display-experimental --show-overrides "$DEB" >"$T/lintian.txt" 2>&1 || true
grep -v '^running with root privileges' "$T/lintian.txt" | grep -E '^[EWIPXO]:' >"$T/tags.txt" || true
log "lintian: $(tr '\n' ';' <"$T/tags.txt")"
check "lintian: no tag but the overridden ones" "" "$(grep -v '^O:' "$T/tags.txt" || true)"
overrides=$(grep -Ev '^(#|$)' "$SRC_DIR/packaging/lintian-overrides" | sed 's/^backfilld: //' | sort)
check "every override in packaging/lintian-overrides is used" "$overrides" \
    "$(sed -n 's/^O: backfilld: //p' "$T/tags.txt" | sort)"

# --- control data ----------------------------------------------------------------------------
field() { dpkg-deb -f "$DEB" "$1"; }
check "Package:" "backfilld" "$(field Package)"
check "Version: is backfilld --version" "$VERSION" "$(field Version)"
check "the changelog's latest entry is this version" "$VERSION" \
    "$(sed -nE '1s/^backfilld \(([^)]*)\).*/\1/p' "$SRC_DIR/packaging/changelog")"
DEPENDS=$(field Depends)
log "Depends: $DEPENDS"
for lib in libc6 libcurl4 libpq5 libuv1 libcjson1; do
    check_cmd "Depends: has $lib with a version" grep -qE "(^|, )$lib \(>= [^)]+\)" <<<"$DEPENDS"
done
# Every library the binary links (NEEDED), as the loader finds it here, comes
# from a package that Depends: names.
# owner PATH: the package that ships PATH, which dpkg may know under /usr or
# not (usrmerge: /lib is /usr/lib here).
owner() {
    local p
    for p in "$1" "/usr$1" "${1#/usr}"; do
        dpkg -S "$p" 2>/dev/null | head -1 | cut -d: -f1 && return 0
    done
    return 0
}
for so in $(objdump -p "$B/backfilld" | awk '$1 == "NEEDED" { print $2 }'); do
    path=$(ldd "$B/backfilld" | awk -v so="$so" '$1 == so { print $3 }')
    pkg=$(owner "$path")
    check_cmd "$so ($path, from ${pkg:-?}) is in Depends:" grep -qE "(^|, )${pkg:-none}( |,|$)" <<<"$DEPENDS"
done
mkdir -p "$T/control"
dpkg-deb -e "$DEB" "$T/control"
check "conffiles" "/etc/backfilld/backfilld.env" "$(cat "$T/control/conffiles")"
check "maintainer scripts" "conffiles control md5sums postinst postrm prerm" "$(ls "$T/control" | tr '\n' ' ' | sed 's/ $//')"

# The maintainer scripts, run for every action dpkg may run them with, where
# they would act: not under DPKG_ROOT, and with /run/systemd/system present
# (a tmpfs over /run/systemd, in a private mount namespace). Stubs record what
# they would run.
mkdir -p "$T/stubs"
for cmd in systemctl deb-systemd-invoke deb-systemd-helper invoke-rc.d service; do
    printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$cmd" "$T/calls.txt" >"$T/stubs/$cmd"
    chmod 755 "$T/stubs/$cmd"
done
: >"$T/calls.txt"
cat >"$T/scripts.sh" <<EOF
set -e
mount -t tmpfs none /run/systemd
mkdir /run/systemd/system
export PATH="$T/stubs:\$PATH"
unset DPKG_ROOT
c=$T/control
for run in "postinst configure" "postinst configure 0.0.9" "prerm upgrade 9.9" \
    "postrm upgrade 9.9" "prerm remove" "postrm remove" "postrm purge"; do
    echo "## \$run" >>"$T/calls.txt"
    set -- \$run
    s=\$1
    shift
    sh "\$c/\$s" "\$@" 2>>"$T/scripts.err"
done
EOF
rc=0
unshare --mount --propagation private sh "$T/scripts.sh" || rc=$?
check "every maintainer script exits 0 for every action" "0" "$rc"
want='## postinst configure
systemctl --system daemon-reload
## postinst configure 0.0.9
systemctl --system daemon-reload
## prerm upgrade 9.9
## postrm upgrade 9.9
## prerm remove
deb-systemd-invoke stop backfilld.service backfilld@*.service
## postrm remove
systemctl --system daemon-reload
## postrm purge
systemctl --system daemon-reload'
check "the scripts only reload systemd, and stop the units on removal" "$want" "$(cat "$T/calls.txt")"
check_cmd "the host's /run/systemd is untouched (no system/ there)" test ! -e /run/systemd/system

# --- dpkg --root into a scratch root ---------------------------------------------------------
R=$T/root
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/lib/dpkg/triggers" \
    "$R/usr/bin" "$R/usr/lib" "$R/usr/sbin"
ln -s usr/bin "$R/bin"
ln -s usr/lib "$R/lib"
ln -s usr/sbin "$R/sbin"
: >"$R/var/lib/dpkg/status"
# The host's records of the packages Depends: names (not their files): dpkg
# then checks the version constraints against what Debian 12 really has.
for pkg in $(sed -E 's/ *\([^)]*\)//g; s/,/ /g' <<<"$DEPENDS"); do
    dpkg-query -s "$pkg" >>"$R/var/lib/dpkg/status"
    echo >>"$R/var/lib/dpkg/status"
    touch "$R/var/lib/dpkg/info/$pkg.list" "$R/var/lib/dpkg/info/$pkg:amd64.list"
done
dpkg_root() { dpkg --root="$R" --force-script-chrootless --log="$T/dpkg.log" "$@"; }
rc=0
dpkg_root -i "$DEB" >"$T/dpkg.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || cat "$T/dpkg.out" >&2
check "dpkg --root -i: Depends: satisfied by Debian 12's versions, installed" "0" "$rc"
check "dpkg status" "install ok installed $VERSION" \
    "$(dpkg-query --admindir="$R/var/lib/dpkg" -W -f='${Status} ${Version}' backfilld)"
check "dpkg knows the conffile" "/etc/backfilld/backfilld.env" \
    "$(dpkg-query --admindir="$R/var/lib/dpkg" -W -f='${Conffiles}' backfilld | awk '{ print $1 }')"

# mode PATH: octal mode of the installed file.
mode() { stat -c '%a' "$R$1"; }
check "/usr/bin/backfilld, 755" "755" "$(mode /usr/bin/backfilld)"
check_cmd "the installed binary is stripped" sh -c "file -L '$R/usr/bin/backfilld' | grep -q ', stripped'"
for f in /lib/systemd/system/backfilld.service /lib/systemd/system/backfilld@.service \
    /etc/backfilld/backfilld.env /usr/share/man/man8/backfilld.8.gz \
    /usr/share/doc/backfilld/README.md /usr/share/doc/backfilld/copyright \
    /usr/share/doc/backfilld/changelog.gz /usr/share/doc/backfilld/examples/backfilld.env.example \
    /usr/share/doc/backfilld/examples/grafana/backfilld.json \
    /usr/share/doc/backfilld/examples/prometheus/backfilld-rules.yml \
    /usr/share/lintian/overrides/backfilld; do
    check "$f, 644" "644" "$(mode "$f" 2>/dev/null || echo missing)"
done
check "backfilld.env is the example settings file" "" \
    "$(cmp "$R/etc/backfilld/backfilld.env" "$SRC_DIR/config/backfilld.env.example" 2>&1)"
check "nothing else in /etc" "backfilld.env" "$(cd "$R/etc" && find . -type f | sed 's|^./backfilld/||')"
for u in backfilld.service backfilld@.service; do
    check "$u: ExecStart= names /usr/bin/backfilld" "/usr/bin/backfilld" \
        "$(sed -nE 's/^ExecStart=([^ ]+) .*/\1/p' "$R/lib/systemd/system/$u")"
    check "$u: otherwise the unit in config/" "" \
        "$(diff <(grep -v '^ExecStart=' "$R/lib/systemd/system/$u") <(grep -v '^ExecStart=' "$SRC_DIR/config/$u"))"
done
check "no unit is enabled (no wants/ links anywhere)" "" "$(find "$R" -name '*.wants' -o -name '*.requires')"

# systemd-analyze on the installed units, in the root: what else a Debian 12
# system with systemd has there (systemd's targets, /bin/kill for ExecReload=).
cp -n /lib/systemd/system/*.target "$R/lib/systemd/system/"
cp /bin/kill "$R/bin/kill"
rc=0
MANPATH=$R/usr/share/man systemd-analyze verify --root="$R" backfilld.service backfilld@a.service \
    >"$T/verify.txt" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || cat "$T/verify.txt" >&2
check "systemd-analyze verify on the installed units: exit code" "0" "$rc"
check "systemd-analyze verify on the installed units: no findings" "" "$(cat "$T/verify.txt")"
for u in backfilld.service backfilld@a.service; do
    line=$(systemd-analyze security --offline=yes --root="$R" --no-pager "$u" 2>&1 |
        grep -m1 'Overall exposure level' || true)
    log "$line"
    score=$(sed -nE 's/.*: *([0-9]+(\.[0-9]+)?).*/\1/p' <<<"$line")
    check_cmd "installed $u exposure ${score:-?} <= $MAX_EXPOSURE" \
        awk -v s="${score:-99}" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'
done

# --- the installed binary ------------------------------------------------------------------------
BIN=$R/usr/bin/backfilld
rc=0
"$BIN" --help >"$T/help.txt" 2>&1 || rc=$?
check "installed backfilld --help exits 0" "0" "$rc"
check_cmd "--help prints the usage" grep -q '^usage: backfilld \[--config FILE\] COMMAND' "$T/help.txt"
check "installed backfilld --version" "backfilld $VERSION" "$("$BIN" --version)"

pg_start
CREDS=$T/credentials
mkdir -p "$CREDS"
printf '%s' "$BACKFILLD_DATABASE_URL" >"$CREDS/database_url"
printf 'test-key' >"$CREDS/alpaca_key_id"
printf 'test-secret' >"$CREDS/alpaca_secret_key"
# As the unit runs it: a clean environment, the installed settings file, the
# secret as a credential.
installed() {
    env -i PATH=/usr/bin:/bin CREDENTIALS_DIRECTORY="$CREDS" \
        "$BIN" --config "$R/etc/backfilld/backfilld.env" "$@"
}
rc=0
installed check-config >"$T/cc1.out" 2>&1 || rc=$?
check "check-config before migrate: 78" "78" "$rc"
check_cmd "... because the schema needs migrating: $(grep -m1 migrate "$T/cc1.out" | cut -c1-160)" \
    grep -q "run 'backfilld migrate'" "$T/cc1.out"
rc=0
installed migrate >"$T/migrate.out" 2>&1 || rc=$?
check "installed backfilld migrate" "0" "$rc"
rc=0
installed check-config >"$T/cc2.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || cat "$T/cc2.out" >&2
check "installed check-config with the installed settings file" "0" "$rc"

# --- the man page ----------------------------------------------------------------------------
warn=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$R/usr/share/man/man8/backfilld.8.gz" 2>&1 >/dev/null || true)
check "man backfilld renders without warnings" "" "$warn"
LC_ALL=C.UTF-8 MANWIDTH=200 man -l "$R/usr/share/man/man8/backfilld.8.gz" 2>/dev/null >"$T/man.txt"
missing=""
for key in $("$BIN" --help-config | tail -n +2 | awk 'NF { print $1 }'); do
    grep -q -- "$key" "$T/man.txt" || missing+="$key "
done
check "the man page names every --help-config key" "" "$missing"

# --- conffile handling -----------------------------------------------------------------------
echo "BACKFILLD_LOG_LEVEL=debug # edited by the operator" >>"$R/etc/backfilld/backfilld.env"
rc=0
dpkg_root -i "$DEB" >"$T/dpkg2.out" 2>&1 </dev/null || rc=$?
check "reinstalling succeeds without a prompt" "0" "$rc"
check_cmd "reinstalling kept the operator's edit" grep -q 'edited by the operator' "$R/etc/backfilld/backfilld.env"
rc=0
dpkg_root -r backfilld >"$T/dpkg3.out" 2>&1 || rc=$?
check "dpkg -r" "0" "$rc"
check_cmd "removal took the binary" test ! -e "$R/usr/bin/backfilld"
check_cmd "removal took the units" test ! -e "$R/lib/systemd/system/backfilld.service"
check_cmd "removal kept the edited conffile" grep -q 'edited by the operator' "$R/etc/backfilld/backfilld.env"
rc=0
dpkg_root --purge backfilld >"$T/dpkg4.out" 2>&1 || rc=$?
check "dpkg --purge" "0" "$rc"
check_cmd "purge removed the conffile" test ! -e "$R/etc/backfilld/backfilld.env"

# --- cmake --install: DESTDIR and the prefix -----------------------------------------------
D=$T/destdir
rc=0
DESTDIR=$D cmake --install "$B" --prefix /opt/bf >"$T/install1.out" 2>&1 || rc=$?
check "cmake --install --prefix /opt/bf with DESTDIR" "0" "$rc"
check_cmd "the binary in PREFIX/bin" test -x "$D/opt/bf/bin/backfilld"
check "ExecStart= follows the prefix" "/opt/bf/bin/backfilld" \
    "$(sed -nE 's/^ExecStart=([^ ]+) .*/\1/p' "$D/opt/bf/lib/systemd/system/backfilld@.service")"
check_cmd "the man page in PREFIX/share/man/man8" test -f "$D/opt/bf/share/man/man8/backfilld.8.gz"
check_cmd "the settings file in /etc/backfilld, under DESTDIR" test -f "$D/etc/backfilld/backfilld.env"
# install_manifest.txt lists the paths without DESTDIR: each must be under $D.
absent=""
while IFS= read -r f; do
    [ -e "$D$f" ] || absent+="$f "
done <"$B/install_manifest.txt"
check "every file of the manifest is under DESTDIR ($(wc -l <"$B/install_manifest.txt") files)" "" "$absent"
check_cmd "nothing was installed into the real /opt/bf" test ! -e /opt/bf
echo "# mine" >>"$D/etc/backfilld/backfilld.env"
DESTDIR=$D cmake --install "$B" --prefix /opt/bf >"$T/install2.out" 2>&1 || fail "second cmake --install"
check_cmd "a second install says it keeps the settings file" grep -q "Keeping: $D/etc/backfilld/backfilld.env" "$T/install2.out"
check "a second install leaves it as it was" "# mine" "$(tail -n 1 "$D/etc/backfilld/backfilld.env")"
finish
