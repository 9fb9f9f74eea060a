/*
 * cli_view: the drawing under `status --watch` and `enqueue --wait`: a
 * frame redrawn in place on a terminal (ANSI cursor moves only), one plain
 * line per interval elsewhere, signals that end a view cleanly, the pacing
 * of polls, and the numbers, durations and bars they print.
 */
#include "cli_int.h"

#include "bars.h"
#include "coalesce.h"
#include "log.h"
#include "migrations.h"
#include "timeframe.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* --- terminal views: status --watch and enqueue --wait ----------------------- */

/*
 * Both views poll the database once per interval and draw what they read. On
 * a terminal the frame is redrawn in place with ANSI cursor-up and
 * clear-line only (so any SSH terminal shows it), every line cut to the
 * terminal's width so nothing wraps, and the frame to its height. When
 * stdout is not a terminal, one plain line is printed per interval instead.
 * SIGINT, SIGTERM and SIGHUP end a view at its next check (a second one at
 * once); SIGWINCH redraws.
 */
volatile sig_atomic_t view_signal; /* the signal that asked the view to stop, or 0 */
static volatile sig_atomic_t view_resized;
static volatile sig_atomic_t view_cursor_hidden;

static void view_on_signal(int sig)
{
    if (sig == SIGWINCH) {
        view_resized = 1;
        return;
    }
    if (view_signal) {
        /* The second signal: out at once, leaving the terminal as it was. */
        if (view_cursor_hidden) {
            ssize_t n = write(STDOUT_FILENO, "\033[?25h\n", 7);
            (void)n;
        }
        _exit(128 + sig);
    }
    view_signal = sig;
}

static const int view_signals[VIEW_NSIGNALS] = {SIGINT, SIGTERM, SIGHUP, SIGWINCH};

void view_begin(struct view *v)
{
    memset(v, 0, sizeof *v);
    /* A "dumb" terminal cannot move the cursor: it gets the plain lines. */
    const char *term = getenv("TERM");
    v->tty = isatty(STDOUT_FILENO) == 1 && !(term && strcmp(term, "dumb") == 0);
    view_signal = 0;
    view_resized = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = view_on_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: a signal cuts the wait between polls short. */
    for (size_t i = 0; i < ARRAY_SIZE(view_signals); i++)
        sigaction(view_signals[i], &sa, &v->saved[i]);
    if (v->tty) {
        view_cursor_hidden = 1;
        fputs("\033[?25l", stdout);
        fflush(stdout);
    }
}

void view_end(struct view *v)
{
    if (v->tty) {
        fputs("\033[?25h", stdout);
        fflush(stdout);
        view_cursor_hidden = 0;
    }
    for (size_t i = 0; i < ARRAY_SIZE(view_signals); i++)
        sigaction(view_signals[i], &v->saved[i], NULL);
    free(v->last);
    v->last = NULL;
}

/* The terminal's size; 80 x 24 when it cannot be read. */
void view_size(int *cols, int *rows)
{
    struct winsize ws;
    *cols = 80;
    *rows = 24;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
        if (ws.ws_col > 0)
            *cols = ws.ws_col;
        if (ws.ws_row > 0)
            *rows = ws.ws_row;
    }
}

/* Appends s[0..n) cut to cols columns: a control character becomes a space,
 * a UTF-8 sequence counts as one column. */
int fit_line(dynbuf_t *out, const char *s, size_t n, int cols)
{
    int used = 0, rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        bool cont = (c & 0xc0) == 0x80;
        if (!cont && used >= cols)
            break;
        char ch = c < 0x20 || c == 0x7f ? ' ' : (char)c;
        rc = dynbuf_append(out, &ch, 1);
        used += !cont;
    }
    return rc;
}

/*
 * Shows one frame. On a terminal `frame` (lines, each ending in '\n')
 * replaces the previous frame; elsewhere `line` is printed on a line of its
 * own. Both are borrowed.
 */
