/*
 * backfilld: entry point. Parses the command line, loads the configuration,
 * and runs one command. `run` sets up the loop, the signals and systemd
 * notification around the dispatcher; the other commands live in cli.c.
 */
#include "cli.h"
#include "cli_verify.h"
#include "config.h"
#include "corpactions.h"
#include "dispatch.h"
#include "log.h"
#include "sdnotify.h"
#include "util.h"

#include <curl/curl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define BACKFILLD_VERSION "0.1.0"

static const char usage[] =
    "usage: backfilld [--config FILE] COMMAND [options]\n\n"
    "Backfills Alpaca stock bars into PostgreSQL from a queue of jobs in the same\n"
    "database. Operators steer it with SQL on job_definitions (see the README).\n\n"
    "commands:\n"
    "  run [--until-idle]   the daemon; --until-idle exits 0 once no run is queued or running\n"
    "  migrate              create or upgrade the schema\n"
    "  enqueue ...          queue runs for symbols and a range (enqueue --help);\n"
    "                       --all-active: every active US equity Alpaca lists;\n"
    "                       --wait shows their progress until they are done\n"
    "  status [--json]      queue depth, throughput, failures, coverage\n"
    "  status --watch       live, redrawn in place: progress bars, rates and ETAs\n"
    "  check-config         validate the settings, the database and (--alpaca) the credentials\n"
    "  verify [--refetch]   prove the table complete per series and trading day (verify --help)\n\n"
    "options:\n"
    "  --config FILE        KEY=VALUE settings (systemd EnvironmentFile= format);\n"
    "                       the environment overrides the file\n"
    "  --help, --version\n\n"
    "Settings (defaults in brackets) are listed by 'backfilld --help-config'.\n"
    "Exit codes: 0 ok, 64 usage, 65 bad input, 69 database unavailable, 78 configuration.\n";

static void print_config_help(void)
{
    printf("%-32s %-28s %-10s %s\n", "KEY", "DEFAULT", "RELOAD", "MEANING");
    for (const struct cfg_key *k = cfg_keys; k->name; k++)
        printf("%-32s %-28s %-10s %s\n", k->name, *k->def ? k->def : "(empty)",
               k->reloadable ? "SIGHUP" : "restart", k->help);
}

/* --- run ------------------------------------------------------------------- */

struct daemon {
    uv_loop_t loop;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t watchdog;
    dispatch_t *d;
    corpactions_daemon_t *upkeep; /* calendar, corporate actions, ledger pass; may be NULL */
    struct config *cfg;
    const char *config_file;
    int exit_code;
    int signals;
};

static void on_exited(void *arg, int code)
{
    struct daemon *dm = arg;
    dm->exit_code = code;
    corpactions_daemon_close(dm->upkeep);
    dm->upkeep = NULL;
    uv_close((uv_handle_t *)&dm->sigterm, NULL);
    uv_close((uv_handle_t *)&dm->sigint, NULL);
    uv_close((uv_handle_t *)&dm->sighup, NULL);
    uv_close((uv_handle_t *)&dm->watchdog, NULL);
}

static void on_ready(void *arg)
{
    (void)arg;
    sdnotify_send("READY=1\nSTATUS=connected, working");
}

