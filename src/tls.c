/*
 * tls.c: OpenSSL contexts for applications and for servers. See tls.h.
 *
 * Every file is first opened with open(2), so that a missing or unreadable file is reported with
 * the system's reason rather than as a chain of OpenSSL codes, and only then handed to OpenSSL.
 * The private key is read here (PEM_read_bio_PrivateKey) instead of by
 * SSL_CTX_use_PrivateKey_file(), with a password callback of this file: that way "there is no key",
 * "the password is wrong" and "the key is not the certificate's" are told apart, nothing ever
 * prompts on a terminal for a password, and no SSL_CTX keeps a pointer to a password buffer after
 * the key is read. The password file is read with read(2) into a buffer on the stack, which is
 * cleansed (OPENSSL_cleanse) as soon as the key is decrypted, so that no stdio buffer keeps a
 * copy.
 */
#include "tls.h"

#include "fault.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

/* The lowest security level the contexts run at: OpenSSL's own default, 112-bit security. */
#define TLS_MIN_SECURITY_LEVEL 2

/* Problems found while building, written into the caller's buffer one per line. */
struct problems {
    char *buf;
    size_t len, used;
    int first; /* the negative errno code of the first problem, 0 while there is none */
    int count;
};

static void problem(struct problems *p, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records a problem: its line goes into the buffer if it fits, its code is kept if it is first. */
static void problem(struct problems *p, int code, const char *fmt, ...)
{
    if (p->first == 0)
        p->first = code;
    p->count++;
    if (p->len == 0 || p->used + 1 >= p->len)
        return;
    if (p->used > 0)
        p->buf[p->used++] = '\n';
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->buf + p->used, p->len - p->used, fmt, ap);
    va_end(ap);
    if (n < 0)
        p->buf[p->used] = '\0';
    else if ((size_t)n >= p->len - p->used)
        p->used = p->len - 1; /* cut at the end of the buffer, which is full now */
    else
        p->used += (size_t)n;
}

const char *tls_last_error(char *buf, size_t len)
{
    if (len == 0)
        return buf;
    buf[0] = '\0';
    size_t used = 0;
    char prev[512] = "";
    const char *data = NULL;
    int flags = 0;
    unsigned long e;
    while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
        char one[512];
        const char *lib = ERR_lib_error_string(e), *reason = ERR_reason_error_string(e);
        char code[128];
        if (!reason) {
            ERR_error_string_n(e, code, sizeof(code));
            reason = code;
        }
        bool detail = (flags & ERR_TXT_STRING) && data && data[0];
        snprintf(one, sizeof(one), "%s%s%s%s%s%s", lib ? lib : "", lib ? ": " : "", reason,
                 detail ? " (" : "", detail ? data : "", detail ? ")" : "");
        /* OpenSSL often pushes the same reason from several layers; once is enough. */
        if (strcmp(one, prev) == 0)
            continue;
        strcpy(prev, one); /* both are 512 bytes, and one is terminated */
        int n = snprintf(buf + used, len - used, "%s%s", used ? "; " : "", one);
        if (n > 0)
            used = (size_t)n >= len - used ? len - 1 : used + (size_t)n;
    }
    if (used == 0)
        snprintf(buf, len, "no reason given by OpenSSL");
    return buf;
}

/*
 * Checks that the file at path can be opened for reading and is not a directory. Returns 0 or the
 * negative errno code, with a problem recorded naming [section] key and the path.
 */
static int check_readable(struct problems *p, const char *section, const char *key,
                          const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    int e = fd < 0 ? errno : 0;
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) < 0)
            e = errno;
        else if (S_ISDIR(st.st_mode))
            e = EISDIR;
        close(fd);
    }
    if (e != 0)
        problem(p, -e, "[%s] %s: %s: cannot read it: %s", section, key, path, strerror(e));
    return -e;
}

/* Writes an ASN1 time as "2025-01-31 12:00:00 UTC" into buf. */
static void format_time(const ASN1_TIME *t, char *buf, size_t len)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1 || strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(buf, len, "an unreadable date");
}

/* Writes a certificate's subject, RFC 2253 style (CN=localhost,O=Example), into buf. */
static void format_subject(X509 *x, char *buf, size_t len)
{
    snprintf(buf, len, "?");
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return;
    if (X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
        char *text;
        long n = BIO_get_mem_data(b, &text);
        if (n > 0)
            snprintf(buf, len, "%.*s", (int)n, text);
    }
    BIO_free(b);
}

