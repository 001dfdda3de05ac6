/*
 * config.c: the key table, the ini parser built on inih, validation, dump and reload check.
 * See config.h.
 *
 * How a file is read: config_load_file() reads it whole into memory, at most 1 MiB and with no NUL
 * byte, and hands it to the same path as config_load_string(); inih never reads a file itself.
 * inih pulls lines through read_line(), which keeps the whole physical line in
 * the load context, counts it (Debian's inih is built without INI_HANDLER_LINENO), classifies it
 * the way inih will (blank, comment, section, key, continuation, syntax error), and hands inih a
 * copy cut to inih's buffer. inih then calls on_key() with the section and key name; on_key()
 * takes the value from the full line, so a value longer than inih's 200-byte line buffer is not
 * lost, and a key flagged CONFIG_RAW keeps its ';' characters instead of losing them to inih's
 * inline-comment rule. A value is parsed when the next non-continuation line arrives, because
 * list values may go on over indented lines.
 *
 * Errors are collected with their line numbers and sorted before they are written out, so the
 * caller sees them in file order however they were found.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>

#include "topology.h"

/* The largest file config_load_file() reads; real configurations are a few kilobytes. */
#define CONFIG_FILE_MAX (1024 * 1024)

/*
 * Values end up in fixed-size topology structures, which would cut anything longer without a
 * word, so the parser refuses what they cannot hold. A tag name or value must fit in struct
 * server_tag, and the replica set name in the field where the monitor keeps the setName each
 * member reports (a longer configured name could never equal a reported one).
 */
#define TAG_TEXT_MAX     (sizeof(((struct server_tag *)0)->name) - 1)
#define REPLSET_NAME_CAP (sizeof(((struct server *)0)->set_name))

_Static_assert(sizeof(((struct server_tag *)0)->value) == TAG_TEXT_MAX + 1,
               "tag names and values have the same room");
_Static_assert(REPLSET_NAME_CAP <= MLB_REPLSET_MAX &&
                   REPLSET_NAME_CAP <= sizeof(((struct topology *)0)->set_name),
               "the replica set name fits the configuration and the topology");
_Static_assert(MLB_HOST_MAX <= sizeof(((struct server *)0)->host),
               "a seed's host name fits in struct server");
_Static_assert(MLB_MAX_SEEDS <= TOPOLOGY_MAX_SERVERS, "every seed fits in the topology");

struct config_enum {
    const char *name;
    int value;
};

/*
 * How one type of value is handled. parse() reads a trimmed value into the field, replacing (and
 * freeing) what was there, or writes why it cannot into why and returns a negative errno code.
 * print() writes the field back as the text parse() reads. list_sep is the item separator of
 * list types, whose values may continue on indented lines; 0 for single values.
 */
struct config_type {
    int (*parse)(const struct config_key *k, const char *value, void *field, char *why,
                 size_t why_len);
    void (*print)(const struct config_key *k, const void *field, FILE *f);
    void (*free)(void *field);
    char list_sep;
};

/* ---- small string helpers ---- */

/* Returns s without leading white space. */
static const char *skip_space(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return s;
}

/* Cuts trailing white space off s in place and returns s. */
static char *trim_end(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/*
 * Returns the first character of s that is in chars (may be NULL), or the start of an inline
 * comment (a ';' after white space), or the terminating NUL: the same scan inih makes, so that
 * this file and inih agree about every line.
 */
static const char *find_chars_or_comment(const char *s, const char *chars)
{
    bool was_space = false;
    while (*s && (!chars || !strchr(chars, *s)) && !(was_space && *s == ';')) {
        was_space = isspace((unsigned char)*s);
        s++;
    }
    return s;
}

/*
 * Splits the next sep-separated item off *p and trims it. Returns false when *p is used up.
 * An empty string yields one empty item; a trailing separator yields a final empty item.
 */
static bool next_item(const char **p, char sep, const char **item, size_t *len)
{
    const char *s = *p;
    if (!s)
        return false;
    const char *e = strchr(s, sep);
    const char *end = e ? e : s + strlen(s);
    *p = e ? e + 1 : NULL;
    s = skip_space(s);
    if (s > end)
        s = end;
    while (end > s && isspace((unsigned char)end[-1]))
        end--;
    *item = s;
    *len = (size_t)(end - s);
    return true;
}

/* Parses an optional '-' and decimal digits, nothing else. Returns 0, -EINVAL or -ERANGE. */
static int parse_whole(const char *s, long long *out)
{
    const char *d = s[0] == '-' ? s + 1 : s;
    if (!*d)
        return -EINVAL;
    for (const char *q = d; *q; q++)
        if (!isdigit((unsigned char)*q))
            return -EINVAL;
    errno = 0;
    long long n = strtoll(s, NULL, 10);
    if (errno == ERANGE)
        return -ERANGE;
    *out = n;
    return 0;
}

/* ---- addresses ---- */

static bool is_name_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '.' || ch == '-' || ch == '_';
}

/* True if s (length n) is an IPv6 literal as written inside brackets, with an optional %zone. */
static bool is_v6_literal(const char *s, size_t n)
{
    size_t i = 0;
    bool colon = false;
    for (; i < n && s[i] != '%'; i++) {
        if (s[i] == ':')
            colon = true;
        else if (!isxdigit((unsigned char)s[i]) && s[i] != '.')
            return false;
    }
    if (!colon)
        return false;
    if (i < n) {
        if (++i == n)
            return false;
        for (; i < n; i++)
            if (!is_name_char(s[i]))
                return false;
    }
    return true;
}

/* Parses a decimal port 1-65535 from s (length n). Returns 0 or -EINVAL. */
static int parse_port(const char *s, size_t n, int *port)
{
    if (n == 0 || n > 5)
        return -EINVAL;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -EINVAL;
    *port = v;
    return 0;
}

/* config_parse_hostport() with a reason for the failure written to why. */
static int hostport(const char *s, int default_port, char *host, size_t host_len, int *port,
                    char *why, size_t why_len)
{
    const char *h, *rest;
    size_t hn;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close) {
            snprintf(why, why_len, "'%s' has no closing ']'", s);
            return -EINVAL;
        }
        h = s + 1;
        hn = (size_t)(close - h);
        rest = close + 1;
        if (!is_v6_literal(h, hn)) {
            snprintf(why, why_len, "'%s' is not an IPv6 address in brackets", s);
            return -EINVAL;
        }
        if (*rest && *rest != ':') {
            snprintf(why, why_len, "'%s' has text after ']' that is not ':port'", s);
            return -EINVAL;
        }
    } else {
        const char *colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':')) {
            snprintf(why, why_len, "'%s': an IPv6 address needs brackets, as in [::1]:27017", s);
            return -EINVAL;
        }
        h = s;
        hn = colon ? (size_t)(colon - s) : strlen(s);
        rest = s + hn;
        bool ok = hn > 0;
        for (size_t i = 0; i < hn && ok; i++)
            ok = is_name_char(h[i]);
        if (!ok) {
            snprintf(why, why_len, "'%s' is not a valid host name or address", s);
            return -EINVAL;
        }
    }
    if (hn >= host_len) {
        snprintf(why, why_len, "'%s': the host name is longer than %zu characters", s,
                 host_len - 1);
        return -ENAMETOOLONG;
    }
    int p = default_port;
    if (*rest == ':') {
        if (parse_port(rest + 1, strlen(rest + 1), &p) < 0) {
            snprintf(why, why_len, "'%s' has a bad port; a port is a whole number from 1 to 65535",
                     s);
            return -EINVAL;
        }
    } else if (default_port < 0) {
        snprintf(why, why_len, "'%s' has no port; write host:port", s);
        return -EINVAL;
    }
    memcpy(host, h, hn);
    host[hn] = '\0';
    *port = p;
    return 0;
}

int config_parse_hostport(const char *s, int default_port, char *host, size_t host_len, int *port)
{
    char why[1];
    return hostport(s, default_port, host, host_len, port, why, sizeof(why));
}

/* Writes host:port, bracketing an IPv6 literal. */
static void print_hostport(const char *host, int port, FILE *f)
{
    fprintf(f, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

/* ---- value types ---- */

/* Whole numbers in [k->min, k->max], stored in an int. */
static int parse_int(const struct config_key *k, const char *v, void *field, char *why,
                     size_t why_len)
{
    long long n = 0;
    int r = parse_whole(v, &n);
    if (r == -EINVAL) {
        snprintf(why, why_len, "'%s' is not a whole number", v);
        return r;
    }
    if (r < 0 || n < k->min || n > k->max) {
        snprintf(why, why_len, "'%s' is out of range (%lld to %lld)", v, k->min, k->max);
        return -ERANGE;
    }
    *(int *)field = (int)n;
    return 0;
}

static void print_int(const struct config_key *k, const void *field, FILE *f)
{
    fprintf(f, "%d", *(const int *)field);
}

static const struct config_type type_int = {parse_int, print_int, NULL, 0};

/* One of the names in k->enums, stored as its value in an enum field. */
static int parse_enum(const struct config_key *k, const char *v, void *field, char *why,
                      size_t why_len)
{
    for (const struct config_enum *e = k->enums; e->name; e++) {
        if (strcmp(v, e->name) == 0) {
            *(int *)field = e->value;
            return 0;
        }
    }
    int n = snprintf(why, why_len, "'%s' is not one of:", v);
    for (const struct config_enum *e = k->enums; e->name && n >= 0 && (size_t)n < why_len; e++)
        n += snprintf(why + n, why_len - (size_t)n, "%s %s", e == k->enums ? "" : ",", e->name);
    return -EINVAL;
}

/* The name an enum table gives value v, or NULL when it gives none. */
static const char *find_enum_name(const struct config_enum *names, int v)
{
    for (const struct config_enum *e = names; e->name; e++)
        if (e->value == v)
            return e->name;
    return NULL;
}

static void print_enum(const struct config_key *k, const void *field, FILE *f)
{
    const char *name = find_enum_name(k->enums, *(const int *)field);
    if (name)
        fputs(name, f);
}

static const struct config_type type_enum = {parse_enum, print_enum, NULL, 0};

/* A log level, through log.h so the names stay those the logger knows. */
static int parse_log_level(const struct config_key *k, const char *v, void *field, char *why,
                           size_t why_len)
{
    if (log_level_parse(v, (enum log_level *)field) < 0) {
        snprintf(why, why_len, "'%s' is not one of: error, warn, info, debug", v);
        return -EINVAL;
    }
    return 0;
}

static void print_log_level(const struct config_key *k, const void *field, FILE *f)
{
    fputs(log_level_name(*(const enum log_level *)field), f);
}

static const struct config_type type_log_level = {parse_log_level, print_log_level, NULL, 0};

/* Permission bits written in octal, as chmod takes them ("0660" or "660"), up to k->max. */
static int parse_octal(const struct config_key *k, const char *v, void *field, char *why,
                       size_t why_len)
{
    long long n = 0;
    const char *s = v;
    for (; *s >= '0' && *s <= '7' && n <= k->max; s++)
        n = n * 8 + (*s - '0');
    if (s == v || *s != '\0' || n > k->max) {
        snprintf(why, why_len, "'%s' is not an octal mode from 0 to %04llo (e.g. 0660)", v, k->max);
        return -EINVAL;
    }
    *(int *)field = (int)n;
    return 0;
}

static void print_octal(const struct config_key *k, const void *field, FILE *f)
{
    fprintf(f, "%04o", (unsigned)*(const int *)field);
}

static const struct config_type type_octal = {parse_octal, print_octal, NULL, 0};

/* A string in a char array of k->max bytes. */
static int parse_string(const struct config_key *k, const char *v, void *field, char *why,
                        size_t why_len)
{
    size_t n = strlen(v);
    if (n >= (size_t)k->max) {
        snprintf(why, why_len, "'%s' is longer than %lld characters", v, k->max - 1);
        return -ENAMETOOLONG;
    }
    memcpy(field, v, n + 1);
    return 0;
}

static void print_string(const struct config_key *k, const void *field, FILE *f)
{
    fputs((const char *)field, f);
}

static const struct config_type type_string = {parse_string, print_string, NULL, 0};

/*
 * A boolean, stored as 0 or 1 in an int. true/false is what the dump writes; yes/no, on/off and
 * 1/0 are accepted too, in any case, since ini files in the wild use all of them.
 */
static int parse_bool(const struct config_key *k, const char *v, void *field, char *why,
                      size_t why_len)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *(int *)field = 1;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *(int *)field = 0;
            return 0;
        }
    }
    snprintf(why, why_len, "'%s' is not true or false (yes/no, on/off and 1/0 work too)", v);
    return -EINVAL;
}

