/*
 * config.h: mongolb's configuration: the ini file's keys, their parsed values, and validation.
 *
 * One table (config.c) describes every key: its section, name, type, where its value lives in
 * struct mlb_config, its default, whether a reload may change it, and a one-line description.
 * Parsing, defaults, the dump, the reload check and the documentation tests all walk that table,
 * so a key is added in exactly one place.
 *
 * Functions return 0 or a negative errno code. Error texts name the file, the line and the key,
 * one error per line, e.g.
 *   mongolb.ini:12: [upstream] local_threshold_ms: 'abc' is not a whole number
 */
#ifndef MONGOLB_CONFIG_H
#define MONGOLB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "compress.h"
#include "log.h"

#define MLB_MAX_LISTEN       16  /* addresses in [mongolb] listen */
#define MLB_MAX_SEEDS        64  /* servers in [upstream] seeds */
#define MLB_HOST_MAX         256 /* a host name or IP literal (without brackets) and its NUL */
#define MLB_UNIX_PATH_MAX    108 /* sizeof(sun_path) on Linux, NUL included */
#define MLB_REPLSET_MAX      128 /* a replica set name and its NUL */
#define MLB_GROUP_MAX        64  /* a group name or number and its NUL */
#define MLB_DEFAULT_PORT     27017
#define MLB_NO_MAX_STALENESS (-1)

enum mlb_listen_kind {
    MLB_LISTEN_TCP,
    MLB_LISTEN_UNIX,
};

/* One listening address: TCP uses host and port, UNIX uses path. */
struct mlb_listen_addr {
    enum mlb_listen_kind kind;
    char host[MLB_HOST_MAX]; /* IPv6 literals are stored without brackets */
    int port;
    char path[MLB_UNIX_PATH_MAX];
};

struct mlb_listen_list {
    struct mlb_listen_addr addr[MLB_MAX_LISTEN];
    size_t count;
};

struct mlb_hostport {
    char host[MLB_HOST_MAX]; /* IPv6 literals are stored without brackets */
    int port;
};

struct mlb_seed_list {
    struct mlb_hostport host[MLB_MAX_SEEDS];
    size_t count;
    /* seeds = mongodb+srv://NAME: NAME (count 0; srv.c finds the hosts), else "". */
    char srv[MLB_HOST_MAX];
};

enum mlb_mode {
    MLB_MODE_MONGOS,     /* the seeds are mongos routers; any healthy one will do */
    MLB_MODE_REPLICASET, /* the seeds are members of one replica set */
};

/* [mongolb] tls_mode: mongod's net.tls.mode disabled, allowTLS, preferTLS and requireTLS. */
enum mlb_tls_mode {
    MLB_TLS_DISABLED, /* plaintext only; a TLS handshake is refused */
    MLB_TLS_ALLOW,    /* plaintext and TLS on the same port */
    MLB_TLS_PREFER,   /* plaintext and TLS on the same port, as allow (see docs/CONFIG.md) */
    MLB_TLS_REQUIRE,  /* TLS only; a plaintext client is refused */
};

/* [mongolb] tls_client_certificates: whether applications must present a certificate. */
enum mlb_tls_client_certs {
    MLB_TLS_CERTS_NONE,     /* not asked for */
    MLB_TLS_CERTS_OPTIONAL, /* asked for, and verified against tls_ca_file when sent */
    MLB_TLS_CERTS_REQUIRED, /* a handshake without a valid one fails */
};

/* [auth] mode: who checks credentials, and as whom backend connections log in. */
enum mlb_auth_mode {
    MLB_AUTH_OFF,         /* no credentials; a client's login is refused with a clear error */
    MLB_AUTH_SERVICE,     /* apps log in with auth_file users; backends see one service user */
    MLB_AUTH_PASSTHROUGH, /* apps log in as cluster users; backends see that same user */
};

