# The install steps that need the install-time prefix, run by "cmake --install"
# and by CPack (which installs into a staging DESTDIR with the prefix /usr).
# CMakeLists.txt sets, before install(SCRIPT)ing this file:
#   BF_SOURCE_DIR, BF_BINARY_DIR   the trees
#   BF_BINDIR, BF_MANDIR, BF_DOCDIR GNUInstallDirs' relative directories
#   BF_UNITDIR                     BACKFILLD_SYSTEMD_UNITDIR, or empty
#   BF_UNITDIR_USR                 systemd's own unit directory (pkg-config), for
#                                  the prefix /usr
# Everything goes through file(INSTALL), which honours DESTDIR and records the
# file in install_manifest.txt.
#
#  - the two unit files, with ExecStart= naming the binary under this prefix
#    (the checked-in units say /usr/local/bin, the default prefix), into the
#    systemd unit directory: systemd's own for /usr (/lib/systemd/system on
#    Debian 12), PREFIX/lib/systemd/system otherwise (systemd also reads
#    /usr/local/lib/systemd/system), or BACKFILLD_SYSTEMD_UNITDIR;
#  - /etc/backfilld/backfilld.env from config/backfilld.env.example, only if
#    there is none: an operator's settings are never overwritten. (The units
#    name /etc/backfilld whatever the prefix, so this path does not follow it.)
#    In the Debian package the file is a conffile, which dpkg keeps as well;
#  - backfilld(8) and the Debian changelog, gzipped (-n: no name or time in the
#    header, so the package is reproducible);
#  - when stripping (cmake --install --strip, or CPack's CPACK_STRIP_FILES),
#    the binary also loses its .comment and .note sections, as dh_strip does;
#  - for the prefix /usr (the package) only, lintian's overrides: the tags the
#    package is known to raise, each with the reason it stays.

foreach(v BF_SOURCE_DIR BF_BINARY_DIR BF_BINDIR BF_MANDIR BF_DOCDIR BF_UNITDIR_USR)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "packaging/install.cmake: ${v} is not set (run it through cmake --install)")
  endif()
endforeach()

function(bf_abs out rel)
  if(IS_ABSOLUTE "${rel}")
    set(${out} "${rel}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${rel}" PARENT_SCOPE)
  endif()
endfunction()

bf_abs(bf_bindir "${BF_BINDIR}")
bf_abs(bf_mandir "${BF_MANDIR}")
bf_abs(bf_docdir "${BF_DOCDIR}")
if(BF_UNITDIR)
  bf_abs(bf_unitdir "${BF_UNITDIR}")
elseif(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(bf_unitdir "${BF_UNITDIR_USR}")
else()
  set(bf_unitdir "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
endif()

set(bf_gen "${BF_BINARY_DIR}/install-generated")
file(MAKE_DIRECTORY "${bf_gen}")

# --- systemd units -----------------------------------------------------------
set(bf_units "")
foreach(unit backfilld.service backfilld@.service)
  file(READ "${BF_SOURCE_DIR}/config/${unit}" text)
  set(from "\nExecStart=/usr/local/bin/backfilld ")
  string(FIND "${text}" "${from}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "config/${unit}: no line 'ExecStart=/usr/local/bin/backfilld ...' to point at ${bf_bindir}")
  endif()
  string(REPLACE "${from}" "\nExecStart=${bf_bindir}/backfilld " text "${text}")
  file(WRITE "${bf_gen}/${unit}" "${text}")
  list(APPEND bf_units "${bf_gen}/${unit}")
endforeach()
file(INSTALL DESTINATION "${bf_unitdir}" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES ${bf_units})

# --- /etc/backfilld/backfilld.env --------------------------------------------
set(bf_conf "/etc/backfilld/backfilld.env")
if(EXISTS "$ENV{DESTDIR}${bf_conf}")
  message(STATUS "Keeping: $ENV{DESTDIR}${bf_conf} (never overwritten; the new defaults are in "
                 "${bf_docdir}/examples/backfilld.env.example)")
else()
  file(INSTALL DESTINATION "/etc/backfilld" TYPE FILE RENAME backfilld.env
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
       FILES "${BF_SOURCE_DIR}/config/backfilld.env.example")
endif()

# --- gzipped documents ---------------------------------------------------------
function(bf_gzip src dst)
  execute_process(COMMAND gzip -9n -c "${src}" OUTPUT_FILE "${dst}" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "gzip ${src} failed: ${rc}")
  endif()
endfunction()
bf_gzip("${BF_SOURCE_DIR}/docs/backfilld.8" "${bf_gen}/backfilld.8.gz")
bf_gzip("${BF_SOURCE_DIR}/packaging/changelog" "${bf_gen}/changelog.gz")
file(INSTALL DESTINATION "${bf_mandir}/man8" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES "${bf_gen}/backfilld.8.gz")
file(INSTALL DESTINATION "${bf_docdir}" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES "${bf_gen}/changelog.gz")

if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  file(INSTALL DESTINATION "/usr/share/lintian/overrides" TYPE FILE RENAME backfilld
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
       FILES "${BF_SOURCE_DIR}/packaging/lintian-overrides")
endif()

if(CMAKE_INSTALL_DO_STRIP)
  execute_process(COMMAND strip --remove-section=.comment --remove-section=.note
                          "$ENV{DESTDIR}${bf_bindir}/backfilld" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "strip $ENV{DESTDIR}${bf_bindir}/backfilld failed: ${rc}")
  endif()
endif()