static void print_bool(const struct config_key *k, const void *field, FILE *f)
{
    fputs(*(const int *)field ? "true" : "false", f);
}

static const struct config_type type_bool = {parse_bool, print_bool, NULL, 0};

/* Frees a path and leaves NULL, the unset value, in its place. */
static void free_path(void *field)
{
    char **p = field;
    free(*p);
    *p = NULL;
}

/*
 * A file's path, in a char * the configuration owns: NULL when the value is empty, so that users
 * of the configuration test one thing. At most k->max characters; the file itself is not looked
 * at here (tls.c reads it, and --check-config runs that too).
 */
static int parse_path(const struct config_key *k, const char *v, void *field, char *why,
                      size_t why_len)
{
    size_t n = strlen(v);
    if (n > (size_t)k->max) {
        snprintf(why, why_len, "the path is longer than %lld characters", k->max);
        return -ENAMETOOLONG;
    }
    char *copy = NULL;
    if (n > 0) {
        copy = strdup(v);
        if (!copy) {
            snprintf(why, why_len, "out of memory");
            return -ENOMEM;
        }
    }
    free_path(field);
    *(char **)field = copy;
    return 0;
}

static void print_path(const struct config_key *k, const void *field, FILE *f)
{
    const char *p = *(char *const *)field;
    if (p)
        fputs(p, f);
}

static const struct config_type type_path = {parse_path, print_path, free_path, 0};

/* Copies item (length n) into buf as a string; false if it does not fit. */
static bool copy_item(char *buf, size_t buf_len, const char *item, size_t n)
{
    if (n >= buf_len)
        return false;
    memcpy(buf, item, n);
    buf[n] = '\0';
    return true;
}

/*
 * Parses an IPv6 literal that may end in a %zone suffix: inet_pton() knows no such suffix, while
 * uv_ip6_addr() takes it as the scope, so it is dropped before the check.
 */
static bool parse_ipv6_scoped(const char *host, struct in6_addr *a6)
{
    char addr[INET6_ADDRSTRLEN];
    size_t n = strcspn(host, "%");
    if (n >= sizeof(addr))
        return false;
    memcpy(addr, host, n);
    addr[n] = '\0';
    return inet_pton(AF_INET6, addr, a6) == 1;
}

/*
 * Checks that a listen address's host (brackets removed) is an IP literal. The listener binds
 * with uv_ip4_addr() or uv_ip6_addr(), which never look a name up, so a host name would pass the
 * check and then fail at start. item is the address as written, for the message.
 */
static int check_listen_ip(const char *host, int port, const char *item, char *why, size_t why_len)
{
    if (strchr(host, ':')) {
        struct in6_addr a6;
        if (parse_ipv6_scoped(host, &a6))
            return 0;
        snprintf(why, why_len, "'%s' is not a valid IPv6 address", item);
        return -EINVAL;
    }
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return 0;
    if (strspn(host, "0123456789.") == strlen(host))
        snprintf(why, why_len, "'%s' is not a valid IPv4 address", item);
    else
        snprintf(why, why_len,
                 "'%s' is a host name, but listen takes an IP address; write 127.0.0.1:%d or "
                 "[::1]:%d",
                 item, port, port);
    return -EINVAL;
}

/* Listening addresses: host:port, [v6]:port or unix:/path, comma-separated. */
static int parse_listen(const struct config_key *k, const char *v, void *field, char *why,
                        size_t why_len)
{
    struct mlb_listen_list tmp;
    memset(&tmp, 0, sizeof(tmp));
    const char *p = v, *item;
    size_t n;
    char buf[MLB_HOST_MAX + 16];
    while (next_item(&p, ',', &item, &n)) {
        if (n == 0)
            continue;
        if (!copy_item(buf, sizeof(buf), item, n)) {
            if (n >= 5 && strncmp(item, "unix:", 5) == 0)
                snprintf(why, why_len, "'%.*s': a unix socket path has at most %d characters",
                         (int)n, item, MLB_UNIX_PATH_MAX - 1);
            else
                snprintf(why, why_len, "'%.*s': the host name is longer than %d characters", (int)n,
                         item, MLB_HOST_MAX - 1);
            return -ENAMETOOLONG;
        }
        if (tmp.count == MLB_MAX_LISTEN) {
            snprintf(why, why_len, "more than %d addresses", MLB_MAX_LISTEN);
            return -E2BIG;
        }
        struct mlb_listen_addr *a = &tmp.addr[tmp.count];
        if (strncmp(buf, "unix:", 5) == 0) {
            const char *path = buf + 5;
            if (path[0] != '/') {
                snprintf(why, why_len, "'%s': a unix socket path must be absolute", buf);
                return -EINVAL;
            }
            if (strlen(path) >= sizeof(a->path)) {
                snprintf(why, why_len, "'%s': a unix socket path has at most %zu characters", buf,
                         sizeof(a->path) - 1);
                return -ENAMETOOLONG;
            }
            a->kind = MLB_LISTEN_UNIX;
            strcpy(a->path, path);
        } else {
            int r = hostport(buf, -1, a->host, sizeof(a->host), &a->port, why, why_len);
            if (r == 0)
                r = check_listen_ip(a->host, a->port, buf, why, why_len);
            if (r < 0)
                return r;
            a->kind = MLB_LISTEN_TCP;
        }
        for (size_t i = 0; i < tmp.count; i++) {
            const struct mlb_listen_addr *b = &tmp.addr[i];
            if (b->kind == a->kind && strcmp(b->host, a->host) == 0 && b->port == a->port &&
                strcmp(b->path, a->path) == 0) {
                snprintf(why, why_len, "'%s' is listed twice", buf);
                return -EINVAL;
            }
        }
        tmp.count++;
    }
    if (tmp.count == 0) {
        snprintf(why, why_len, "no address given");
        return -EINVAL;
    }
    *(struct mlb_listen_list *)field = tmp;
    return 0;
}

static void print_listen(const struct config_key *k, const void *field, FILE *f)
{
    const struct mlb_listen_list *l = field;
    for (size_t i = 0; i < l->count; i++) {
        if (i)
            fputc(',', f);
        if (l->addr[i].kind == MLB_LISTEN_UNIX)
            fprintf(f, "unix:%s", l->addr[i].path);
        else
            print_hostport(l->addr[i].host, l->addr[i].port, f);
    }
}

static const struct config_type type_listen = {parse_listen, print_listen, NULL, ','};

/*
 * seeds = mongodb+srv://NAME (the initial DNS seedlist discovery specification): one host name,
 * without a port, credentials or options, which have keys of their own here. srv.c looks the
 * hosts up; the name is only checked for the shape of a DNS name.
 */
static int parse_srv_seed(const char *name, void *field, char *why, size_t why_len)
{
    size_t n = strlen(name);
    if (n > 0 && name[n - 1] == '/')
        n--;
    size_t bad = strcspn(name, "@/?,:");
    const char *what = bad >= n           ? NULL
                       : name[bad] == '@' ? "credentials do not belong in seeds"
                       : name[bad] == ',' ? "a mongodb+srv:// seed names one host"
                       : name[bad] == ':' ? "a mongodb+srv:// seed takes no port"
                                          : "options go in their own keys (srv_service_name, "
                                            "srv_max_hosts, tls, replica_set)";
    size_t label = 0;
    for (size_t i = 0; !what && i <= n; i++) {
        char ch = i < n ? name[i] : '.';
        if (ch == '.') {
            if (label == 0 || label > 63)
                what = "is not a DNS name (an empty label, or one longer than 63)";
            label = 0;
        } else if (!isalnum((unsigned char)ch) && ch != '-' && ch != '_') {
            what = "is not a DNS name (letters, digits, '-' and '_' between dots)";
        } else {
            label++;
        }
    }
    if (!what && n > 253)
        what = "is longer than a DNS name may be (253)";
    if (what) {
        snprintf(why, why_len, "'mongodb+srv://%s': %s", name, what);
        return -EINVAL;
    }
    struct mlb_seed_list *l = field;
    l->count = 0;
    memcpy(l->srv, name, n);
    l->srv[n] = '\0';
    return 0;
}

/* The same addresses, or none at all (an empty value turns the listener off). */
static int parse_listen_opt(const struct config_key *k, const char *v, void *field, char *why,
                            size_t why_len)
{
    if (*v == '\0') {
        memset(field, 0, sizeof(struct mlb_listen_list));
        return 0;
    }
    return parse_listen(k, v, field, why, why_len);
}

static const struct config_type type_listen_opt = {parse_listen_opt, print_listen, NULL, ','};

/* Servers: host[:port] or [v6][:port], comma-separated, port 27017 when left out; or
 * mongodb+srv://NAME. */
static int parse_seeds(const struct config_key *k, const char *v, void *field, char *why,
                       size_t why_len)
{
    static const char srv_scheme[] = "mongodb+srv://";
    if (strncasecmp(v, srv_scheme, sizeof(srv_scheme) - 1) == 0)
        return parse_srv_seed(v + sizeof(srv_scheme) - 1, field, why, why_len);
    /* The list is large (64 host names), so it is built in place of a heap copy. */
    struct mlb_seed_list *tmp = calloc(1, sizeof(*tmp));
    if (!tmp)
        return -ENOMEM;
    const char *p = v, *item;
    size_t n;
    char buf[MLB_HOST_MAX + 16];
    int r = 0;
    while (r == 0 && next_item(&p, ',', &item, &n)) {
        if (n == 0)
            continue;
        if (!copy_item(buf, sizeof(buf), item, n)) {
            snprintf(why, why_len, "'%.*s': the host name is longer than %d characters", (int)n,
                     item, MLB_HOST_MAX - 1);
            r = -ENAMETOOLONG;
        } else if (tmp->count == MLB_MAX_SEEDS) {
            snprintf(why, why_len, "more than %d servers", MLB_MAX_SEEDS);
            r = -E2BIG;
        } else {
            struct mlb_hostport *h = &tmp->host[tmp->count];
            r = hostport(buf, MLB_DEFAULT_PORT, h->host, sizeof(h->host), &h->port, why, why_len);
            /* Host names are case-insensitive; the topology merges such twins into one server. */
            for (size_t i = 0; r == 0 && i < tmp->count; i++) {
                if (strcasecmp(tmp->host[i].host, h->host) == 0 && tmp->host[i].port == h->port) {
                    snprintf(why, why_len, "'%s' is listed twice", buf);
                    r = -EINVAL;
                }
            }
            if (r == 0)
                tmp->count++;
        }
    }
    if (r == 0 && tmp->count == 0) {
        snprintf(why, why_len, "no server given");
        r = -EINVAL;
    }
    if (r == 0)
        *(struct mlb_seed_list *)field = *tmp;
    free(tmp);
    return r;
}