void view_show(struct view *v, const char *frame, const char *line)
{
    if (!v->tty) {
        printf("%s\n", line);
        fflush(stdout);
        return;
    }
    if (frame != v->last) {
        free(v->last);
        v->last = xstrdup(frame);
    }
    int cols, rows;
    view_size(&cols, &rows);
    dynbuf_t out;
    dynbuf_init(&out, 1 << 20);
    int rc = 0;
    if (v->lines > 0 && cols < v->cols)
        /* Narrower now: the terminal may have wrapped the old lines; start afresh. */
        rc |= dynbuf_append(&out, "\033[H\033[2J", 7);
    else if (v->lines > 0)
        rc |= dynbuf_printf(&out, "\r\033[%dA", v->lines);
    int n = 0;
    for (const char *p = v->last; *p && n < rows - 1; n++) {
        size_t len = strcspn(p, "\n");
        rc |= dynbuf_append(&out, "\033[2K", 4);
        rc |= fit_line(&out, p, len, cols - 1);
        rc |= dynbuf_append(&out, "\n", 1);
        p += len + (p[len] == '\n');
    }
    rc |= dynbuf_append(&out, "\033[J", 3);
    if (rc == 0)
        fwrite(out.data, 1, out.len, stdout);
    fflush(stdout);
    v->lines = n;
    v->cols = cols;
    dynbuf_free(&out);
}

/*
 * Waits ms milliseconds, redrawing the last frame when the terminal is
 * resized. False as soon as a signal asked the view to stop.
 */