/*
 * Refuses an own certificate outside its validity period, as mongod does: every peer that
 * verifies it would refuse the handshake, so starting (or reloading) with it only moves the error
 * from the operator's terminal to every connection.
 */
static int check_validity(struct problems *p, const char *section, const char *key,
                          const char *path, X509 *x)
{
    char subject[256], when[64];
    const ASN1_TIME *not_after = X509_get0_notAfter(x), *not_before = X509_get0_notBefore(x);
    if (X509_cmp_current_time(not_after) < 0) {
        format_subject(x, subject, sizeof(subject));
        format_time(not_after, when, sizeof(when));
        problem(p, -EINVAL, "[%s] %s: %s: the certificate (%s) expired on %s; renew it", section,
                key, path, subject, when);
        return -EINVAL;
    }
    if (X509_cmp_current_time(not_before) > 0) {
        format_subject(x, subject, sizeof(subject));
        format_time(not_before, when, sizeof(when));
        problem(p, -EINVAL, "[%s] %s: %s: the certificate (%s) is not valid before %s", section,
                key, path, subject, when);
        return -EINVAL;
    }
    return 0;
}

/* A password on its way to OpenSSL's PEM reader; text is cleansed once the key is read. */
struct password {
    bool given; /* a password file was configured and read */
    bool asked; /* the key was encrypted, so OpenSSL asked for the password */
    bool too_long;
    size_t len;
    char text[TLS_PASSWORD_MAX + 1];
};

/* OpenSSL's pem_password_cb: hands over the password, and notes that the key needed one. */
static int password_cb(char *buf, int size, int rwflag, void *u)
{
    struct password *pw = u;
    (void)rwflag;
    pw->asked = true;
    if (!pw->given)
        return -1; /* an encrypted key without a password fails, instead of prompting */
    if (size < 0 || pw->len > (size_t)size) {
        pw->too_long = true;
        return -1;
    }
    memcpy(buf, pw->text, pw->len);
    return (int)pw->len;
}

/*
 * Reads the password from the first line of the file at path (a final "\n" or "\r\n" is not part
 * of it). Returns 0 or a negative errno code with a problem recorded under [section] key. The
 * password itself never appears in a message.
 */
