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

void view_begin(struct view *v);
void view_end(struct view *v);
void view_size(int *cols, int *rows);
int fit_line(dynbuf_t *out, const char *s, size_t n, int cols);
void view_show(struct view *v, const char *frame, const char *line);
bool view_wait(struct view *v, int64_t ms);
void view_session(PGconn *conn);
int64_t view_pace(int64_t interval_ms, int64_t poll_ms);
const char *fmt_count(char *buf, size_t len, int64_t v);
const char *fmt_rate(char *buf, size_t len, double v, bool grouped);
const char *fmt_dur(char *buf, size_t len, double s);
int bar_append(dynbuf_t *b, double frac, int cells);
int percent(int64_t done, int64_t planned);
int clamp_int(int v, int lo, int hi);
void rates_add(struct rates *r, int64_t ms, double runs, double bars, double requests);
bool rates_get(const struct rates *r, int64_t window_ms, double *runs_s, double *bars_s,
               double *req_s);
const char *clock_now(char *buf, size_t len);
bool parse_interval(const char *s, int64_t *ms);
PGresult *view_query(PGconn *conn, const char *sql, int n, const char *const *params, char *err,
                     size_t errlen);

#endif