bool view_wait(struct view *v, int64_t ms)
{
    int64_t end = mono_ms() + ms;
    while (!view_signal) {
        if (view_resized) {
            view_resized = 0;
            if (v->tty && v->last)
                view_show(v, v->last, NULL);
        }
        int64_t left = end - mono_ms();
        if (left <= 0)
            return true;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(left > 100 ? 100 : left) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* Runs a statement for a view: NULL on failure with the server's message in err. */
PGresult *view_query(PGconn *conn, const char *sql, int n, const char *const *params, char *err,
                     size_t errlen)
{
    PGresult *r = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        return r;
    char m[1024];
    log_scrub(PQresultErrorMessage(r), m, sizeof m);
    snprintf(err, errlen, "%.*s", (int)strcspn(m, "\n"), m);
    PQclear(r);
    /* A lost connection is tried again at the next poll; the view goes on meanwhile. */
    if (PQstatus(conn) == CONNECTION_BAD)
        PQreset(conn);
    return NULL;
}

/* Sets a view's session up: UTC times, and no statement that can hang the view for ever. */
void view_session(PGconn *conn)
{
    PQclear(PQexec(conn, "SET statement_timeout = '120s'"));
    PQclear(PQexec(conn, "SET application_name = 'backfilld-view'"));
    /* The polls are small and repeated: compiling them would cost more than running them. */
    PQclear(PQexec(conn, "SET jit = off"));
}

/*
 * The wait before the next poll: the interval, but at least four times what
 * the last poll took, so that a view never keeps a backend busy more than a
 * fifth of the time, however large the work it follows.
 */
int64_t view_pace(int64_t interval_ms, int64_t poll_ms)
{
    return poll_ms * 4 > interval_ms ? poll_ms * 4 : interval_ms;
}

/* 1234567 → "1,234,567". */
const char *fmt_count(char *buf, size_t len, int64_t v)
{
    char digits[32];
    snprintf(digits, sizeof digits, "%lld", (long long)(v < 0 ? -v : v));
    size_t n = strlen(digits), o = 0;
    if (v < 0 && o + 1 < len)
        buf[o++] = '-';
    for (size_t i = 0; i < n && o + 2 < len; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

/* A rate: whole from 100 up (with separators if grouped), one decimal below; "-" if unknown. */
const char *fmt_rate(char *buf, size_t len, double v, bool grouped)
{
    if (!isfinite(v) || v < 0)
        snprintf(buf, len, "-");
    else if (v >= 100 && grouped)
        fmt_count(buf, len, (int64_t)llround(v));
    else if (v >= 100)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%.1f", v);
    return buf;
}

/* Seconds as "45s", "3m07s", "2h05m", "3d04h"; "-" when unknown (negative or not finite). */
const char *fmt_dur(char *buf, size_t len, double s)
{
    if (!isfinite(s) || s < 0 || s > 1e9) {
        snprintf(buf, len, "-");
        return buf;
    }
    long long t = llround(s);
    if (s < 0.5)
        snprintf(buf, len, "<1s");
    else if (t < 60)
        snprintf(buf, len, "%llds", t);
    else if (t < 3600)
        snprintf(buf, len, "%lldm%02llds", t / 60, t % 60);
    else if (t < 86400)
        snprintf(buf, len, "%lldh%02lldm", t / 3600, t % 3600 / 60);
    else
        snprintf(buf, len, "%lldd%02lldh", t / 86400, t % 86400 / 3600);
    return buf;
}

/* [#####.....]: `cells` cells inside the brackets, frac of them filled. */
int bar_append(dynbuf_t *b, double frac, int cells)
{
    if (!(frac >= 0))
        frac = 0;
    if (frac > 1)
        frac = 1;
    int full = (int)(frac * cells + 0.5);
    /* Never a full bar before the end, never an empty one after a start. */
    if (full == cells && frac < 1)
        full = cells - 1;
    if (full == 0 && frac > 0)
        full = 1;
    int rc = dynbuf_append(b, "[", 1);
    for (int i = 0; i < cells && rc == 0; i++)
        rc = dynbuf_append(b, i < full ? "#" : ".", 1);
    return rc | dynbuf_append(b, "]", 1);
}

/* Done of planned as a whole percentage that shows 100 only when all is done. */
int percent(int64_t done, int64_t planned)
{
    if (planned <= 0)
        return 0;
    int p = (int)(done * 100 / planned);
    return p == 100 && done < planned ? 99 : p;
}

int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Recent throughput from cumulative counts sampled at each poll. */

void rates_add(struct rates *r, int64_t ms, double runs, double bars, double requests)
{
    r->s[r->next] = (struct rate_sample){ms, runs, bars, requests};
    r->next = (r->next + 1) % (int)ARRAY_SIZE(r->s);
    if (r->n < (int)ARRAY_SIZE(r->s))
        r->n++;
}

/* Per second over the last window_ms (at least two samples, half a second apart); false if not yet
 * known. */
bool rates_get(const struct rates *r, int64_t window_ms, double *runs_s, double *bars_s,
               double *req_s)
{
    int size = (int)ARRAY_SIZE(r->s);
    if (r->n < 2)
        return false;
    const struct rate_sample *newest = &r->s[(r->next - 1 + size) % size];
    const struct rate_sample *old = NULL;
    for (int k = r->n - 1; k >= 1; k--) {
        const struct rate_sample *s = &r->s[(r->next - 1 - k + size * 2) % size];
        if (newest->ms - s->ms <= window_ms) {
            old = s;
            break;
        }
    }
    if (!old)
        old = &r->s[(r->next - 2 + size) % size];
    double dt = (double)(newest->ms - old->ms) / 1000.0;
    if (dt < 0.5)
        return false;
    *runs_s = (newest->runs - old->runs) / dt;
    *bars_s = (newest->bars - old->bars) / dt;
    *req_s = (newest->requests - old->requests) / dt;
    return true;
}

/* The local time of day, for the plain lines a view prints when stdout is not a terminal. */
const char *clock_now(char *buf, size_t len)
{
    time_t t = (time_t)(wall_us() / 1000000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%H:%M:%S", &tm);
    return buf;
}

/* A --interval value: seconds, from 0.1 to 3600. */
bool parse_interval(const char *s, int64_t *ms)
{
    double v;
    if (!s || !parse_double(s, 0.1, 3600, &v))
        return false;
    *ms = (int64_t)llround(v * 1000);
    return true;
}