static void on_status(void *arg, const char *line)
{
    char msg[300];
    snprintf(msg, sizeof msg, "STATUS=%s", line);
    sdnotify_send(msg);
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
    struct daemon *dm = h->data;
    dm->signals++;
    if (dm->signals == 1)
        sdnotify_send("STOPPING=1\nSTATUS=stopping: finishing or releasing runs");
    dispatch_stop(dm->d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

struct reload_counts {
    int64_t applied, ignored;
};

static void reload_report(const char *key, bool applied, void *arg)
{
    struct reload_counts *n = arg;
    if (applied) {
        n->applied++;
        LOG(LL_NOTICE, "setting reloaded", F_STR("key", key));
    } else {
        n->ignored++;
        LOG(LL_WARN, "setting changed but needs a restart; ignored", F_STR("key", key));
    }
}

static void register_db_password(const char *conninfo);

static void on_sighup(uv_signal_t *h, int signum)
{
    struct daemon *dm = h->data;
    char msg[128];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%lld",
             (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    sdnotify_send(msg);
    LOG(LL_NOTICE, "reloading configuration", F_STR("config", dm->config_file));
    struct config next;
    char err[512];
    log_clear_secrets();
    if (config_load(&next, dm->config_file, err, sizeof err) < 0) {
        LOG(LL_ERROR, "reload failed; keeping the current settings", F_STR("error", err));
    } else {
        struct reload_counts n = {0};
        config_apply_reload(dm->cfg, &next, reload_report, &n);
        dispatch_reconfigure(dm->d);
        LOG(LL_NOTICE, "configuration reloaded", F_I64("applied", n.applied),
            F_I64("ignored", n.ignored));
    }
    log_add_secret(dm->cfg->api_key);
    log_add_secret(dm->cfg->api_secret);
    register_db_password(dm->cfg->database_url);
    config_free(&next);
    sdnotify_send("READY=1");
}

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    /* Sent from the loop: a wedged loop stops the pings and systemd restarts us. */
    sdnotify_send("WATCHDOG=1");
}

static char *default_worker_id(void)
{
    char host[256] = "host";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    uint64_t seed = (uint64_t)wall_us() ^ ((uint64_t)getpid() << 32);
    char buf[400];
    /* Unique per process start, so a restarted host never inherits its old leases. */
    snprintf(buf, sizeof buf, "%s:%d:%06llx", host, (int)getpid(),
             (unsigned long long)(rng_next(&seed) & 0xffffff));
    return xstrdup(buf);
}

static int cmd_run(struct config *cfg, const char *config_file, int argc, char **argv)
{
    bool until_idle = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--until-idle") == 0) {
            until_idle = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: backfilld [--config FILE] run [--until-idle]\n\n"
                   "Runs the daemon: claims queued runs, fetches their bars from Alpaca and\n"
                   "writes them to Postgres. SIGTERM/SIGINT stop it gracefully (a second one\n"
                   "at once); SIGHUP reloads the settings marked SIGHUP in --help-config.\n"
                   "--until-idle exits 0 once no run is queued (and ready or waiting to\n"
                   "retry) or running anywhere.\n");
            return EXIT_OK;
        } else {
            fprintf(stderr, "backfilld run: unexpected argument '%s'\n", argv[i]);
            return EXIT_USAGE;
        }
    }
    char err[512];
    if (config_check_run(cfg, err, sizeof err) < 0) {
        LOG(LL_CRIT, "configuration error", F_STR("error", err));
        return EXIT_CONFIG;
    }
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        LOG(LL_CRIT, "libcurl initialisation failed");
        return EXIT_SOFTWARE;
    }
    char *worker =
        cfg->worker_id && *cfg->worker_id ? xstrdup(cfg->worker_id) : default_worker_id();
    struct daemon dm;
    memset(&dm, 0, sizeof dm);
    dm.cfg = cfg;
    dm.config_file = config_file;
    uv_loop_init(&dm.loop);
    uv_signal_init(&dm.loop, &dm.sigterm);
    uv_signal_init(&dm.loop, &dm.sigint);
    uv_signal_init(&dm.loop, &dm.sighup);
    dm.sigterm.data = dm.sigint.data = dm.sighup.data = &dm;
    uv_signal_start(&dm.sigterm, on_stop_signal, SIGTERM);
    uv_signal_start(&dm.sigint, on_stop_signal, SIGINT);
    uv_signal_start(&dm.sighup, on_sighup, SIGHUP);
    uv_timer_init(&dm.loop, &dm.watchdog);
    uint64_t wd = sdnotify_watchdog_usec();
    if (wd > 0)
        uv_timer_start(&dm.watchdog, on_watchdog, wd / 2000, wd / 2000);
    struct dispatch_hooks hooks = {
        .ready = on_ready, .status = on_status, .exited = on_exited, .arg = &dm};
    dm.d = dispatch_new(&dm.loop, cfg, worker, until_idle, &hooks);
    if (dispatch_start(dm.d) < 0)
        dispatch_abort(dm.d, EXIT_UNAVAILABLE);
    else if (!until_idle)
        dm.upkeep = corpactions_daemon_new(&dm.loop, cfg);
    uv_run(&dm.loop, UV_RUN_DEFAULT);
    /* One more pass so close callbacks that were queued last get to run. */
    uv_run(&dm.loop, UV_RUN_NOWAIT);
    int rc = uv_loop_close(&dm.loop);
    if (rc != 0)
        LOG(LL_ERROR, "event loop did not close cleanly", F_STR("error", uv_strerror(rc)));
    dispatch_free(dm.d);
    free(worker);
    curl_global_cleanup();
    LOG(LL_INFO, "exit", F_I64("code", dm.exit_code));
    return dm.exit_code;
}

