#!/usr/bin/env bash
# Builds the Debian package: "make package" runs this, and so does
# tests/integration/t_package.sh.
#   packaging/build-deb.sh [BUILD_DIR]     (default build-pkg)
# A build directory of its own, configured for /usr with Debian's build flags
# (dpkg-buildflags, hardening=+all: stack protector, _FORTIFY_SOURCE, full
# RELRO and BIND_NOW) and compiling only the daemon; CPack makes the .deb with
# Depends: computed by dpkg-shlibdeps; then lintian --pedantic must report
# nothing but the tags explained in packaging/lintian-overrides.
# Prints the path of the .deb as its last line.
set -euo pipefail

SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-$SRC_DIR/build-pkg}
JOBS=${JOBS:-2}

export DEB_BUILD_MAINT_OPTIONS=hardening=+all
cflags="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
ldflags=$(dpkg-buildflags --get LDFLAGS)

# CMAKE_SKIP_INSTALL_ALL_DEPENDENCY: CPack's install step then builds nothing,
# so only the daemon is compiled (not the simulator or the tests).
mkdir -p "$BUILD"
echo '*' >"$BUILD/.gitignore" # build-pkg/ sits in the source tree
log=$BUILD/build-deb.log
: >"$log"
step() {
    if ! "$@" >>"$log" 2>&1; then
        echo "build-deb: failed: $*" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}
step cmake -S "$SRC_DIR" -B "$BUILD" -DCMAKE_BUILD_TYPE=None -DCMAKE_INSTALL_PREFIX=/usr \
    -DCMAKE_C_FLAGS="$cflags" -DCMAKE_EXE_LINKER_FLAGS="$ldflags" \
    -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON
step cmake --build "$BUILD" -j"$JOBS" --target backfilld
rm -f "$BUILD"/backfilld_*.deb
step cpack --config "$BUILD/CPackConfig.cmake" -G DEB -B "$BUILD"
deb=$(ls "$BUILD"/backfilld_*.deb)

# lintian prints nothing at all when the package is clean apart from its
# overrides; "running with root privileges" is its remark about root, not a tag.
out=$(lintian --pedantic --display-info --display-experimental "$deb" 2>&1 |
    grep -v '^running with root privileges is not recommended!$' || true)
if [ -n "$out" ]; then
    echo "lintian found tags that packaging/lintian-overrides does not explain:" >&2
    printf '%s\n' "$out" >&2
    exit 1
fi
echo "$deb"
