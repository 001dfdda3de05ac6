/*
 * main.c: mongolb's entry point: the command line and signals; the runtime is in proxy.c.
 *
 * mongolb runs in the foreground and logs to stderr, which systemd's journal takes. SIGTERM or
 * SIGINT starts a graceful shutdown: stop accepting, close idle clients, let requests in flight
 * finish up to shutdown_timeout_ms, then exit. A second signal exits at once. SIGHUP reloads the
 * configuration file: what can change live changes, keys that need a restart are kept (with a log
 * line). Under systemd (Type=notify) proxy.c tells the service manager about readiness, reloads,
 * shutdown and the watchdog (sdnotify.c).
 */
#include "proxy.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "authfile.h"
#include "fault.h"
#include "log.h"
#include "tls.h"

static struct proxy proxy;
static const char *config_path;
static uv_signal_t sig_term, sig_int, sig_hup;

static void usage(FILE *f)
{
    fprintf(f, "Usage: mongolb -c FILE [options]\n"
               "\n"
               "A MongoDB proxy that applications use as if it were one mongos: it routes each\n"
               "request to a nearby healthy mongos (or replica-set member) and keeps every\n"
               "cursor on the server that opened it.\n"
               "\n"
               "  -c, --config FILE    the configuration file (required)\n"
               "  -t, --check-config   check the configuration, print what is wrong, and exit\n"
               "  --make-verifier USER@DB\n"
               "                       read a password from stdin and print the auth_file lines\n"
               "                       (SCRAM-SHA-256 and SCRAM-SHA-1) of USER in database DB\n"
               "  -V, --version        print the version and exit\n"
               "  -h, --help           print this help and exit\n");
}

/*
 * mongolb --make-verifier USER@DB: the password is read from stdin (its first line; echo is off on
 * a terminal) and never kept: only the verifiers are printed, one line per mechanism.
 */
static int make_verifier(const char *name)
{
    const char *at = strrchr(name, '@');
    if (!at || at == name || !at[1]) {
        fprintf(stderr, "--make-verifier: give USER@DB, e.g. alice@admin\n");
        return 2;
    }
    char user[SCRAM_MAX_USER + 1], db[AUTHFILE_MAX_DB + 1];
    size_t ulen = (size_t)(at - name);
    if (ulen > SCRAM_MAX_USER || !authfile_user_ok(name, ulen) ||
        !authfile_db_ok(at + 1, strlen(at + 1)) || strlen(at + 1) > AUTHFILE_MAX_DB) {
        fprintf(stderr, "--make-verifier: '%s' is not a user and database the auth_file takes\n",
                name);
        return 2;
    }
    memcpy(user, name, ulen);
    user[ulen] = '\0';
    snprintf(db, sizeof(db), "%s", at + 1);
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fprintf(stderr, "password for %s@%s: ", user, db);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    }
    char pw[SCRAM_MAX_PASSWORD + 2];
    bool got = fgets(pw, sizeof(pw), stdin) != NULL;
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSANOW, &old);
        fputc('\n', stderr);
    }
    pw[got ? strcspn(pw, "\r\n") : 0] = '\0';
    if (!pw[0]) {
        fprintf(stderr, "--make-verifier: no password on stdin\n");
        return 1;
    }
    const enum scram_mech mechs[] = {SCRAM_SHA_256, SCRAM_SHA_1};
    int rc = 0;
    for (size_t i = 0; i < 2 && rc == 0; i++) {
        char line[AUTHFILE_MAX_LINE + 2];
        int n = authfile_make_line(mechs[i], db, user, pw, 0, line, sizeof(line));
        if (n < 0) {
            fprintf(stderr, "--make-verifier: %s: %s\n", scram_mech_name(mechs[i]),
                    scram_strerror(n));
            rc = 1;
        } else {
            fputs(line, stdout);
        }
    }
    OPENSSL_cleanse(pw, sizeof(pw));
    return rc;
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    if (signum == SIGHUP) {
        proxy_reload_file(&proxy, config_path);
        return;
    }
    proxy_shutdown(&proxy, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* Signal handles do not keep the loop alive: the loop ends when the proxy has closed the rest. */
static void signals_start(uv_loop_t *loop)
{
    uv_signal_t *hs[] = {&sig_term, &sig_int, &sig_hup};
    int nums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(loop, hs[i]);
        uv_signal_start(hs[i], on_signal, nums[i]);
        uv_unref((uv_handle_t *)hs[i]);
    }
}

static void signals_stop(void)
{
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_hup, NULL);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {"make-verifier", required_argument, NULL, 'M'},
        {NULL, 0, NULL, 0},
    };
    bool check_only = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 't':
            check_only = true;
            break;
        case 'V':
            printf("mongolb %s\n", MONGOLB_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        case 'M':
            return make_verifier(optarg);
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!config_path || optind != argc) {
        usage(stderr);
        return 2;
    }
    static char err[16384];
    /* Test-only fault injection (fault.h): inert unless the variable is set. */
    const char *faults = getenv("MONGOLB_FAULT");
    if (fault_init(faults, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    if (fault_armed)
        log_warn(NULL, "MONGOLB_FAULT=%s: fault injection is on (for tests only)", faults);
    if (config_load_file(config_path, &proxy.cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (check_only) {
        /*
         * The files the TLS keys name are read as at start, so that an unreadable file, a key
         * that does not match its certificate or a wrong password fails here, with the path,
         * rather than in the daemon that systemd starts next.
         */
        struct tls_contexts tls;
        int tr = tls_build(&proxy.cfg, &tls, err, sizeof(err));
        if (tr == 0) {
            /* The auth_file and the password file: readable, parsable, and not by others. */
            tr = auth_check_files(&proxy.cfg, err, sizeof(err));
            if (tr < 0)
                tls_free(&tls);
        }
        /* One line per problem or warning, led by the file's name as the parser's errors are. */
        char warnings[2048];
        char *text = err;
        const char *kind = "";
        if (tr == 0) {
            tls_free(&tls);
            text = warnings;
            kind = "warning: ";
            tls_warnings(&proxy.cfg, warnings, sizeof(warnings)); /* "" when there are none */
        }
        for (char *line = text, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            if (next)
                *next++ = '\0';
            fprintf(stderr, "%s: %s%s\n", config_path, kind, line);
        }
        if (tr < 0) {
            config_free(&proxy.cfg);
            return 1;
        }
        printf("%s: configuration is valid\n", config_path);
        config_free(&proxy.cfg);
        return 0;
    }
    log_current_level = proxy.cfg.log_level;
    log_current_format = proxy.cfg.log_format;
    log_detect_journald();
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    signals_start(loop);
    int rc = proxy_start(&proxy, loop);
    if (rc < 0) {
        log_error(NULL, "cannot start: %s", uv_strerror(rc));
        listeners_cleanup(&proxy);
        return 1;
    }
    uv_run(loop, UV_RUN_DEFAULT);
    signals_stop();
    /* Every handle is closed: free what remains. */
    uv_run(loop, UV_RUN_DEFAULT);
    proxy_free(&proxy);
    int lc = uv_loop_close(loop);
    if (lc != 0)
        log_warn(NULL, "event loop closed with handles still open");
    return 0;
}