static void print_seeds(const struct config_key *k, const void *field, FILE *f)
{
    const struct mlb_seed_list *l = field;
    if (l->srv[0])
        fprintf(f, "mongodb+srv://%s", l->srv);
    for (size_t i = 0; i < l->count; i++) {
        if (i)
            fputc(',', f);
        print_hostport(l->host[i].host, l->host[i].port, f);
    }
}

static const struct config_type type_seeds = {parse_seeds, print_seeds, NULL, ','};

/* Frees the tag sets in *field and empties it. */
static void free_tags(void *field)
{
    struct mlb_tag_sets *ts = field;
    for (size_t i = 0; i < ts->count; i++) {
        for (size_t j = 0; j < ts->set[i].count; j++) {
            free(ts->set[i].tag[j].name);
            free(ts->set[i].tag[j].value);
        }
        free(ts->set[i].tag);
    }
    free(ts->set);
    ts->set = NULL;
    ts->count = 0;
}

/* Parses tag set number set_no (from 1), "name:value,name:value", into set (which starts empty). */
static int parse_tag_set(const char *text, size_t len, size_t set_no, struct mlb_tag_set *set,
                         char *why, size_t why_len)
{
    char *copy = strndup(text, len);
    if (!copy)
        return -ENOMEM;
    const char *p = copy, *item;
    size_t n;
    int r = 0;
    while (r == 0 && next_item(&p, ',', &item, &n)) {
        if (n == 0)
            continue;
        const char *colon = memchr(item, ':', n);
        const char *name = item, *value = colon ? colon + 1 : NULL;
        size_t name_len = colon ? (size_t)(colon - item) : 0;
        size_t value_len = colon ? n - name_len - 1 : 0;
        while (name_len > 0 && isspace((unsigned char)name[name_len - 1]))
            name_len--;
        while (value_len > 0 && isspace((unsigned char)*value)) {
            value++;
            value_len--;
        }
        if (name_len == 0 || value_len == 0) {
            snprintf(why, why_len, "'%.*s' is not a name:value tag", (int)n, item);
            r = -EINVAL;
            break;
        }
        if (name_len > TAG_TEXT_MAX) {
            snprintf(why, why_len, "tag name '%.*s' is longer than %zu bytes", (int)name_len, name,
                     TAG_TEXT_MAX);
            r = -EINVAL;
            break;
        }
        if (value_len > TAG_TEXT_MAX) {
            snprintf(why, why_len, "the value of tag '%.*s' is longer than %zu bytes",
                     (int)name_len, name, TAG_TEXT_MAX);
            r = -EINVAL;
            break;
        }
        if (set->count == TOPOLOGY_MAX_TAGS) {
            snprintf(why, why_len, "tag set %zu has more than %d tags", set_no, TOPOLOGY_MAX_TAGS);
            r = -EINVAL;
            break;
        }
        for (size_t i = 0; i < set->count; i++) {
            if (strlen(set->tag[i].name) == name_len &&
                memcmp(set->tag[i].name, name, name_len) == 0) {
                snprintf(why, why_len, "tag '%.*s' appears twice in one tag set", (int)name_len,
                         name);
                r = -EINVAL;
            }
        }
        if (r < 0)
            break;
        struct mlb_tag *grown = realloc(set->tag, (set->count + 1) * sizeof(*grown));
        if (!grown) {
            r = -ENOMEM;
            break;
        }
        set->tag = grown;
        struct mlb_tag *t = &set->tag[set->count];
        t->name = strndup(name, name_len);
        t->value = strndup(value, value_len);
        set->count++;
        if (!t->name || !t->value)
            r = -ENOMEM;
    }
    free(copy);
    return r;
}

/* Tag sets: ';' between sets, ',' between tags, ':' between a tag's name and value. */
static int parse_tags(const struct config_key *k, const char *v, void *field, char *why,
                      size_t why_len)
{
    struct mlb_tag_sets tmp = {NULL, 0};
    const char *p = *v ? v : NULL, *piece;
    size_t n;
    int r = 0;
    while (r == 0 && next_item(&p, ';', &piece, &n)) {
        if (tmp.count == READ_PREF_MAX_SETS) {
            snprintf(why, why_len, "more than %d tag sets (an empty last set counts as one)",
                     READ_PREF_MAX_SETS);
            r = -EINVAL;
            break;
        }
        struct mlb_tag_set *grown = realloc(tmp.set, (tmp.count + 1) * sizeof(*grown));
        if (!grown) {
            r = -ENOMEM;
            break;
        }
        tmp.set = grown;
        tmp.set[tmp.count].tag = NULL;
        tmp.set[tmp.count].count = 0;
        tmp.count++;
        r = parse_tag_set(piece, n, tmp.count, &tmp.set[tmp.count - 1], why, why_len);
    }
    for (size_t i = 0; r == 0 && i + 1 < tmp.count; i++) {
        if (tmp.set[i].count == 0) {
            snprintf(why, why_len,
                     "tag set %zu is empty; an empty set matches every server, so only the last "
                     "set may be empty",
                     i + 1);
            r = -EINVAL;
        }
    }
    if (r == -ENOMEM)
        snprintf(why, why_len, "out of memory");
    if (r < 0) {
        free_tags(&tmp);
        return r;
    }
    free_tags(field);
    *(struct mlb_tag_sets *)field = tmp;
    return 0;
}

static void print_tags(const struct config_key *k, const void *field, FILE *f)
{
    const struct mlb_tag_sets *ts = field;
    for (size_t i = 0; i < ts->count; i++) {
        if (i)
            fputc(';', f);
        for (size_t j = 0; j < ts->set[i].count; j++)
            fprintf(f, "%s%s:%s", j ? "," : "", ts->set[i].tag[j].name, ts->set[i].tag[j].value);
    }
}

static const struct config_type type_tags = {parse_tags, print_tags, free_tags, ';'};

/* A list of compressors in order of preference (compress.h): zstd, snappy, zlib. */
static int parse_compressors(const struct config_key *k, const char *v, void *field, char *why,
                             size_t why_len)
{
    struct compress_list l;
    if (compress_parse_list(v, &l, why, why_len) < 0)
        return -EINVAL;
    for (int i = 0; i < l.n; i++) {
        if (l.id[i] == COMPRESSOR_NOOP) {
            snprintf(why, why_len, "'noop' is for tests only; name zstd, snappy or zlib");
            return -EINVAL;
        }
    }
    *(struct compress_list *)field = l;
    return 0;
}

static void print_compressors(const struct config_key *k, const void *field, FILE *f)
{
    char buf[64];
    compress_format_list(field, buf, sizeof(buf));
    fputs(buf, f);
}

static const struct config_type type_compressors = {parse_compressors, print_compressors, NULL,
                                                    ','};

/* ---- the key table ---- */

static const struct config_enum mode_names[] = {
    {"mongos", MLB_MODE_MONGOS},
    {"replicaset", MLB_MODE_REPLICASET},
    {NULL, 0},
};

static const struct config_enum read_pref_names[] = {
    {"primary", MLB_READ_PRIMARY},     {"primaryPreferred", MLB_READ_PRIMARY_PREFERRED},
    {"secondary", MLB_READ_SECONDARY}, {"secondaryPreferred", MLB_READ_SECONDARY_PREFERRED},
    {"nearest", MLB_READ_NEAREST},     {NULL, 0},
};

static const struct config_enum log_format_names[] = {
    {"text", LOG_FORMAT_TEXT},
    {"json", LOG_FORMAT_JSON},
    {NULL, 0},
};

static const struct config_enum tls_mode_names[] = {
    {"disabled", MLB_TLS_DISABLED},
    {"allow", MLB_TLS_ALLOW},
    {"prefer", MLB_TLS_PREFER},
    {"require", MLB_TLS_REQUIRE},
    {NULL, 0},
};

static const struct config_enum tls_client_certs_names[] = {
    {"none", MLB_TLS_CERTS_NONE},
    {"optional", MLB_TLS_CERTS_OPTIONAL},
    {"required", MLB_TLS_CERTS_REQUIRED},
    {NULL, 0},
};

static const struct config_enum auth_mode_names[] = {
    {"off", MLB_AUTH_OFF},
    {"service", MLB_AUTH_SERVICE},
    {"passthrough", MLB_AUTH_PASSTHROUGH},
    {NULL, 0},
};

static const struct config_enum http_auth_names[] = {
    {"basic", MLB_HTTP_AUTH_BASIC},
    {"none", MLB_HTTP_AUTH_NONE},
    {NULL, 0},
};

static const struct config_enum service_mech_names[] = {
    {"SCRAM-SHA-256", MLB_SVC_SCRAM_SHA_256},
    {"SCRAM-SHA-1", MLB_SVC_SCRAM_SHA_1},
    {"MONGODB-X509", MLB_SVC_X509},
    {NULL, 0},
};

/* The longest path a path key takes: PATH_MAX less the NUL, the most open() accepts. */
#define PATH_KEY_MAX (PATH_MAX - 1)

/* A row whose key name is the name of its struct mlb_config field. */
#define ROW(section, field, type, def, flags, min, max, enums, doc)                                \
    {                                                                                              \
        section, #field, &type, offsetof(struct mlb_config, field), def, flags, min, max, enums,   \
            doc                                                                                    \
    }

/*
 * A row whose key name differs from its field's: [upstream] tls_ca_file lives in
 * upstream_tls_ca_file, since [mongolb] has a tls_ca_file of its own.
 */
#define ROW_AS(section, name, field, type, def, flags, min, max, enums, doc)                       \
    {                                                                                              \
        section, name, &type, offsetof(struct mlb_config, field), def, flags, min, max, enums, doc \
    }

#define RELOAD CONFIG_RELOADABLE