static int read_password(struct problems *p, const char *section, const char *key, const char *path,
                         struct password *pw)
{
    int r = check_readable(p, section, key, path);
    if (r < 0)
        return r;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        problem(p, -e, "[%s] %s: %s: cannot read it: %s", section, key, path, strerror(e));
        return -e;
    }
    /* Room for the longest password, "\r\n", and one byte more to tell a longer line apart. */
    char buf[TLS_PASSWORD_MAX + 3];
    size_t n = 0;
    int e = 0;
    while (n < sizeof(buf)) {
        ssize_t got = read(fd, buf + n, sizeof(buf) - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            e = errno;
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    r = 0;
    if (e != 0) {
        problem(p, -e, "[%s] %s: %s: cannot read it: %s", section, key, path, strerror(e));
        r = -e;
    } else {
        const char *nl = memchr(buf, '\n', n);
        size_t line = nl ? (size_t)(nl - buf) : n;
        if (line > 0 && buf[line - 1] == '\r')
            line--;
        if (line == 0) {
            problem(p, -EINVAL, "[%s] %s: %s: the first line is empty; it must hold the password",
                    section, key, path);
            r = -EINVAL;
        } else if (line > TLS_PASSWORD_MAX) {
            problem(p, -EINVAL, "[%s] %s: %s: the password is longer than %d bytes", section, key,
                    path, TLS_PASSWORD_MAX);
            r = -EINVAL;
        } else {
            memcpy(pw->text, buf, line);
            pw->len = line;
            pw->given = true;
        }
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return r;
}

/* Where a certificate and key come from: [section] key, and the password file if there is one. */
struct cert_source {
    const char *section;
    const char *key; /* the certificate-and-key key's name */
    const char *path;
    const char *password_key; /* NULL: this side takes no password */
    const char *password_path;
};

/*
 * Reads the private key from s->path, decrypting it with the password when one is configured, and
 * explains a failure. Returns the key or NULL with a problem recorded.
 */
static EVP_PKEY *read_private_key(struct problems *p, const struct cert_source *s)
{
    struct password pw;
    memset(&pw, 0, sizeof(pw));
    if (s->password_path &&
        read_password(p, s->section, s->password_key, s->password_path, &pw) < 0)
        return NULL;
    char reason[1024];
    EVP_PKEY *pkey = NULL;
    ERR_clear_error();
    BIO *b = BIO_new_file(s->path, "r");
    bool opened = b != NULL;
    if (b) {
        pkey = PEM_read_bio_PrivateKey(b, NULL, password_cb, &pw);
        BIO_free(b);
    }
    OPENSSL_cleanse(pw.text, sizeof(pw.text));
    if (pkey)
        return pkey;
    tls_last_error(reason, sizeof(reason));
    if (!opened)
        problem(p, -EIO, "[%s] %s: %s: cannot read it: %s", s->section, s->key, s->path, reason);
    else if (pw.asked && !s->password_key)
        problem(p, -EINVAL,
                "[%s] %s: %s: the private key is encrypted, but mongolb reads this key without a "
                "password; store it decrypted (openssl pkey -in FILE -out NEW) in a file only "
                "mongolb may read",
                s->section, s->key, s->path);
    else if (pw.asked && !pw.given)
        problem(p, -EINVAL,
                "[%s] %s: %s: the private key is encrypted; set %s to a file holding its password",
                s->section, s->key, s->path, s->password_key);
    else if (pw.too_long)
        problem(p, -EINVAL, "[%s] %s: %s: the password is longer than OpenSSL accepts", s->section,
                s->password_key, s->password_path);
    else if (pw.asked)
        problem(p, -EINVAL, "[%s] %s: %s: the password does not decrypt the private key in %s (%s)",
                s->section, s->password_key, s->password_path, s->path, reason);
    else
        problem(p, -EINVAL,
                "[%s] %s: %s: no private key could be read from it; the file must hold the "
                "certificate and its private key, in PEM (%s)",
                s->section, s->key, s->path, reason);
    return NULL;
}

/* Loads the certificate chain and the matching private key into ctx. Returns 0 or < 0. */
static int use_certificate_and_key(SSL_CTX *ctx, struct problems *p, const struct cert_source *s)
{
    char reason[1024];
    int r = check_readable(p, s->section, s->key, s->path);
    if (r < 0)
        return r;
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, s->path) != 1) {
        problem(p, -EINVAL, "[%s] %s: %s: no usable certificate could be read from it (%s)",
                s->section, s->key, s->path, tls_last_error(reason, sizeof(reason)));
        return -EINVAL;
    }
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    if (!cert) {
        problem(p, -EINVAL, "[%s] %s: %s: no certificate could be read from it", s->section, s->key,
                s->path);
        return -EINVAL;
    }
    /* A bad key is reported even when the certificate has expired: both need fixing. */
    int validity = check_validity(p, s->section, s->key, s->path, cert);
    EVP_PKEY *pkey = read_private_key(p, s);
    if (!pkey)
        return -EINVAL;
    ERR_clear_error();
    r = validity;
    if (X509_check_private_key(cert, pkey) != 1) {
        problem(p, -EINVAL, "[%s] %s: %s: the private key does not match the certificate (%s)",
                s->section, s->key, s->path, tls_last_error(reason, sizeof(reason)));
        r = -EINVAL;
    } else if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        problem(p, -EINVAL, "[%s] %s: %s: the private key cannot be used (%s)", s->section, s->key,
                s->path, tls_last_error(reason, sizeof(reason)));
        r = -EINVAL;
    }
    EVP_PKEY_free(pkey);
    return r;
}

/* Loads the CAs in path as ctx's trust anchors. Returns 0 or < 0 with a problem recorded. */
static int load_ca_file(SSL_CTX *ctx, struct problems *p, const char *section, const char *key,
                        const char *path)
{
    char reason[1024];
    int r = check_readable(p, section, key, path);
    if (r < 0)
        return r;
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(ctx, path, NULL) != 1) {
        problem(p, -EINVAL, "[%s] %s: %s: no CA certificate could be read from it (%s)", section,
                key, path, tls_last_error(reason, sizeof(reason)));
        return -EINVAL;
    }
    return 0;
}

