/*
 * sdnotify: see sdnotify.h and sd_notify(3). Abstract socket names are
 * length-delimited, so the exact address length is passed, not sizeof.
 */
#include "sdnotify.h"

#include "util.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int sdnotify_send(const char *msg)
{
    const char *p = getenv("NOTIFY_SOCKET");
    if (!p || !*p)
        return 0;
    if (p[0] != '/' && p[0] != '@')
        return -EAFNOSUPPORT;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t n = strlen(p);
    if (n >= sizeof sa.sun_path)
        return -E2BIG;
    memcpy(sa.sun_path, p, n);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (p[0] == '/'));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    ssize_t w = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
    int e = errno;
    close(fd);
    return w < 0 ? -e : 1;
}

uint64_t sdnotify_watchdog_usec(void)
{
    const char *us = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    int64_t v, p;
    if (!us || !parse_i64(us, 1, INT64_MAX, &v))
        return 0;
    if (pid && (!parse_i64(pid, 1, INT64_MAX, &p) || p != (int64_t)getpid()))
        return 0;
    return (uint64_t)v;
}
