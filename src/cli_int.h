/*
 * cli_int.h: what the command files share (cli.c, cli_migrate.c,
 * cli_enqueue.c, cli_status.c, cli_view.c); the public face is include/cli.h.
 *
 *   cli.c          the database helpers every command uses, and check-config
 *   cli_migrate.c  migrate: the schema, --adopt, the daemon role
 *   cli_enqueue.c  enqueue, and enqueue --wait
 *   cli_universe.c enqueue --all-active: Alpaca's asset list, and what it no longer has
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

/* cli_enqueue.c */
/* A symbol Alpaca could plausibly accept (1-32 characters, upper case, no space or comma);
 * false with the reason in why. */
bool cli_symbol_ok(const char *s, char *why, size_t whylen);

/* cli_universe.c: enqueue --all-active. */
struct universe {
    char **syms; /* the chosen symbols (exchange filter applied), sorted, unique; owned */
    size_t nsyms;
    char **all; /* every listed active us_equity symbol, sorted, unique; owned */
    size_t nall;
    char **skipped; /* listed symbols that cannot be definitions; owned */
    size_t nskipped;
    size_t listed; /* active us_equity assets in the answer */
};
/* EXIT_OK when list (--exchange's value) names only exchanges /v2/assets knows, else
 * EXIT_DATAERR after saying which. */
int universe_check_exchanges(const char *list);
/* Reads the active us_equity asset list from APCA_API_BASE_URL into *u (caller's; freed with
 * universe_free, also after a failure), keeping the exchanges in exchange_list (NULL: all).
 * EXIT_OK, or an exit code after printing the cause: EXIT_CONFIG (settings, 401/403),
 * EXIT_UNAVAILABLE (unreachable, another status, not an asset list, an empty list),
 * EXIT_DATAERR (no symbol on those exchanges). */
int universe_fetch(const struct config *c, const char *exchange_list, struct universe *u);
/* Prints and logs, by symbol, the skipped symbols and the defined symbols u's list does not
 * have (their definitions are left as they are). EXIT_OK or EXIT_SOFTWARE (said why). */
int universe_report(PGconn *conn, const struct universe *u);
/* syms as a Postgres array literal, {"A","B.C"}. 0 or -1 (the buffer's cap). */
int universe_literal(dynbuf_t *b, char *const *syms, size_t n) MUSTCHECK;
void universe_free(struct universe *u);

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