/* Registers a value and, if it has %XX escapes, its decoded form too. */
static void add_secret_decoded(const char *v, size_t n)
{
    char raw[1024], dec[1024];
    if (n == 0 || n >= sizeof raw)
        return;
    memcpy(raw, v, n);
    raw[n] = '\0';
    log_add_secret(raw);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned hi, lo;
        if (raw[i] == '%' && i + 2 < n + 1 && sscanf(raw + i + 1, "%1x%1x", &hi, &lo) == 2) {
            dec[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            dec[o++] = raw[i];
        }
    }
    dec[o] = '\0';
    log_add_secret(dec);
}

/*
 * The database password, wherever it comes from, is scrubbed from every log
 * line and every command's error. libpq's own parser is tried first; a URL it
 * rejects (a stray '%' in the password) is taken apart by hand, since libpq's
 * error message then quotes the password.
 */
static void register_db_password(const char *conninfo)
{
    log_add_secret(getenv("PGPASSWORD"));
    if (!conninfo || !*conninfo)
        return;
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val)
            log_add_secret(o->val);
    PQconninfoFree(opts);
    const char *scheme = strstr(conninfo, "://");
    if (scheme) {
        const char *auth = scheme + 3;
        const char *at = strchr(auth, '@');
        const char *slash = strchr(auth, '/');
        const char *colon = strchr(auth, ':');
        if (at && (!slash || at < slash) && colon && colon < at)
            add_secret_decoded(colon + 1, (size_t)(at - colon - 1));
    }
    const char *kw = strstr(conninfo, "password=");
    if (kw) {
        const char *v = kw + 9;
        char q = (*v == '\'' || *v == '"') ? *v++ : ' ';
        size_t n = strcspn(v, q == ' ' ? " \t" : (q == '"' ? "\"" : "'"));
        add_secret_decoded(v, n);
    }
}

/* --- main -------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *config_file = NULL;
    int i = 1;
    log_init();
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "backfilld: --config needs a file\n");
                return EXIT_USAGE;
            }
            config_file = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config_file = argv[i] + 9;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return EXIT_OK;
        } else if (strcmp(argv[i], "--help-config") == 0) {
            print_config_help();
            return EXIT_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("backfilld %s\n", BACKFILLD_VERSION);
            return EXIT_OK;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "backfilld: unknown option '%s'\n\n%s", argv[i], usage);
            return EXIT_USAGE;
        } else {
            break;
        }
    }
    if (i >= argc) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[i];
    int sub_argc = argc - i;
    char **sub_argv = argv + i;
    bool is_help = false;
    for (int k = 1; k < sub_argc; k++)
        is_help |= strcmp(sub_argv[k], "--help") == 0 || strcmp(sub_argv[k], "-h") == 0;

    struct config cfg;
    char err[512];
    int rc;
    if (config_load(&cfg, config_file, err, sizeof err) < 0) {
        if (!is_help) {
            fprintf(stderr, "backfilld: configuration error: %s\n", err);
            config_free(&cfg);
            log_clear_secrets();
            return EXIT_CONFIG;
        }
    }
    log_min_level = cfg.log_level;
    /* Text for a person at a terminal, JSON for the journal, files and pipes. */
    (void)log_set_format(log_format_parse(cfg.log_format));
    register_db_password(cfg.database_url);
    if (strcmp(cmd, "run") == 0)
        rc = cmd_run(&cfg, config_file, sub_argc, sub_argv);
    else if (strcmp(cmd, "migrate") == 0)
        rc = cli_migrate(&cfg, sub_argc, sub_argv);
    else if (strcmp(cmd, "enqueue") == 0)
        rc = cli_enqueue(&cfg, sub_argc, sub_argv);
    else if (strcmp(cmd, "status") == 0)
        rc = cli_status(&cfg, sub_argc, sub_argv);
    else if (strcmp(cmd, "verify") == 0)
        rc = cli_verify(&cfg, sub_argc, sub_argv);
    else if (strcmp(cmd, "check-config") == 0)
        rc = cli_check_config(&cfg, sub_argc, sub_argv);
    else {
        fprintf(stderr, "backfilld: unknown command '%s'\n\n%s", cmd, usage);
        rc = EXIT_USAGE;
    }
    config_free(&cfg);
    log_clear_secrets();
    return rc;
}