/* [admin] http_auth: whether /metrics and /readyz ask for credentials when [auth] mode is on. */
enum mlb_http_auth {
    MLB_HTTP_AUTH_BASIC, /* HTTP Basic by one of [auth] admin_users, checked with the auth_file */
    MLB_HTTP_AUTH_NONE,  /* none: the socket is protected by other means (loopback only) */
};

/* [auth] service_mechanism: how backend connections log in as service_user. */
enum mlb_service_mech {
    MLB_SVC_SCRAM_SHA_256,
    MLB_SVC_SCRAM_SHA_1,
    MLB_SVC_X509, /* the [upstream] TLS client certificate, on $external */
};

#define MLB_NAME_LIST_MAX 1024 /* bytes of a comma-separated name list, NUL included */
#define MLB_AUTH_NAME_MAX 320  /* bytes of a user name or database name key, NUL included */

enum mlb_read_pref {
    MLB_READ_PRIMARY,
    MLB_READ_PRIMARY_PREFERRED,
    MLB_READ_SECONDARY,
    MLB_READ_SECONDARY_PREFERRED,
    MLB_READ_NEAREST,
};

struct mlb_tag {
    char *name;
    char *value;
};

/* A tag set matches a server that has every one of its tags; an empty set matches any server. */
struct mlb_tag_set {
    struct mlb_tag *tag;
    size_t count;
};

/* Tag sets in the order they are tried; count 0 means no tag filtering at all. */
struct mlb_tag_sets {
    struct mlb_tag_set *set;
    size_t count;
};

struct mlb_config {
    /* [mongolb] */
    int client_frame_timeout_ms;      /* a frame once begun must arrive whole within this */
    int client_idle_timeout_ms;       /* close a client without a request this long; 0: never */
    int client_write_timeout_ms;      /* a client must take a reply within this */
    struct compress_list compressors; /* offered to clients that ask in their hello */
    int error_log_limit;              /* error lines per code per 10 s; 0: no limit */
    struct mlb_listen_list listen;
    enum log_format log_format;
    enum log_level log_level;
    int max_buffer_bytes; /* all connections' buffers together; past it, reading pauses */
    int max_clients;
    int max_message_bytes; /* the largest frame a client may send */
    int shutdown_timeout_ms;
    int slow_request_ms; /* log requests at least this slow; 0: off */
    /*
     * TLS towards applications. Every char * path in this structure is NULL when the key is
     * unset or set to an empty value, never "", and otherwise a string the configuration owns
     * (config_free frees it). The files are only named here; tls.c reads them.
     */
    char *tls_ca_file;              /* CAs for client certificates */
    char *tls_certificate_key_file; /* certificate chain and private key, PEM */
    enum mlb_tls_client_certs tls_client_certificates;
    enum mlb_tls_mode tls_mode;
    /* Unix sockets of listen: the group ("" for mongolb's own) and the mode they get. */
    char unix_socket_group[MLB_GROUP_MAX];
    int unix_socket_mode; /* permission bits, 0 to 0777 */