/* Creates a context with what both sides share: TLS 1.2 or newer, no renegotiation, level 2. */
static SSL_CTX *new_context(struct problems *p, const SSL_METHOD *method, const char *side)
{
    char reason[1024];
    ERR_clear_error();
    SSL_CTX *ctx = fault_hit(FAULT_TLS_CONTEXT) ? NULL : SSL_CTX_new(method);
    if (!ctx) {
        problem(p, -ENOMEM, "cannot create the TLS context towards %s (%s)", side,
                ERR_peek_error() ? tls_last_error(reason, sizeof(reason)) : "out of memory");
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        problem(p, -EINVAL, "cannot require TLS 1.2 or newer towards %s (%s)", side,
                tls_last_error(reason, sizeof(reason)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    /*
     * Renegotiation would let a peer restart the handshake in the middle of the byte stream the
     * stream layer frames, and TLS 1.3 has none; compression invites CRIME-style attacks.
     */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* An idle connection gives its record buffers back: thousands of idle TLS clients would
     * otherwise hold about 34 KiB each for nothing. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_get_security_level(ctx) < TLS_MIN_SECURITY_LEVEL)
        SSL_CTX_set_security_level(ctx, TLS_MIN_SECURITY_LEVEL);
    return ctx;
}

/* Builds the context towards applications, or NULL with problems recorded. */
static SSL_CTX *build_server(const struct mlb_config *cfg, struct problems *p)
{
    int before = p->count;
    if (!cfg->tls_certificate_key_file) {
        problem(p, -EINVAL,
                "[mongolb] tls_certificate_key_file: not set, but tls_mode = %s needs it",
                config_tls_mode_name(cfg->tls_mode));
        return NULL;
    }
    SSL_CTX *ctx = new_context(p, TLS_server_method(), "applications");
    if (!ctx)
        return NULL;
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    const struct cert_source s = {"mongolb", "tls_certificate_key_file",
                                  cfg->tls_certificate_key_file, NULL, NULL};
    use_certificate_and_key(ctx, p, &s);

    int verify = SSL_VERIFY_NONE;
    if (cfg->tls_client_certificates != MLB_TLS_CERTS_NONE) {
        verify = SSL_VERIFY_PEER;
        if (cfg->tls_client_certificates == MLB_TLS_CERTS_REQUIRED)
            verify |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        if (!cfg->tls_ca_file) {
            problem(p, -EINVAL,
                    "[mongolb] tls_ca_file: not set, but tls_client_certificates = %s "
                    "needs it",
                    config_tls_client_certs_name(cfg->tls_client_certificates));
        } else if (load_ca_file(ctx, p, "mongolb", "tls_ca_file", cfg->tls_ca_file) == 0) {
            /* The CAs' names go in the CertificateRequest, so clients pick a matching cert. */
            ERR_clear_error();
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_ca_file);
            if (names) {
                SSL_CTX_set_client_CA_list(ctx, names);
            } else {
                char reason[1024];
                problem(p, -EINVAL, "[mongolb] tls_ca_file: %s: no CA names could be read (%s)",
                        cfg->tls_ca_file, tls_last_error(reason, sizeof(reason)));
            }
        }
    }
    SSL_CTX_set_verify(ctx, verify, NULL);

    /*
     * Sessions are resumed only within the context that made them (each reload builds a new one,
     * with a new cache and new ticket keys). The id context names the verification policy too,
     * so that a session can never carry a client's verification over to a stricter setting.
     */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    char sid[32];
    int n = snprintf(sid, sizeof(sid), "mongolb/%s",
                     config_tls_client_certs_name(cfg->tls_client_certificates));
    if (SSL_CTX_set_session_id_context(ctx, (const unsigned char *)sid, (unsigned)n) != 1)
        problem(p, -EINVAL, "cannot set the TLS session id context towards applications");

    if (p->count != before) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Builds the context towards the servers, or NULL with problems recorded. */
static SSL_CTX *build_client(const struct mlb_config *cfg, struct problems *p)
{
    int before = p->count;
    SSL_CTX *ctx = new_context(p, TLS_client_method(), "the servers");
    if (!ctx)
        return NULL;
    if (cfg->upstream_tls_ca_file) {
        load_ca_file(ctx, p, "upstream", "tls_ca_file", cfg->upstream_tls_ca_file);
    } else {
        ERR_clear_error();
        if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            char reason[1024];
            problem(p, -EINVAL,
                    "[upstream] tls_ca_file: not set, and the system's trust store "
                    "cannot be loaded (%s)",
                    tls_last_error(reason, sizeof(reason)));
        }
    }
    SSL_CTX_set_verify(
        ctx, cfg->upstream_tls_allow_invalid_certificates ? SSL_VERIFY_NONE : SSL_VERIFY_PEER,
        NULL);
    if (cfg->upstream_tls_certificate_key_file) {
        const struct cert_source s = {
            "upstream", "tls_certificate_key_file", cfg->upstream_tls_certificate_key_file,
            "tls_certificate_key_file_password", cfg->upstream_tls_certificate_key_file_password};
        use_certificate_and_key(ctx, p, &s);
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    if (p->count != before) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int tls_build(const struct mlb_config *cfg, struct tls_contexts *out, char *err, size_t err_len)
{
    struct problems p = {err, err_len, 0, 0, 0};
    if (err_len > 0)
        err[0] = '\0';
    out->server = NULL;
    out->client = NULL;
    ERR_clear_error();
    SSL_CTX *server = cfg->tls_mode != MLB_TLS_DISABLED ? build_server(cfg, &p) : NULL;
    SSL_CTX *client = cfg->upstream_tls ? build_client(cfg, &p) : NULL;
    ERR_clear_error();
    if (p.count > 0) {
        SSL_CTX_free(server);
        SSL_CTX_free(client);
        return p.first < 0 ? p.first : -EINVAL;
    }
    out->server = server;
    out->client = client;
    return 0;
}

void tls_free(struct tls_contexts *t)
{
    SSL_CTX_free(t->server);
    SSL_CTX_free(t->client);
    t->server = NULL;
    t->client = NULL;
}

int tls_warnings(const struct mlb_config *cfg, char *buf, size_t len)
{
    const char *lines[2];
    int count = 0;
    if (cfg->upstream_tls && cfg->upstream_tls_allow_invalid_certificates)
        lines[count++] = "[upstream] tls_allow_invalid_certificates = true: the servers' "
                         "certificates are not verified, so anyone on the network path can pose "
                         "as a server and read every request; use it for tests only";
    if (cfg->upstream_tls && cfg->upstream_tls_allow_invalid_hostnames)
        lines[count++] = "[upstream] tls_allow_invalid_hostnames = true: a certificate issued for "
                         "any host name is accepted, so any holder of a certificate from a "
                         "trusted CA can pose as a server; use it for tests only";
    if (len > 0)
        buf[0] = '\0';
    size_t used = 0;
    for (int i = 0; i < count && len > 0; i++) {
        int n = snprintf(buf + used, len - used, "%s%s", i ? "\n" : "", lines[i]);
        if (n < 0 || (size_t)n >= len - used)
            break;
        used += (size_t)n;
    }
    return count;
}

/*
 * Copies host into buf without a trailing dot (a fully qualified "db.example." names the same
 * host, but neither SNI nor certificates carry the dot) and without an IPv6 %zone, which only
 * means something on this machine. Returns false if it does not fit or nothing is left.
 */
static bool plain_host(const char *host, char *buf, size_t len)
{
    size_t n = strcspn(host, "%");
    if (n > 0 && host[n - 1] == '.')
        n--;
    if (n == 0 || n >= len)
        return false;
    memcpy(buf, host, n);
    buf[n] = '\0';
    return true;
}

int tls_client_prepare(SSL *ssl, const char *host, bool verify_host)
{
    char name[256];
    if (!ssl || !host || !plain_host(host, name, sizeof(name)))
        return -EINVAL;
    unsigned char addr[sizeof(struct in6_addr)];
    bool ip = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
    if (!ip && SSL_set_tlsext_host_name(ssl, name) != 1)
        return -EINVAL;
    if (!verify_host)
        return 0;
    if (ip)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 ? 0 : -EINVAL;
    /* Names like www*.example.com are a legacy form that RFC 6125 advises against accepting. */
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return SSL_set1_host(ssl, name) == 1 ? 0 : -ENOMEM;
}