/* Grouped by section, alphabetical inside each section (a test checks the order). */
static const struct config_key keys[] = {
    ROW("mongolb", client_frame_timeout_ms, type_int, "30000", RELOAD, 100, INT_MAX, NULL,
        "Once a client starts sending a frame, all of it must arrive within this, or the "
        "connection is closed (slow senders)."),
    ROW("mongolb", client_idle_timeout_ms, type_int, "0", RELOAD, 0, INT_MAX, NULL,
        "A client connection that sends no request for this long is closed; 0 keeps idle "
        "clients forever."),
    ROW("mongolb", client_write_timeout_ms, type_int, "30000", RELOAD, 100, INT_MAX, NULL,
        "A client must take each reply within this, or it is closed and its server connection "
        "freed (slow readers)."),
    ROW("mongolb", compressors, type_compressors, "zstd,snappy,zlib", RELOAD, 0, 0, NULL,
        "Compressors offered to applications that ask for compression in their hello, in order of "
        "preference (zstd, snappy, zlib; empty for none); a client that does not ask is never "
        "compressed."),
    ROW("mongolb", error_log_limit, type_int, "10", RELOAD, 0, INT_MAX, NULL,
        "Warnings for errors mongolb returns to applications, at most this many per error code "
        "per 10 seconds, then one line counting those suppressed; 0 for no limit."),
    ROW("mongolb", listen, type_listen, "127.0.0.1:27016", 0, 0, 0, NULL,
        "Addresses to accept client connections on, comma-separated (at most 16): ipv4:port, "
        "[ipv6]:port or unix:/path.sock; IP addresses, not host names."),
    ROW("mongolb", log_format, type_enum, "text", RELOAD, 0, 0, log_format_names,
        "text (one line per event: time, level, [connection], message) or json (one object per "
        "line: ts, level, conn, msg and the event's fields)."),
    ROW("mongolb", log_level, type_log_level, "info", RELOAD, 0, 0, NULL,
        "The least severe messages logged: error, warn, info or debug."),
    ROW("mongolb", max_buffer_bytes, type_int, "268435456", RELOAD, 1048576, INT_MAX, NULL,
        "Bytes that all client and server connections together may hold in buffers (at least "
        "1048576); a connection that would need more is not read from until others release "
        "theirs."),
    ROW("mongolb", max_clients, type_int, "10000", RELOAD, 1, INT_MAX, NULL,
        "Client connections accepted at once; further ones are refused with a log line."),
    ROW("mongolb", max_message_bytes, type_int, "48000000", RELOAD, 1048576, 48000000, NULL,
        "The largest frame a client may send, from 1048576 to 48000000 bytes; a larger one "
        "closes that client's connection with a log line."),
    ROW("mongolb", shutdown_timeout_ms, type_int, "10000", RELOAD, 0, INT_MAX, NULL,
        "On SIGTERM, how long requests in flight may take before mongolb exits."),
    ROW("mongolb", slow_request_ms, type_int, "0", RELOAD, 0, INT_MAX, NULL,
        "Requests that take at least this long get an info line (command, namespace, server, "
        "duration, outcome; never documents); 0 turns it off; awaitData getMores are left out."),
    ROW("mongolb", tls_ca_file, type_path, "", RELOAD, 0, PATH_KEY_MAX, NULL,
        "PEM file of the CAs that sign client certificates: needed with tls_client_certificates "
        "= optional or required, and used for nothing else."),
    ROW("mongolb", tls_certificate_key_file, type_path, "", RELOAD, 0, PATH_KEY_MAX, NULL,
        "PEM file with the certificate (and its chain) and the unencrypted private key mongolb "
        "presents to applications; required unless tls_mode = disabled."),
    ROW("mongolb", tls_client_certificates, type_enum, "none", RELOAD, 0, 0, tls_client_certs_names,
        "Whether applications present a certificate signed by tls_ca_file: none (not asked for), "
        "optional (verified when sent) or required."),
    ROW("mongolb", tls_mode, type_enum, "disabled", 0, 0, 0, tls_mode_names,
        "TLS towards applications, as mongod's net.tls.mode: disabled (plaintext only), allow or "
        "prefer (TLS and plaintext on the same port), require (TLS only)."),
    ROW("mongolb", unix_socket_group, type_string, "", RELOAD, 0, MLB_GROUP_MAX, NULL,
        "The group (a name or a number) that owns the unix sockets of listen; empty for "
        "mongolb's own group. mongolb must be a member of it."),
    ROW("mongolb", unix_socket_mode, type_octal, "0660", RELOAD, 0, 0777, NULL,
        "The permissions of the unix sockets of listen, in octal: 0660 lets mongolb's user and "
        "unix_socket_group connect, 0666 every local user."),

    ROW_AS("upstream", "compressors", upstream_compressors, type_compressors, "", RELOAD, 0, 0,
           NULL,
           "Compressors offered to the servers in the hello of each new pooled connection, in "
           "order of preference (zstd, snappy, zlib); empty turns compression off."),
    ROW("upstream", connect_timeout_ms, type_int, "5000", RELOAD, 1, INT_MAX, NULL,
        "How long opening a connection to a server may take."),
    ROW("upstream", dns_server, type_string, "", 0, 0, 256, NULL,
        "With mongodb+srv:// seeds: the DNS servers (IP addresses, each with an optional port: "
        "10.0.0.2:53, [::1]:53; comma-separated) asked for the SRV "
        "and TXT records and the hosts' addresses, instead of the system's resolver; for tests "
        "and split DNS."),
    ROW("upstream", heartbeat_interval_ms, type_int, "1000", RELOAD, 500, INT_MAX, NULL,
        "How often each server is checked (at least 500)."),
    ROW("upstream", local_threshold_ms, type_int, "15", RELOAD, 0, INT_MAX, NULL,
        "Servers whose round-trip time is within this of the fastest one's share the load."),
    ROW("upstream", max_idle_time_ms, type_int, "600000", RELOAD, 0, INT_MAX, NULL,
        "A pooled server connection left idle this long is closed; 0 keeps idle connections "
        "forever."),
    ROW("upstream", max_lifetime_ms, type_int, "3600000", RELOAD, 0, INT_MAX, NULL,
        "A server connection older than this is closed when it next becomes idle; 0 for no "
        "limit."),
    ROW("upstream", max_pool_size, type_int, "100", RELOAD, 1, INT_MAX, NULL,
        "Connections to each server at most."),
    ROW("upstream", max_staleness_seconds, type_int, "-1", RELOAD, -1, INT_MAX, NULL,
        "Secondaries lagging further behind are not read from: -1 for no limit, else at least 90 "
        "and at least heartbeat_interval_ms/1000 + 10; not with read_preference = primary."),
    ROW("upstream", mode, type_enum, "mongos", 0, 0, 0, mode_names,
        "What the seeds are: mongos (routers of a sharded cluster) or replicaset (members of one "
        "replica set)."),
    ROW("upstream", read_preference, type_enum, "primary", RELOAD, 0, 0, read_pref_names,
        "Which members serve reads in replicaset mode: primary, primaryPreferred, secondary, "
        "secondaryPreferred or nearest."),
    ROW("upstream", read_preference_tags, type_tags, "", RELOAD | CONFIG_RAW, 0, 0, NULL,
        "Tag sets tried in order, at most 8 of at most 16 tags: ';' between sets, ',' between "
        "tags, name:value (e.g. dc:ny,rack:1;dc:ny;); an empty last set matches any server; not "
        "with primary."),
    ROW("upstream", replica_set, type_string, "", 0, 0, REPLSET_NAME_CAP, NULL,
        "The replica set's name (at most 63 characters): required with mode = replicaset, not "
        "allowed with mode = mongos."),
    ROW("upstream", request_timeout_ms, type_int, "0", RELOAD, 0, INT_MAX, NULL,
        "How long a request may wait for its server's reply; past it the server connection is "
        "closed and the client gets a network error. 0 for no limit; a command's own longer "
        "maxTimeMS is respected."),
    ROW("upstream", seeds, type_seeds, "", CONFIG_REQUIRED | RELOAD, 0, 0, NULL,
        "Required. The servers to route to, comma-separated (at most 64): host:port or "
        "[ipv6]:port, port 27017 when left out; or mongodb+srv://NAME, whose SRV and TXT records "
        "name them (a reload may change a list, not NAME)."),
    ROW("upstream", server_selection_timeout_ms, type_int, "30000", RELOAD, 1, INT_MAX, NULL,
        "How long a request waits for a suitable server before it fails."),
    ROW("upstream", srv_max_hosts, type_int, "0", 0, 0, MLB_MAX_SEEDS, NULL,
        "With mongodb+srv:// seeds in mode = mongos: use at most this many of the hosts the SRV "
        "records name, drawn at random; 0 for all (at most 64)."),
    ROW("upstream", srv_rescan_ms, type_int, "0", 0, 0, INT_MAX, NULL,
        "With mongodb+srv:// seeds in mode = mongos: how often the SRV records are polled again; "
        "0 follows their TTL, at least 60000."),
    ROW("upstream", srv_service_name, type_string, "mongodb", 0, 0, 64, NULL,
        "With mongodb+srv:// seeds: the SRV service name, queried as _NAME._tcp.HOST."),
    /* Linux refuses a keepalive idle time above 32767 seconds (MAX_TCP_KEEPIDLE). */
    ROW("upstream", tcp_keepalive_s, type_int, "120", RELOAD, 0, 32767, NULL,
        "TCP keepalive idle time, in seconds, on server connections (at most 32767); 0 turns "
        "keepalive off."),
    ROW("upstream", tcp_user_timeout_ms, type_int, "30000", RELOAD, 0, INT_MAX, NULL,
        "TCP_USER_TIMEOUT on server connections: data left unacknowledged this long fails the "
        "connection; 0 turns it off."),
    ROW_AS("upstream", "tls", upstream_tls, type_bool, "false", 0, 0, 0, NULL,
           "Connect to the servers over TLS: true or false (yes/no, on/off and 1/0 work too); the "
           "other [upstream] tls_* keys need it. With mongodb+srv:// seeds it is true unless set."),
    ROW_AS("upstream", "tls_allow_invalid_certificates", upstream_tls_allow_invalid_certificates,
           type_bool, "false", RELOAD, 0, 0, NULL,
           "Accept server certificates that fail verification (unknown CA, expired): for tests "
           "only, since anyone in the path could pose as a server; mongolb warns at start."),
    ROW_AS("upstream", "tls_allow_invalid_hostnames", upstream_tls_allow_invalid_hostnames,
           type_bool, "false", RELOAD, 0, 0, NULL,
           "Accept a server certificate issued for another host name: for tests only; mongolb "
           "warns at start."),
    ROW_AS("upstream", "tls_ca_file", upstream_tls_ca_file, type_path, "", RELOAD, 0, PATH_KEY_MAX,
           NULL,
           "PEM file of the CAs that sign the servers' certificates; when not set, the system's "
           "trust store."),
    ROW_AS("upstream", "tls_certificate_key_file", upstream_tls_certificate_key_file, type_path, "",
           RELOAD, 0, PATH_KEY_MAX, NULL,
           "PEM file with the client certificate (and its chain) and private key mongolb presents "
           "to the servers, for clusters that require one or MONGODB-X509."),
    ROW_AS("upstream", "tls_certificate_key_file_password",
           upstream_tls_certificate_key_file_password, type_path, "", RELOAD, 0, PATH_KEY_MAX, NULL,
           "The path of a file whose first line is the password of tls_certificate_key_file's "
           "encrypted key; never the password itself."),
    ROW("upstream", zlib_compression_level, type_int, "-1", RELOAD, -1, 9, NULL,
        "zlib's level when mongolb compresses with zlib, towards servers or clients: -1 (zlib's "
        "default, 6) or 0 to 9."),
    ROW("upstream", zstd_compression_level, type_int, "1", RELOAD, 1, 22, NULL,
        "zstd's level when mongolb compresses with zstd, towards servers or clients: 1 (fastest) "
        "to 22."),

    ROW("cursors", idle_timeout_ms, type_int, "600000", RELOAD, 1000, INT_MAX, NULL,
        "Cursors left unused this long are forgotten (at least 1000)."),
    ROW("cursors", max_cursors, type_int, "1000000", RELOAD, 1, INT_MAX, NULL,
        "Open cursors tracked at once at most."),

    ROW("admin", http_allow_remote, type_bool, "false", 0, 0, 0, NULL,
        "Allow http_listen on addresses other than loopback (127.0.0.0/8, ::1): the endpoints "
        "are plain HTTP (and have no authentication with [auth] mode = off), so only with a "
        "firewall in front."),
    ROW("admin", http_auth, type_enum, "basic", RELOAD, 0, 0, http_auth_names,
        "With [auth] mode = service or passthrough, /metrics and /readyz need HTTP Basic "
        "credentials of one of [auth] admin_users found in the auth_file (basic), or nothing "
        "(none: a loopback address or unix socket protected by other means). /healthz is always "
        "open. Ignored with mode = off."),
    ROW("admin", http_listen, type_listen_opt, "", 0, 0, 0, NULL,
        "Where to serve /metrics (Prometheus), /healthz and /readyz over HTTP: 127.0.0.1:port, "
        "[::1]:port or unix:/path, comma-separated; empty (the default) turns it off."),
    ROW("admin", http_max_connections, type_int, "16", RELOAD, 1, 1024, NULL,
        "Admin HTTP connections served at once (1 to 1024); further ones are closed at once "
        "with a log line."),
    ROW("admin", http_timeout_ms, type_int, "5000", RELOAD, 100, INT_MAX, NULL,
        "An admin HTTP request must arrive whole, and its response be taken, within this."),
    ROW("auth", admin_users, type_string, "", RELOAD, 0, MLB_NAME_LIST_MAX, NULL,
        "With mode = service or passthrough, the users (user@db, comma-separated) who may run "
        "mongolbStatus and, with [admin] http_auth = basic, read /metrics and /readyz; nobody "
        "else may."),
    ROW("auth", allow_commands, type_string, "", RELOAD, 0, MLB_NAME_LIST_MAX, NULL,
        "When set, the only commands (comma-separated, spelled as the command name) passed on to "
        "the servers; any other gets 13 Unauthorized from mongolb. getMore, killCursors and the "
        "handshake are always allowed."),
    ROW("auth", auth_file, type_path, "", RELOAD, 0, PATH_KEY_MAX, NULL,
        "File of SCRAM verifiers (mongolb --make-verifier makes a line): the users apps log in "
        "as; it must not be readable by group or others. Reloaded on SIGHUP."),
    ROW("auth", deny_commands, type_string, "", RELOAD, 0, MLB_NAME_LIST_MAX, NULL,
        "Commands (comma-separated, spelled as the command name) never passed on: mongolb "
        "answers them with 13 Unauthorized and a log line."),
    ROW("auth", login_failure_delay_ms, type_int, "2000", RELOAD, 0, 60000, NULL,
        "From the third failed login in a row from one address, the reply is delayed, 125 ms "
        "doubling per failure, up to this; 0 for no delay."),
    ROW("auth", max_cached_users, type_int, "1000", RELOAD, 1, 1000000, NULL,
        "Users whose verifier (and, in passthrough, recovered key) is kept in memory once no "
        "connection uses them, least recently used first out."),
    ROW("auth", max_pool_size_per_user, type_int, "0", RELOAD, 0, INT_MAX, NULL,
        "In passthrough mode, connections to each server logged in as one user at most; 0 for "
        "max_pool_size."),
    ROW_AS("auth", "mode", auth_mode, type_enum, "off", 0, 0, 0, auth_mode_names,
           "Authentication: off (apps send no credentials), service (apps log in with auth_file "
           "users, servers see service_user) or passthrough (apps log in as cluster users, and "
           "servers see the same user)."),
    ROW("auth", service_auth_source, type_string, "admin", 0, 0, MLB_AUTH_NAME_MAX, NULL,
        "The database service_user is defined in ($external for MONGODB-X509)."),
    ROW("auth", service_mechanism, type_enum, "SCRAM-SHA-256", 0, 0, 0, service_mech_names,
        "How service_user logs in: SCRAM-SHA-256, SCRAM-SHA-1 or MONGODB-X509 (with [upstream] "
        "tls_certificate_key_file)."),
    ROW("auth", service_password_file, type_path, "", RELOAD, 0, PATH_KEY_MAX, NULL,
        "File whose first line is service_user's password; it must not be readable by group or "
        "others."),
    ROW("auth", service_user, type_string, "", 0, 0, MLB_AUTH_NAME_MAX, NULL,
        "The user backend connections log in as in service mode; in passthrough, the user (with "
        "viewUser) that reads verifiers with usersInfo."),
    ROW("auth", verifier_cache_ms, type_int, "30000", RELOAD, 0, 86400000, NULL,
        "In passthrough with service_user, how long a verifier read with usersInfo serves later "
        "logins of its user without being read again; for that long at most an old password "
        "may still pass mongolb's own check after a password change or dropUser (a failed proof "
        "or a server refusing the key drops it sooner). 0 reads it for every login."),
};