    /* [upstream] */
    struct compress_list upstream_compressors; /* offered to the servers; empty: off */
    int connect_timeout_ms;
    int heartbeat_interval_ms;
    int local_threshold_ms;
    int max_idle_time_ms; /* close a pooled connection idle this long; 0: keep forever */
    int max_lifetime_ms;  /* close a connection this old when it next goes idle; 0: no limit */
    int max_pool_size;
    int max_staleness_seconds; /* MLB_NO_MAX_STALENESS (-1) or >= 90 */
    enum mlb_mode mode;
    enum mlb_read_pref read_preference;
    struct mlb_tag_sets read_preference_tags; /* allocated; freed by config_free */
    char replica_set[MLB_REPLSET_MAX];        /* "" when not set */
    int request_timeout_ms; /* how long a request may wait for its reply; 0: no limit */
    struct mlb_seed_list seeds;
    int server_selection_timeout_ms;
    /* SRV seeds (srv.c): the service name, srvMaxHosts, the rescan interval (0: the records' TTL,
     * at least 60 s) and the DNS servers to ask ("" for the system's). */
    char srv_service_name[64];
    int srv_max_hosts;
    int srv_rescan_ms;
    char dns_server[256];
    int tcp_keepalive_s;     /* TCP keepalive idle time on backend connections; 0: off */
    int tcp_user_timeout_ms; /* TCP_USER_TIMEOUT on backend connections; 0: off */
    /*
     * TLS towards the servers; the keys are [upstream] tls, tls_ca_file and so on, without the
     * upstream_ prefix. Paths are NULL when unset, as above; the booleans are 0 or 1.
     */
    int upstream_tls;
    int upstream_tls_allow_invalid_certificates;
    int upstream_tls_allow_invalid_hostnames;
    char *upstream_tls_ca_file; /* NULL: the system's trust store */
    char *upstream_tls_certificate_key_file;
    /* The path of a file holding the key's password, never the password itself. */
    char *upstream_tls_certificate_key_file_password;
    int zlib_compression_level; /* -1 (zlib's default) to 9 */
    int zstd_compression_level; /* 1 to 22 */

    /* [cursors] */
    int idle_timeout_ms;
    int max_cursors;

    /* [admin] */
    int http_allow_remote;              /* 0 or 1 */
    enum mlb_http_auth http_auth;       /* only with [auth] mode other than off */
    struct mlb_listen_list http_listen; /* count 0: no admin listener */
    int http_max_connections;
    int http_timeout_ms;
    /* [auth] (auth.c). Name lists are comma-separated, "" when unset. */
    char admin_users[MLB_NAME_LIST_MAX];    /* user@db names allowed to run mongolbStatus */
    char allow_commands[MLB_NAME_LIST_MAX]; /* when set, the only commands passed on */
    char *auth_file;                        /* verifiers of the users apps log in as */
    char deny_commands[MLB_NAME_LIST_MAX];  /* commands answered locally with 13 */
    int login_failure_delay_ms;             /* the longest delay of a failed login's reply */
    int max_cached_users;
    int max_pool_size_per_user; /* 0: max_pool_size */
    enum mlb_auth_mode auth_mode;
    char service_auth_source[MLB_AUTH_NAME_MAX];
    enum mlb_service_mech service_mechanism;
    char *service_password_file;
    char service_user[MLB_AUTH_NAME_MAX];
    int verifier_cache_ms; /* passthrough: how long a usersInfo answer serves logins; 0 never */
};

/* config_key.flags */
#define CONFIG_RELOADABLE 0x1u /* a reload (SIGHUP) may change it without a restart */
#define CONFIG_REQUIRED   0x2u /* the file must set it */
#define CONFIG_RAW        0x4u /* ';' is part of the value, so the line takes no inline comment */

struct config_type;
struct config_enum;

/* One row of the key table. type, offset, min, max and enums are for config.c's own use. */
struct config_key {
    const char *section;
    const char *name;
    const struct config_type *type;
    size_t offset; /* into struct mlb_config */
    const char *default_value;
    unsigned flags;
    long long min, max; /* whole-number keys: the accepted range */
    const struct config_enum *enums;
    const char *doc;
};

/* Fills c with every key's default. Allocates nothing, so config_free(c) is optional after it. */
void config_defaults(struct mlb_config *c);

/*
 * Parses the ini file at path into c (starting from the defaults; c's previous contents are
 * overwritten, not freed). Returns 0, or a negative errno code with every error found written to
 * err, one per line, without a trailing newline, as many as fit in err_len: -EINVAL for bad
 * content (a NUL byte included, as "FILE:LINE: ..."), -EFBIG for a file larger than 1 MiB (read
 * no further than that, so that a device or pipe that never ends is refused too), -ENOENT and
 * friends ("cannot open FILE: No such file or directory") when the file cannot be read. On error c
 * holds the defaults and owns nothing.
 */
