/*
 * sdnotify: systemd's notify protocol, written in-tree (no libsystemd).
 * One datagram per message to $NOTIFY_SOCKET ("/path" or "@abstract").
 * Every call is a no-op returning 0 when not run by systemd.
 */
#ifndef BACKFILLD_SDNOTIFY_H
#define BACKFILLD_SDNOTIFY_H

#include <stdint.h>

/* Sends msg ("READY=1\nSTATUS=…"). Returns 1 sent, 0 not under systemd, <0 -errno. */
int sdnotify_send(const char *msg);

/* The watchdog interval in µs if systemd asked for pings (WATCHDOG_USEC for this pid), else 0. */
uint64_t sdnotify_watchdog_usec(void);

#endif