#define KEY_COUNT (sizeof(keys) / sizeof(keys[0]))

size_t config_key_count(void)
{
    return KEY_COUNT;
}

const struct config_key *config_key_at(size_t i)
{
    return i < KEY_COUNT ? &keys[i] : NULL;
}

/* The name an enum table gives value v, or "?". */
static const char *enum_name(const struct config_enum *names, int v)
{
    const char *name = find_enum_name(names, v);
    return name ? name : "?";
}

const char *config_mode_name(enum mlb_mode m)
{
    return enum_name(mode_names, (int)m);
}

const char *config_read_pref_name(enum mlb_read_pref r)
{
    return enum_name(read_pref_names, (int)r);
}

const char *config_tls_mode_name(enum mlb_tls_mode m)
{
    return enum_name(tls_mode_names, (int)m);
}

const char *config_tls_client_certs_name(enum mlb_tls_client_certs c)
{
    return enum_name(tls_client_certs_names, (int)c);
}

const char *config_auth_mode_name(enum mlb_auth_mode m)
{
    return enum_name(auth_mode_names, (int)m);
}

const char *config_service_mech_name(enum mlb_service_mech m)
{
    return enum_name(service_mech_names, (int)m);
}

int config_list_has(const char *list, const char *name)
{
    size_t n = strlen(name);
    const char *s = list;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        const char *end = e;
        while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if ((size_t)(end - s) == n && n > 0 && memcmp(s, name, n) == 0)
            return 1;
        s = e;
    }
    return 0;
}

/* Maps the configured read preference onto topology's names for the same modes. */
static int read_mode_of(enum mlb_read_pref r, enum read_mode *out)
{
    switch (r) {
    case MLB_READ_PRIMARY:
        *out = READ_PRIMARY;
        return 0;
    case MLB_READ_PRIMARY_PREFERRED:
        *out = READ_PRIMARY_PREFERRED;
        return 0;
    case MLB_READ_SECONDARY:
        *out = READ_SECONDARY;
        return 0;
    case MLB_READ_SECONDARY_PREFERRED:
        *out = READ_SECONDARY_PREFERRED;
        return 0;
    case MLB_READ_NEAREST:
        *out = READ_NEAREST;
        return 0;
    }
    return -EINVAL;
}

/* Copies a tag's name or value into a struct server_tag field; false if it does not fit whole. */
static bool copy_tag_text(char *dst, size_t dst_len, const char *src)
{
    size_t n = strlen(src);
    if (n >= dst_len)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

/* Sets rp to the plain default: primary, no tag sets, no staleness limit. */
static void plain_read_pref(struct read_pref *rp)
{
    memset(rp, 0, sizeof(*rp));
    rp->mode = READ_PRIMARY;
    rp->max_staleness_s = -1;
}

/* Copies the tag sets ts into rp whole. Returns 0, or -EINVAL if they do not fit. */
static int copy_tag_sets(const struct mlb_tag_sets *ts, struct read_pref *rp)
{
    if (ts->count > READ_PREF_MAX_SETS)
        return -EINVAL;
    for (size_t i = 0; i < ts->count; i++) {
        const struct mlb_tag_set *from = &ts->set[i];
        struct read_tag_set *to = &rp->sets[i];
        if (from->count > TOPOLOGY_MAX_TAGS)
            return -EINVAL;
        for (size_t j = 0; j < from->count; j++) {
            if (!copy_tag_text(to->tags[j].name, sizeof(to->tags[j].name), from->tag[j].name) ||
                !copy_tag_text(to->tags[j].value, sizeof(to->tags[j].value), from->tag[j].value))
                return -EINVAL;
        }
        to->n = (int)from->count;
    }
    rp->n_sets = (int)ts->count;
    return 0;
}

int config_default_read_pref(const struct mlb_config *c, struct read_pref *out)
{
    plain_read_pref(out);
    enum read_mode mode;
    if (read_mode_of(c->read_preference, &mode) < 0 ||
        copy_tag_sets(&c->read_preference_tags, out) < 0) {
        /* Half a copy would select differently from the configuration; the plain default does
           not pretend to follow it. */
        plain_read_pref(out);
        return -EINVAL;
    }
    out->mode = mode;
    out->max_staleness_s = c->max_staleness_seconds;
    return 0;
}

/* Returns the address of k's value in c. */
static void *field_of(struct mlb_config *c, const struct config_key *k)
{
    return (char *)c + k->offset;
}

static const void *cfield_of(const struct mlb_config *c, const struct config_key *k)
{
    return (const char *)c + k->offset;
}

/* Returns the index of [section] name in the table, or -1. section may be unterminated. */
static int find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < KEY_COUNT; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* True if some key lives in the section named by the n bytes at s. */
static bool section_exists(const char *s, size_t n)
{
    for (size_t i = 0; i < KEY_COUNT; i++)
        if (strlen(keys[i].section) == n && memcmp(keys[i].section, s, n) == 0)
            return true;
    return false;
}

void config_defaults(struct mlb_config *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < KEY_COUNT; i++) {
        const struct config_key *k = &keys[i];
        char why[256];
        /* An empty default leaves the zeroed field: no listener, no seed, no tags, no name. */
        if (k->default_value[0] &&
            k->type->parse(k, k->default_value, field_of(c, k), why, sizeof(why)) < 0) {
            /* A bad default is a bug in the table above, and the unit tests catch it. */
            fprintf(stderr, "config: default of [%s] %s: %s\n", k->section, k->name, why);
            abort();
        }
    }
}

void config_free(struct mlb_config *c)
{
    for (size_t i = 0; i < KEY_COUNT; i++)
        if (keys[i].type->free)
            keys[i].type->free(field_of(c, &keys[i]));
}

/* ---- loading ---- */

struct load_error {
    int line; /* 0 for errors about the whole file, which sort last */
    char *text;
};

struct load_ctx {
    const char *name; /* the file's name in messages */
    const char *text; /* the rest of the source; files are read into memory first */

    char *line; /* the current physical line, whole */
    size_t line_cap;
    int lineno;
    bool continuation; /* the line continues the previous key's value (an indented line) */
    bool have_prev_key;

    struct mlb_config *c;
    int seen_line[KEY_COUNT]; /* where each key was set, 0 if not */
    bool failed[KEY_COUNT];   /* its value was rejected, so cross-checks skip it */

    int pending; /* the key whose value is being collected, or -1 to ignore continuations */
    int pending_line;
    char *pending_value;
    size_t pending_cap;

    struct load_error *errors;
    size_t error_count, error_cap;
    bool out_of_memory;
};

