/*
 * cli_int.h: what the command files share (cli.c, cli_migrate.c,
 * cli_enqueue.c, cli_status.c, cli_view.c); the public face is include/cli.h.
 *
 *   cli.c          the database helpers every command uses, and check-config
 *   cli_migrate.c  migrate: the schema, --adopt, the daemon role
 *   cli_enqueue.c  enqueue, and enqueue --wait
 *   cli_status.c   status, and status --watch
 *   cli_view.c     the terminal views' drawing, pacing and formatting
 */
#ifndef BACKFILLD_CLI_INT_H
#define BACKFILLD_CLI_INT_H

#include "cli.h"
#include "config.h"
#include "util.h"

#include <libpq-fe.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* cli.c */
/* Connects (blocking); NULL after printing why. The caller PQfinish()es. */
PGconn *connect_db(const struct config *c);
/* Runs a statement; NULL after printing the server's message (scrubbed). The caller PQclear()s. */
PGresult *q(PGconn *conn, const char *sql, int n, const char *const *params);
/* EXIT_OK when the schema is at this binary's version, else a message and the exit code. */
int check_schema(PGconn *conn);
/* A --from/--to value: a date (as --to, the end of that day) or an RFC 3339 instant. */
bool parse_when(const char *s, bool is_to, int64_t *us);

/* cli_view.c: a live view redrawn in place on a terminal, one line per interval elsewhere. */
#define VIEW_NSIGNALS 4 /* SIGINT, SIGTERM, SIGHUP, SIGWINCH */

/* The signal that asked the view to stop, or 0 (set by the view's handler). */
extern volatile sig_atomic_t view_signal;

struct view {
    bool tty;   /* stdout is a terminal: redraw in place */
    int lines;  /* lines the last frame left on the screen */
    int cols;   /* the width it was drawn for */
    char *last; /* the last frame, for a redraw after SIGWINCH (owned) */
    struct sigaction saved[VIEW_NSIGNALS];
};

struct rate_sample {
    int64_t ms;
    double runs, bars, requests;
};

struct rates {
    struct rate_sample s[64];
    int n, next;
};

/* Starts a view on *v (caller's): decides tty, installs the signal handlers, hides the
 * cursor on a terminal. view_end() undoes all of it (shows the cursor, restores handlers). */
void view_begin(struct view *v);
void view_end(struct view *v);
/* The terminal's size; 80 x 24 when it cannot be read. */
void view_size(int *cols, int *rows);
/* Appends s[0..n) to out cut to cols columns, control characters as spaces. 0 or -1 (cap). */
int fit_line(dynbuf_t *out, const char *s, size_t n, int cols) MUSTCHECK;
/* On a terminal, frame (lines ending in '\n', borrowed) replaces the last frame; elsewhere
 * line (borrowed) is printed on a line of its own. */
void view_show(struct view *v, const char *frame, const char *line);
/* Waits ms, redrawing after a resize; false once a signal asked the view to stop. */
bool view_wait(struct view *v, int64_t ms);
/* Session settings for a view's polls: a statement timeout, an application name, no JIT. */
void view_session(PGconn *conn);
/* The wait before the next poll: the interval, but at least 4x what the last poll took. */
int64_t view_pace(int64_t interval_ms, int64_t poll_ms);
/* Formatting into buf (caller's, len bytes), which is returned: 1,234,567; a rate ("-" when
 * unknown); a duration such as 45s, 3m07s, 2h05m, "<1s", "-". */
const char *fmt_count(char *buf, size_t len, int64_t v);
const char *fmt_rate(char *buf, size_t len, double v, bool grouped);
const char *fmt_dur(char *buf, size_t len, double s);
/* Appends [###...] with `cells` cells, frac of them filled. 0 or -1 (cap). */
int bar_append(dynbuf_t *b, double frac, int cells) MUSTCHECK;
/* done of planned in whole percent, 100 only when all is done; 0 when nothing is planned. */
int percent(int64_t done, int64_t planned);
int clamp_int(int v, int lo, int hi);
/* A sample of cumulative counts at ms; rates_get: per second over the last window_ms
 * (false until two samples half a second apart). */
void rates_add(struct rates *r, int64_t ms, double runs, double bars, double requests);
bool rates_get(const struct rates *r, int64_t window_ms, double *runs_s, double *bars_s,
               double *req_s);
/* The local time of day, hh:mm:ss, into buf. */
const char *clock_now(char *buf, size_t len);
/* A --interval value: seconds from 0.1 to 3600, as ms. */
bool parse_interval(const char *s, int64_t *ms);
/* Runs a view's statement: the result (caller PQclear()s), or NULL with the scrubbed server
 * message in err; a lost connection is reset for the next poll. */
PGresult *view_query(PGconn *conn, const char *sql, int n, const char *const *params, char *err,
                     size_t errlen);

#endif