int config_load_file(const char *path, struct mlb_config *c, char *err, size_t err_len);

/* Same as config_load_file() for ini text in memory; errors name it name_for_errors. */
int config_load_string(const char *text, const char *name_for_errors, struct mlb_config *c,
                       char *err, size_t err_len);

/* Frees what parsing allocated and leaves c empty but safe to free again. */
void config_free(struct mlb_config *c);

/* Writes the effective configuration to f as ini text: every key, in table order. */
void config_dump(const struct mlb_config *c, FILE *f);

/*
 * Compares a running configuration with a newly loaded one for a reload. Returns 0 if every key
 * that differs is reloadable, else -EINVAL with one line per key that needs a restart in err.
 */
int config_check_reload(const struct mlb_config *running, const struct mlb_config *loaded,
                        char *err, size_t err_len);

/*
 * What a reload reports for one key whose value differs: its row, the running and the loaded
 * value as the file writes them, and whether the running value was kept (the key needs a
 * restart). Path values are shown; no key holds a secret itself.
 */
typedef void (*config_change_fn)(void *ctx, const struct config_key *k, const char *from,
                                 const char *to, bool kept);

/*
 * Prepares a reload that applies what it can: every key that needs a restart and differs gets the
 * running value back in loaded (reported with kept true), so that loaded then holds what the
 * process will run with. The result is checked as a whole, as a file is (a reloadable key may
 * depend on one that was kept, e.g. an [upstream] tls_* key on tls); if it does not hold together
 * the error is in err and -EINVAL is returned, and the caller keeps the running configuration.
 * Returns the number of keys kept, or a negative errno code.
 */
int config_reload_merge(const struct mlb_config *running, struct mlb_config *loaded,
                        config_change_fn report, void *ctx, char *err, size_t err_len);

/* Reports every key whose value differs between a and b (kept false), in table order. Returns
 * how many, or -ENOMEM. */
int config_diff(const struct mlb_config *a, const struct mlb_config *b, config_change_fn report,
                void *ctx);

/* The key table, for documentation and tests. config_key_at returns NULL past the end. */
size_t config_key_count(void);
const struct config_key *config_key_at(size_t i);

/*
 * Parses "host", "host:port", "[v6]" or "[v6]:port" into host (brackets removed) and port. A
 * missing port takes default_port; a negative default_port makes the port required. Returns 0,
 * -EINVAL for a malformed address, or -ENAMETOOLONG if the host does not fit in host_len.
 */
int config_parse_hostport(const char *s, int default_port, char *host, size_t host_len, int *port);

/*
 * Fills out, topology's form of a read preference, with the configured default: the mode of
 * read_preference, max_staleness_seconds (-1 for no limit), and the sets and tags of
 * read_preference_tags copied exactly, a trailing empty set included. Returns 0, or -EINVAL if
 * something cannot be represented there (too many sets or tags, a name or value too long, an
 * unknown mode), which a configuration that loaded cleanly never has; out is then primary with no
 * tags and no staleness limit. Declared with struct read_pref incomplete, so that this header does
 * not pull in topology.h and libbson; callers include topology.h.
 */
struct read_pref;
int config_default_read_pref(const struct mlb_config *c, struct read_pref *out);

/*
 * Names of enum values, for logs: "mongos", "replicaset"; "primary", "secondaryPreferred", ...;
 * "disabled", "allow", "prefer", "require"; "none", "optional", "required".
 */
const char *config_mode_name(enum mlb_mode m);
const char *config_read_pref_name(enum mlb_read_pref r);
const char *config_tls_mode_name(enum mlb_tls_mode m);
const char *config_tls_client_certs_name(enum mlb_tls_client_certs c);
const char *config_auth_mode_name(enum mlb_auth_mode m);
const char *config_service_mech_name(enum mlb_service_mech m);

/* True when name is an item of the comma-separated list (exact, case-sensitive; blanks around
 * items ignored). */
int config_list_has(const char *list, const char *name);

#endif