/* Records an error at line (0: none) as "NAME:LINE: text". */
static void add_error(struct load_ctx *x, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void add_error(struct load_ctx *x, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *text = NULL;
    int n = line > 0 ? asprintf(&text, "%s:%d: %s", x->name, line, msg)
                     : asprintf(&text, "%s: %s", x->name, msg);
    if (n < 0) {
        x->out_of_memory = true;
        return;
    }
    if (x->error_count == x->error_cap) {
        size_t cap = x->error_cap ? x->error_cap * 2 : 8;
        struct load_error *grown = realloc(x->errors, cap * sizeof(*grown));
        if (!grown) {
            free(text);
            x->out_of_memory = true;
            return;
        }
        x->errors = grown;
        x->error_cap = cap;
    }
    x->errors[x->error_count].line = line;
    x->errors[x->error_count].text = text;
    x->error_count++;
}

/* Records an error about key i at line, prefixed "[section] key: ". */
static void key_error(struct load_ctx *x, int line, int i, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void key_error(struct load_ctx *x, int line, int i, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    add_error(x, line, "[%s] %s: %s", keys[i].section, keys[i].name, msg);
    x->failed[i] = true;
}

/* Parses the collected value of the pending key, if any, into the configuration. */
static void flush_pending(struct load_ctx *x)
{
    if (x->pending < 0)
        return;
    int i = x->pending;
    x->pending = -1;
    char why[768];
    const char *v = x->pending_value ? x->pending_value : "";
    if (keys[i].type->parse(&keys[i], v, field_of(x->c, &keys[i]), why, sizeof(why)) < 0)
        key_error(x, x->pending_line, i, "%s", why);
}

/*
 * Sets the pending value to v (append false) or continues it with v (append true), joining list
 * items with the list's separator unless one is already at the seam. Returns 0 or -ENOMEM.
 */
static int collect_value(struct load_ctx *x, const char *v, bool append, char sep)
{
    size_t old = append && x->pending_value ? strlen(x->pending_value) : 0;
    size_t need = old + strlen(v) + 3;
    if (need > x->pending_cap) {
        char *grown = realloc(x->pending_value, need);
        if (!grown) {
            x->out_of_memory = true;
            return -ENOMEM;
        }
        x->pending_value = grown;
        x->pending_cap = need;
    }
    char *d = x->pending_value + old;
    if (append && old > 0) {
        bool seam = x->pending_value[old - 1] == sep || v[0] == sep;
        *d++ = seam ? ' ' : sep;
    }
    strcpy(d, v);
    return 0;
}

/*
 * Decides what the current line is, the way inih will, so that section headers and syntax errors
 * are reported with their line (inih itself reports only the first bad line), and so that on_key()
 * can tell a continuation line from a key line. A line that starts something new ends the value of
 * the key before it.
 */
static void classify_line(struct load_ctx *x)
{
    char *s = x->line;
    if (x->lineno == 1 && (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB &&
        (unsigned char)s[2] == 0xBF)
        s += 3;
    const char *start = skip_space(s);
    x->continuation = false;
    if (*start == '\0' || *start == ';' || *start == '#')
        return;
    if (x->have_prev_key && start > x->line) {
        x->continuation = true;
        return;
    }
    flush_pending(x);
    if (*start == '[') {
        const char *end = find_chars_or_comment(start + 1, "]");
        if (*end != ']') {
            add_error(x, x->lineno, "'%s' is not a section header: ']' is missing",
                      trim_end((char *)start));
        } else if (!section_exists(start + 1, (size_t)(end - start - 1))) {
            add_error(x, x->lineno,
                      "unknown section [%.*s]; the sections are [mongolb], "
                      "[upstream], [cursors], [admin] and [auth]",
                      (int)(end - start - 1), start + 1);
        }
        x->have_prev_key = false;
        return;
    }
    const char *end = find_chars_or_comment(start, "=:");
    if (*end != '=' && *end != ':') {
        add_error(x, x->lineno, "'%s' is not 'key = value', a [section] header or a comment",
                  trim_end((char *)start));
        return;
    }
    x->have_prev_key = true;
}

/* inih's reader: copies one physical line into x->line and gives inih a copy that fits num. */
static char *read_line(char *str, int num, void *stream)
{
    struct load_ctx *x = stream;
    if (!*x->text)
        return NULL;
    const char *nl = strchr(x->text, '\n');
    size_t n = nl ? (size_t)(nl - x->text) + 1 : strlen(x->text);
    if (n + 1 > x->line_cap) {
        char *grown = realloc(x->line, n + 1);
        if (!grown) {
            x->out_of_memory = true;
            return NULL;
        }
        x->line = grown;
        x->line_cap = n + 1;
    }
    memcpy(x->line, x->text, n);
    x->line[n] = '\0';
    x->text += n;
    /*
     * A line longer than inih's buffer would reach inih in pieces, each counted as a line of its
     * own. Cutting it keeps inih's count equal to ours; on_key() reads the value from x->line.
     */
    size_t cap = (size_t)num - 2;
    if (n <= cap + 1) {
        memcpy(str, x->line, n + 1);
    } else {
        memcpy(str, x->line, cap);
        str[cap] = '\n';
        str[cap + 1] = '\0';
    }
    x->lineno++;
    classify_line(x);
    return str;
}

/*
 * Returns the value on the current line, from the full line: after the first '=' or ':' on a key
 * line, the whole line on a continuation line; trimmed, and without an inline comment unless raw.
 * Modifies x->line.
 */
static const char *line_value(struct load_ctx *x, bool raw)
{
    char *v = (char *)skip_space(x->line);
    if (!x->continuation)
        v = (char *)find_chars_or_comment(v, "=:") + 1;
    if (!raw)
        *(char *)find_chars_or_comment(v, NULL) = '\0';
    return trim_end((char *)skip_space(v));
}

/*
 * Writes the sections that have a key called name into buf, as "[mongolb]" or "[mongolb] or
 * [upstream]" (tls_ca_file is in both). Returns how many there are.
 */
static int key_homes(const char *name, char *buf, size_t len)
{
    int found = 0;
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < KEY_COUNT; i++) {
        if (strcmp(keys[i].name, name) != 0)
            continue;
        int n = snprintf(buf + used, len - used, "%s[%s]", found ? " or " : "", keys[i].section);
        if (n > 0 && (size_t)n < len - used)
            used += (size_t)n;
        found++;
    }
    return found;
}

/* Handles a continuation line of the pending key. Returns inih's 1 (fine) or 0 (error). */
static int on_continuation(struct load_ctx *x)
{
    if (x->pending < 0)
        return 1; /* it continues an unknown or repeated key, which was reported already */
    int i = x->pending;
    const struct config_key *k = &keys[i];
    const char *v = line_value(x, (k->flags & CONFIG_RAW) != 0);
    if (strchr(v, '=')) {
        key_error(x, x->lineno, i,
                  "the indented line '%s' looks like a key; remove its indentation (an indented "
                  "line continues the value above it)",
                  v);
        x->pending = -1;
        return 0;
    }
    if (!k->type->list_sep) {
        key_error(x, x->lineno, i, "takes one value, but the indented line '%s' continues it", v);
        x->pending = -1;
        return 0;
    }
    return collect_value(x, v, true, k->type->list_sep) == 0;
}

/* inih's handler: one call per key line and per continuation line. Returns 1, or 0 on error. */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct load_ctx *x = user;
    (void)value; /* taken from the full line instead; see line_value() */
    if (x->continuation)
        return on_continuation(x);
    x->pending = -1;
    char home[64]; /* the sections a misplaced key belongs in, "[a]" or "[a] or [b]" */
    bool homeless = key_homes(name, home, sizeof(home)) == 0;
    if (!section[0]) {
        if (!homeless)
            add_error(x, x->lineno, "%s: key outside any section; put it under %s", name, home);
        else
            add_error(x, x->lineno, "%s: key outside any section", name);
        return 0;
    }
    if (!section_exists(section, strlen(section)))
        return 1; /* its section was reported; one error for the section is enough */
    int i = find_key(section, name);
    if (i < 0) {
        if (strcmp(section, "mongolb") == 0 &&
            strcmp(name, "tls_certificate_key_file_password") == 0)
            /* Moving it to [upstream] would be the wrong advice: it is a key of the other side. */
            add_error(x, x->lineno,
                      "[mongolb] %s: unknown key; the key mongolb presents to applications is "
                      "read unencrypted, so keep that file readable by mongolb alone",
                      name);
        else if (!homeless)
            add_error(x, x->lineno, "[%s] %s: unknown key; it belongs under %s", section, name,
                      home);
        else
            add_error(x, x->lineno, "[%s] %s: unknown key", section, name);
        return 0;
    }
    if (x->seen_line[i]) {
        key_error(x, x->lineno, i, "duplicate key (first set on line %d)", x->seen_line[i]);
        return 0;
    }
    x->seen_line[i] = x->lineno;
    x->pending = i;
    x->pending_line = x->lineno;
    return collect_value(x, line_value(x, (keys[i].flags & CONFIG_RAW) != 0), false, 0) == 0;
}

/* ---- cross-field validation, after parsing ---- */

/* True if the named key parsed cleanly (set or not), so rules that involve it may be checked. */
static bool usable(const struct load_ctx *x, const char *section, const char *name)
{
    int i = find_key(section, name);
    return i >= 0 && !x->failed[i];
}

/* Every CONFIG_REQUIRED key must be set. */
static void validate_required(struct load_ctx *x)
{
    for (size_t i = 0; i < KEY_COUNT; i++)
        if ((keys[i].flags & CONFIG_REQUIRED) && !x->seen_line[i] && !x->failed[i])
            key_error(x, 0, (int)i, "required key is missing");
}

/* replica_set is needed with mode = replicaset and makes no sense with mode = mongos. */
static void validate_replica_set(struct load_ctx *x)
{
    int i = find_key("upstream", "replica_set");
    if (!usable(x, "upstream", "mode") || x->failed[i])
        return;
    const struct mlb_config *c = x->c;
    /* With mongodb+srv:// seeds the name may come from the TXT record instead (srv.c). */
    if (c->mode == MLB_MODE_REPLICASET && !c->replica_set[0] && !c->seeds.srv[0]) {
        if (x->seen_line[i])
            key_error(x, x->seen_line[i], i, "is empty, but mode = replicaset needs the name");
        else
            key_error(x, 0, i, "required key is missing (mode = replicaset needs the name)");
    } else if (c->mode == MLB_MODE_MONGOS && c->replica_set[0]) {
        key_error(x, x->seen_line[i], i,
                  "'%s' is set, but mode = mongos; remove it or set mode = replicaset",
                  c->replica_set);
    }
}

/*
 * mongodb+srv:// seeds: TLS is on unless [upstream] tls says otherwise (the specification's
 * implicit tls=true); the srv_* keys and dns_server mean nothing without them, and srv_max_hosts
 * cannot limit the members of a replica set, as srvMaxHosts cannot be used with replicaSet.
 */
static char *value_text(const struct config_key *k, const struct mlb_config *c);

/*
 * dns_server: IP literals, each with an optional port (ADDR, ADDR:PORT, IPV6 or [IPV6]:PORT),
 * comma-separated. c-ares takes more (1.2.3 as 1.2.0.3, port 99999) and less (no spaces after a
 * comma) than a reader would guess, and a value it refuses would only be found at start, so the
 * value is checked here and kept without spaces, the form c-ares parses. Returns 0, or -EINVAL
 * with the reason in why.
 */
static int check_dns_server(char *v, char *why, size_t why_len)
{
    char out[sizeof(((struct mlb_config *)0)->dns_server)];
    size_t used = 0;
    const char *p = v, *item;
    size_t n;
    while (next_item(&p, ',', &item, &n)) {
        char buf[INET6_ADDRSTRLEN + 8], *addr = buf;
        if (n == 0) {
            snprintf(why, why_len, "an empty address between commas");
            return -EINVAL;
        }
        if (!copy_item(buf, sizeof(buf), item, n))
            goto bad;
        const char *port = NULL;
        int family = AF_INET;
        if (buf[0] == '[') {
            char *close = strchr(buf, ']');
            if (!close || close[1] != ':')
                goto bad;
            *close = '\0';
            addr = buf + 1;
            port = close + 2;
            family = AF_INET6;
        } else if (strchr(buf, ':') != strrchr(buf, ':')) {
            family = AF_INET6; /* IPv6 without a port */
        } else {
            char *colon = strchr(buf, ':');
            if (colon) {
                *colon = '\0';
                port = colon + 1;
            }
        }
        unsigned char bin[sizeof(struct in6_addr)];
        long long pn;
        if (inet_pton(family, addr, bin) != 1)
            goto bad;
        if (port && (parse_whole(port, &pn) < 0 || pn < 1 || pn > 65535))
            goto bad;
        used += (size_t)snprintf(out + used, sizeof(out) - used, "%s%.*s", used ? "," : "", (int)n,
                                 item);
        continue;
    bad:
        snprintf(why, why_len,
                 "'%.*s' is not an IP address with an optional port (127.0.0.1:53, [::1]:53)",
                 (int)n, item);
        return -EINVAL;
    }
    if (used < sizeof(out))
        memcpy(v, out, used + 1);
    return 0;
}

static void validate_srv(struct load_ctx *x)
{
    static const char *const srv_only[] = {"srv_max_hosts", "srv_rescan_ms", "srv_service_name",
                                           "dns_server"};
    struct mlb_config *c = x->c;
    int seeds = find_key("upstream", "seeds"), tls = find_key("upstream", "tls");
    if (x->failed[seeds])
        return;
    if (!c->seeds.srv[0]) {
        /* A value other than the default, that is: a dump writes every key. */
        for (size_t j = 0; j < sizeof(srv_only) / sizeof(srv_only[0]); j++) {
            int i = find_key("upstream", srv_only[j]);
            char *v = x->seen_line[i] && !x->failed[i] ? value_text(&keys[i], c) : NULL;
            if (v && strcmp(v, keys[i].default_value) != 0)
                key_error(x, x->seen_line[i], i, "only for seeds = mongodb+srv://NAME");
            free(v);
        }
        return;
    }
    if (!x->seen_line[tls])
        c->upstream_tls = 1;
    int svc = find_key("upstream", "srv_service_name");
    size_t n = strlen(c->srv_service_name);
    if (!x->failed[svc] &&
        (n == 0 || n > 62 ||
         strspn(c->srv_service_name,
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != n))
        key_error(x, x->seen_line[svc], svc,
                  "'%s' is not a service name (1 to 62 letters, digits and '-')",
                  c->srv_service_name);
    else if (!x->failed[svc] && n + strlen(c->seeds.srv) + 7 > 253)
        key_error(x, x->seen_line[seeds], seeds, "_%s._tcp.%s is longer than a DNS name may be",
                  c->srv_service_name, c->seeds.srv);
    int dns = find_key("upstream", "dns_server");
    char why[300];
    if (!x->failed[dns] && c->dns_server[0] &&
        check_dns_server(c->dns_server, why, sizeof(why)) < 0)
        key_error(x, x->seen_line[dns], dns, "%s", why);
    int max = find_key("upstream", "srv_max_hosts");
    if (!x->failed[max] && c->srv_max_hosts > 0 && usable(x, "upstream", "mode") &&
        c->mode == MLB_MODE_REPLICASET)
        key_error(x, x->seen_line[max], max,
                  "cannot limit the members of a replica set (mode = replicaset); remove it");
}

/* Tag sets and a staleness limit select secondaries, so read_preference = primary excludes them. */
static void validate_read_preference(struct load_ctx *x)
{
    if (!usable(x, "upstream", "read_preference") || x->c->read_preference != MLB_READ_PRIMARY)
        return;
    int t = find_key("upstream", "read_preference_tags");
    if (!x->failed[t] && x->c->read_preference_tags.count > 0)
        key_error(x, x->seen_line[t], t, "tag sets cannot be used with read_preference = primary");
    int s = find_key("upstream", "max_staleness_seconds");
    if (!x->failed[s] && x->c->max_staleness_seconds != MLB_NO_MAX_STALENESS)
        key_error(x, x->seen_line[s], s, "cannot be used with read_preference = primary");
}

/*
 * The server selection specification's floor for maxStalenessSeconds: 90, and the heartbeat
 * interval plus the 10-second idle write period, since staleness is only known that precisely.
 */
static void validate_staleness(struct load_ctx *x)
{
    int s = find_key("upstream", "max_staleness_seconds");
    long long v = x->c->max_staleness_seconds;
    if (x->failed[s] || v == MLB_NO_MAX_STALENESS ||
        !usable(x, "upstream", "heartbeat_interval_ms"))
        return;
    long long hb = x->c->heartbeat_interval_ms;
    long long floor_hb = (hb + 10000 + 999) / 1000;
    if (v < 90)
        key_error(x, x->seen_line[s], s,
                  "%lld is too small: it must be -1 (no limit) or at least 90", v);
    else if (v < floor_hb)
        key_error(x, x->seen_line[s], s,
                  "%lld is too small: with heartbeat_interval_ms = %lld it must be at least %lld "
                  "(heartbeat_interval_ms/1000 + 10)",
                  v, hb, floor_hb);
}

/* True for an address of the loopback interface: 127.0.0.0/8 or ::1. */
static bool is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return parse_ipv6_scoped(host, &a6) && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* The host of the first TCP address in l that is not a loopback address, or NULL. */
static const char *first_remote_tcp(const struct mlb_listen_list *l)
{
    for (size_t j = 0; j < l->count; j++)
        if (l->addr[j].kind == MLB_LISTEN_TCP && !is_loopback(l->addr[j].host))
            return l->addr[j].host;
    return NULL;
}

/* The admin endpoints are plain HTTP: other addresses than loopback only on request, and never
 * without credentials once authentication is on. */
static void validate_http_listen(struct load_ctx *x)
{
    int i = find_key("admin", "http_listen"), ha = find_key("admin", "http_auth");
    const struct mlb_listen_list *l = &x->c->http_listen;
    if (x->failed[i] || x->failed[ha] || !usable(x, "auth", "mode"))
        return;
    bool auth_on = x->c->auth_mode != MLB_AUTH_OFF;
    if (auth_on && l->count && x->c->http_auth == MLB_HTTP_AUTH_BASIC &&
        usable(x, "auth", "admin_users") && !x->c->admin_users[0])
        key_error(x, x->seen_line[ha] ? x->seen_line[ha] : x->seen_line[i], ha,
                  "basic needs [auth] admin_users (with their verifiers in auth_file): nobody "
                  "could read /metrics and /readyz; set admin_users, or http_auth = none");
    const char *remote = first_remote_tcp(l);
    if (auth_on && x->c->http_auth == MLB_HTTP_AUTH_NONE && remote)
        key_error(x, x->seen_line[ha], ha,
                  "none, but http_listen has '%s', which is not a loopback address; "
                  "anyone who reaches it would read the metrics without credentials",
                  remote);
    if (!usable(x, "admin", "http_allow_remote") || x->c->http_allow_remote)
        return;
    if (remote)
        key_error(x, x->seen_line[i], i,
                  "'%s' is not a loopback address; the endpoints are plain HTTP, so set "
                  "http_allow_remote = true to serve them there",
                  remote);
}

/* True if key i of the table was parsed cleanly and holds something other than its default. */
static bool is_set(const struct load_ctx *x, int i)
{
    if (i < 0 || x->failed[i])
        return false;
    const void *f = cfield_of(x->c, &keys[i]);
    if (keys[i].type == &type_path)
        return *(char *const *)f != NULL;
    if (keys[i].type == &type_string)
        return *(const char *)f != '\0';
    return *(const int *)f != 0; /* booleans and the enums below, whose default is 0 */
}

/* Reports, with msg, each of the n keys ids[] that is set (is_set) where it would be ignored. */
static void refuse_set_keys(struct load_ctx *x, const int *ids, size_t n, const char *msg)
{
    for (size_t j = 0; j < n; j++)
        if (is_set(x, ids[j]))
            key_error(x, x->seen_line[ids[j]], ids[j], "%s", msg);
}

/*
 * TLS towards applications: a mode other than disabled needs a certificate; client certificates
 * need TLS and the CAs to verify them. A file that would be read for nothing is an error too,
 * since it suggests a check that does not happen (a CA file with tls_client_certificates = none
 * verifies no client).
 */
static void validate_tls_server(struct load_ctx *x)
{
    const struct mlb_config *c = x->c;
    int mode = find_key("mongolb", "tls_mode"),
        cert = find_key("mongolb", "tls_certificate_key_file");
    int ca = find_key("mongolb", "tls_ca_file"),
        certs = find_key("mongolb", "tls_client_certificates");
    if (x->failed[mode])
        return;
    const char *mode_name = config_tls_mode_name(c->tls_mode);
    if (c->tls_mode == MLB_TLS_DISABLED) {
        const int files[] = {cert, ca};
        refuse_set_keys(x, files, 2, "set, but tls_mode = disabled; set tls_mode or remove it");
        if (is_set(x, certs))
            key_error(x, x->seen_line[certs], certs,
                      "'%s' needs TLS, but tls_mode = disabled; set tls_mode or remove it",
                      config_tls_client_certs_name(c->tls_client_certificates));
        return;
    }
    if (!x->failed[cert] && !c->tls_certificate_key_file)
        key_error(x, x->seen_line[cert] ? x->seen_line[cert] : x->seen_line[mode], cert,
                  "required with tls_mode = %s: the PEM file with the certificate and private key "
                  "mongolb presents to applications",
                  mode_name);
    if (x->failed[certs] || x->failed[ca])
        return;
    if (c->tls_client_certificates != MLB_TLS_CERTS_NONE && !c->tls_ca_file)
        key_error(x, x->seen_line[certs], certs,
                  "'%s' needs tls_ca_file, the CAs that sign the applications' certificates",
                  config_tls_client_certs_name(c->tls_client_certificates));
    else if (c->tls_client_certificates == MLB_TLS_CERTS_NONE && c->tls_ca_file)
        key_error(x, x->seen_line[ca], ca,
                  "set, but tls_client_certificates = none, so it would verify nothing; set "
                  "tls_client_certificates = optional or required, or remove it");
}

/*
 * TLS towards the servers: every other [upstream] tls_* key needs tls = true, so that a file that
 * is named but never read cannot pass for a working setup; a password needs the key it unlocks.
 */
static void validate_tls_upstream(struct load_ctx *x)
{
    static const char *const needs_tls[] = {
        "tls_allow_invalid_certificates", "tls_allow_invalid_hostnames",       "tls_ca_file",
        "tls_certificate_key_file",       "tls_certificate_key_file_password",
    };
    const struct mlb_config *c = x->c;
    if (usable(x, "upstream", "tls") && !c->upstream_tls) {
        int ids[sizeof(needs_tls) / sizeof(needs_tls[0])];
        for (size_t j = 0; j < sizeof(ids) / sizeof(ids[0]); j++)
            ids[j] = find_key("upstream", needs_tls[j]);
        refuse_set_keys(x, ids, sizeof(ids) / sizeof(ids[0]),
                        "set, but tls = false; set tls = true to use TLS towards the servers, or "
                        "remove it");
        return;
    }
    int pw = find_key("upstream", "tls_certificate_key_file_password");
    if (is_set(x, pw) && usable(x, "upstream", "tls_certificate_key_file") &&
        !c->upstream_tls_certificate_key_file)
        key_error(x, x->seen_line[pw], pw,
                  "set, but tls_certificate_key_file is not; the password is for that file's key");
}

/*
 * [auth]: each mode needs its credentials, and keys that a mode would ignore are errors, since
 * they suggest a protection that is not there.
 */
static void validate_auth(struct load_ctx *x)
{
    const struct mlb_config *c = x->c;
    if (!usable(x, "auth", "mode") || !usable(x, "auth", "service_mechanism"))
        return;
    int af = find_key("auth", "auth_file"), su = find_key("auth", "service_user"),
        pw = find_key("auth", "service_password_file"),
        mech = find_key("auth", "service_mechanism"), adm = find_key("auth", "admin_users");
    bool x509 = c->service_mechanism == MLB_SVC_X509;
    if (c->auth_mode == MLB_AUTH_OFF) {
        const int off_keys[] = {af, su, pw, adm};
        refuse_set_keys(x, off_keys, sizeof(off_keys) / sizeof(off_keys[0]),
                        "set, but mode = off; set mode = service or passthrough, or remove it");
        return;
    }
    bool have_user = !x->failed[su] && c->service_user[0];
    if (c->auth_mode == MLB_AUTH_SERVICE) {
        if (!x->failed[af] && !c->auth_file)
            key_error(x, x->seen_line[af], af,
                      "required with mode = service: the users applications log in as");
        if (!x->failed[su] && !have_user)
            key_error(x, x->seen_line[su], su,
                      "required with mode = service: the user servers see");
    } else if (!x->failed[af] && !x->failed[su] && !c->auth_file && !have_user) {
        key_error(x, 0, af,
                  "mode = passthrough needs auth_file, service_user (to read verifiers with "
                  "usersInfo), or both");
    }
    if (have_user && !x509 && !x->failed[pw] && !c->service_password_file)
        key_error(x, x->seen_line[pw], pw, "required with service_user and %s",
                  config_service_mech_name(c->service_mechanism));
    if (x509 && is_set(x, pw))
        key_error(x, x->seen_line[pw], pw,
                  "set, but service_mechanism = MONGODB-X509 logs in with the TLS certificate");
    if (x509 && usable(x, "upstream", "tls_certificate_key_file") &&
        (!c->upstream_tls || !c->upstream_tls_certificate_key_file))
        key_error(x, x->seen_line[mech], mech,
                  "MONGODB-X509 needs [upstream] tls = true and tls_certificate_key_file");
}

/* Writes line into err after *used bytes, newline-separated. Returns false if it did not fit. */
static bool append_line(char *err, size_t err_len, size_t *used, const char *line)
{
    size_t sep = *used > 0 ? 1 : 0;
    size_t n = strlen(line);
    if (*used + sep + n + 1 > err_len)
        return false;
    if (sep)
        err[(*used)++] = '\n';
    memcpy(err + *used, line, n + 1);
    *used += n;
    return true;
}

/* Sorts the errors by line (file-wide ones last, stable) and writes as many as fit into err. */
static void write_errors(struct load_ctx *x, char *err, size_t err_len)
{
    for (size_t i = 1; i < x->error_count; i++) {
        struct load_error e = x->errors[i];
        unsigned key = e.line > 0 ? (unsigned)e.line : UINT_MAX;
        size_t j = i;
        for (; j > 0; j--) {
            int l = x->errors[j - 1].line;
            if ((l > 0 ? (unsigned)l : UINT_MAX) <= key)
                break;
            x->errors[j] = x->errors[j - 1];
        }
        x->errors[j] = e;
    }
    if (err_len == 0)
        return;
    err[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < x->error_count; i++) {
        if (!append_line(err, err_len, &used, x->errors[i].text)) {
            char more[64];
            snprintf(more, sizeof(more), "(%zu more errors)", x->error_count - i);
            append_line(err, err_len, &used, more);
            break;
        }
    }
}

/* Runs inih over the source in x and validates the result. Returns 0 or a negative errno code. */
static int load(struct load_ctx *x, struct mlb_config *c, char *err, size_t err_len)
{
    config_defaults(c);
    x->c = c;
    x->pending = -1;
    int r = ini_parse_stream(read_line, x, on_key, x);
    flush_pending(x);
    if (r > 0 && x->error_count == 0)
        add_error(x, r, "syntax error"); /* inih saw a problem that classify_line() did not */
    int ret = 0;
    validate_required(x);
    validate_replica_set(x);
    validate_srv(x);
    validate_read_preference(x);
    validate_staleness(x);
    validate_http_listen(x);
    validate_tls_server(x);
    validate_tls_upstream(x);
    validate_auth(x);
    if (x->out_of_memory) {
        ret = -ENOMEM;
        add_error(x, 0, "out of memory");
    }
    if (x->error_count > 0 && ret == 0)
        ret = -EINVAL;
    write_errors(x, err, err_len);
    for (size_t i = 0; i < x->error_count; i++)
        free(x->errors[i].text);
    free(x->errors);
    free(x->line);
    free(x->pending_value);
    if (ret < 0) {
        config_free(c);
        config_defaults(c);
    }
    return ret;
}

/*
 * Reads the file at path into a NUL-terminated buffer the caller frees, stopping one byte past
 * CONFIG_FILE_MAX: the size a regular file claims is no limit for a device or a pipe, which may
 * never end (-c /dev/zero would otherwise fill memory). Returns 0, -EFBIG for a file over the
 * limit, or another negative errno code, with the reason in err.
 */
static int read_whole_file(const char *path, char **out, size_t *out_len, char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        snprintf(err, err_len, "cannot open %s: %s", path, strerror(e));
        return -e;
    }
    /* The extra byte holds either the one that proves the file too large or the final NUL. */
    char *buf = malloc(CONFIG_FILE_MAX + 1);
    if (!buf) {
        close(fd);
        snprintf(err, err_len, "cannot read %s: %s", path, strerror(ENOMEM));
        return -ENOMEM;
    }
    size_t len = 0;
    int ret = 0;
    while (len <= CONFIG_FILE_MAX) {
        /* At most 64 KiB a read, and never past one byte over the limit, whatever the source. */
        size_t want = CONFIG_FILE_MAX + 1 - len;
        ssize_t got = read(fd, buf + len, want < 65536 ? want : 65536);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            snprintf(err, err_len, "cannot read %s: %s", path, strerror(e));
            ret = -e;
            break;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    close(fd);
    if (ret == 0 && len > CONFIG_FILE_MAX) {
        snprintf(err, err_len,
                 "%s: the file is larger than 1 MiB (%d bytes), the most a configuration file "
                 "may be",
                 path, CONFIG_FILE_MAX);
        ret = -EFBIG;
    }
    if (ret < 0) {
        free(buf);
        return ret;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return 0;
}

int config_load_file(const char *path, struct mlb_config *c, char *err, size_t err_len)
{
    /* snprintf() writes nothing when err_len is 0, so err may then be NULL, as config.h allows. */
    if (err_len > 0)
        err[0] = '\0';
    char *text = NULL;
    size_t len = 0;
    int r = read_whole_file(path, &text, &len, err, err_len);
    if (r == 0) {
        /*
         * inih and the string functions stop at a NUL, so the rest of its line, a value's tail
         * included, would vanish without a word. A text file has none; a binary file given by
         * mistake has many, and its first one is reason enough to stop.
         */
        const char *nul = memchr(text, '\0', len);
        if (nul) {
            int line = 1;
            for (const char *q = text; q < nul; q++)
                line += *q == '\n';
            snprintf(err, err_len,
                     "%s:%d: the line has a NUL byte in it; a configuration file is plain text",
                     path, line);
            r = -EINVAL;
        }
    }
    if (r < 0) {
        free(text);
        config_defaults(c);
        return r;
    }
    r = config_load_string(text, path, c, err, err_len);
    free(text);
    return r;
}

int config_load_string(const char *text, const char *name_for_errors, struct mlb_config *c,
                       char *err, size_t err_len)
{
    if (err_len > 0)
        err[0] = '\0';
    struct load_ctx x;
    memset(&x, 0, sizeof(x));
    x.name = name_for_errors;
    x.text = text;
    return load(&x, c, err, err_len);
}

/* ---- dump and reload ---- */

void config_dump(const struct mlb_config *c, FILE *f)
{
    const char *section = NULL;
    for (size_t i = 0; i < KEY_COUNT; i++) {
        const struct config_key *k = &keys[i];
        if (!section || strcmp(section, k->section) != 0) {
            fprintf(f, "%s[%s]\n", section ? "\n" : "", k->section);
            section = k->section;
        }
        fprintf(f, "%s = ", k->name);
        k->type->print(k, cfield_of(c, k), f);
        fputc('\n', f);
    }
}

/* Returns k's value in c as text, in a string the caller frees, or NULL without memory. */
static char *value_text(const struct config_key *k, const struct mlb_config *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    k->type->print(k, cfield_of(c, k), f);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/*
 * Whether changing key k from its running value to the loaded one needs a restart. seeds change
 * live from one list to another, but not between a list and mongodb+srv://, nor to another SRV
 * name: srv.c looks up one name for the life of the process, and dns_server, the srv_* keys and
 * TLS's default follow that choice. Such a change is kept like any restart-only key, so that the
 * rest of the file still applies.
 */
static bool needs_restart(const struct config_key *k, const struct mlb_config *running,
                          const struct mlb_config *loaded)
{
    if (!(k->flags & CONFIG_RELOADABLE))
        return true;
    return k->offset == offsetof(struct mlb_config, seeds) &&
           strcasecmp(running->seeds.srv, loaded->seeds.srv) != 0;
}

int config_check_reload(const struct mlb_config *running, const struct mlb_config *loaded,
                        char *err, size_t err_len)
{
    if (err_len > 0)
        err[0] = '\0';
    size_t used = 0;
    int ret = 0;
    for (size_t i = 0; i < KEY_COUNT; i++) {
        const struct config_key *k = &keys[i];
        if (!needs_restart(k, running, loaded))
            continue;
        char *a = value_text(k, running), *b = value_text(k, loaded);
        if (!a || !b) {
            ret = -ENOMEM;
        } else if (strcmp(a, b) != 0) {
            char line[1024];
            snprintf(line, sizeof(line),
                     "[%s] %s: changed from '%s' to '%s', which needs a restart", k->section,
                     k->name, a, b);
            append_line(err, err_len, &used, line);
            if (ret == 0)
                ret = -EINVAL;
        }
        free(a);
        free(b);
    }
    return ret;
}

/*
 * Walks the keys that differ between running and loaded, reporting each. With keep, a key that
 * needs a restart gets running's value back in loaded: printed and parsed again, which every type
 * supports (print writes what parse reads), so that no type needs a copy function.
 */
static int walk_changes(const struct mlb_config *running, struct mlb_config *loaded, bool keep,
                        config_change_fn report, void *ctx)
{
    int n = 0;
    for (size_t i = 0; i < KEY_COUNT; i++) {
        const struct config_key *k = &keys[i];
        char *a = value_text(k, running), *b = value_text(k, loaded);
        int rc = 0;
        if (!a || !b) {
            rc = -ENOMEM;
        } else if (strcmp(a, b) != 0) {
            bool kept = keep && needs_restart(k, running, loaded);
            if (kept) {
                char why[256];
                rc = k->type->parse(k, a, field_of(loaded, k), why, sizeof(why));
            }
            if (rc == 0 && (kept || !keep)) {
                report(ctx, k, a, b, kept);
                n++;
            }
        }
        free(a);
        free(b);
        if (rc < 0)
            return rc;
    }
    return n;
}

int config_reload_merge(const struct mlb_config *running, struct mlb_config *loaded,
                        config_change_fn report, void *ctx, char *err, size_t err_len)
{
    if (err_len > 0)
        err[0] = '\0';
    int kept = walk_changes(running, loaded, true, report, ctx);
    if (kept <= 0)
        return kept;
    /*
     * The merged values are checked as a file would be: written out and read back. Only the keys
     * that differ from their defaults are written, as a file that leaves the others out, since
     * some checks ask whether a key was set at all.
     */
    struct mlb_config defaults;
    config_defaults(&defaults);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return -ENOMEM;
    const char *section = NULL;
    bool nomem = false;
    for (size_t i = 0; i < KEY_COUNT; i++) {
        const struct config_key *k = &keys[i];
        char *a = value_text(k, loaded), *d = value_text(k, &defaults);
        nomem |= !a || !d;
        if (a && d && strcmp(a, d) != 0) {
            if (!section || strcmp(section, k->section) != 0)
                fprintf(f, "[%s]\n", section = k->section);
            fprintf(f, "%s = %s\n", k->name, a);
        }
        free(a);
        free(d);
    }
    config_free(&defaults);
    if (fclose(f) != 0 || nomem) {
        free(text);
        return -ENOMEM;
    }
    struct mlb_config check;
    int rc = config_load_string(text, "the configuration with the restart-only keys kept", &check,
                                err, err_len);
    free(text);
    config_free(&check);
    return rc < 0 ? rc : kept;
}

int config_diff(const struct mlb_config *a, const struct mlb_config *b, config_change_fn report,
                void *ctx)
{
    /* Nothing is written into b without keep. */
    return walk_changes(a, (struct mlb_config *)b, false, report, ctx);
}
