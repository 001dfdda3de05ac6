/*
 * check_tls.c: the OpenSSL contexts built from the configuration (tls.c): what each context
 * enforces, the problems tls_build() reports and how (key, path and reason named, a password
 * never), tls_client_prepare()'s SNI and host checks, real handshakes between the two contexts
 * over a BIO pair, and mongolb --check-config on a key that does not match its certificate.
 *
 * Certificates are made when the suite starts, with the openssl command line, in a temporary
 * directory that is removed at the end: nothing is shipped, and nothing expires in the tree.
 */
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "check_main.h"
#include "test_dir.h"
#include "config.h"
#include "fault.h"

/* The password of the encrypted client key; no error message may ever contain it. */
#define PASSWORD       "Tr0ub4dor&3 horse"
#define WRONG_PASSWORD "correct horse battery staple"

static char err[8192];

/*
 * Makes, with the openssl command line:
 *   ca.pem              a CA (EC P-256)
 *   server.pem          a certificate for localhost and 127.0.0.1 from the CA, then its key
 *   server-cert.pem     that certificate alone; server-key.pem its key alone
 *   mismatch.pem        that certificate with another key
 *   client-enc.pem      a client certificate from the CA with its key encrypted under PASSWORD
 *   client-plain.pem    the same certificate with the key unencrypted
 *   mismatch-enc.pem    the server certificate with the client's encrypted key
 *   password.txt        PASSWORD and a newline; password-crlf.txt with "\r\n"
 *   wrong-password.txt  WRONG_PASSWORD; empty-password.txt an empty first line
 *   expired.pem         a certificate that expired in 2020, with its key
 *   future.pem          a certificate valid only from 2099, with its key
 *   weak.pem            a self-signed RSA 1024 certificate, below security level 2
 *   garbage.pem         text that is no PEM at all
 */
static void make_certificates(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(test_dir, sizeof(test_dir), "%s/check_tls.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(test_dir));
    test_write_file("ca.cnf", "[ca]\n"
                              "default_ca = ca_default\n"
                              "[ca_default]\n"
                              "database = index.txt\n"
                              "new_certs_dir = .\n"
                              "serial = serial\n"
                              "default_md = sha256\n"
                              "policy = any\n"
                              "copy_extensions = copy\n"
                              "unique_subject = no\n"
                              "[any]\n"
                              "commonName = supplied\n");
    test_write_file("index.txt", "");
    test_write_file("serial", "1000\n");
    test_write_file("password.txt", PASSWORD "\n");
    test_write_file("password-crlf.txt", PASSWORD "\r\nsecond line\n");
    test_write_file("wrong-password.txt", WRONG_PASSWORD "\n");
    test_write_file("empty-password.txt", "\n" PASSWORD "\n");
    test_write_file("garbage.pem", "this is not a certificate\n");
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    const char *sign = "openssl ca -batch -notext -config ca.cnf -cert ca.pem -keyfile ca.key";
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 %s -keyout ca.key -out ca.pem -subj /CN=mongolb-test-ca -days 30 "
             "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign",
             ec);
    test_run(cmd);
    snprintf(cmd, sizeof(cmd),
             "openssl req -new %s -keyout server-key.pem -out server.csr -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 && %s -days 30 -in server.csr "
             "-out server-cert.pem && cat server-cert.pem server-key.pem > server.pem",
             ec, sign);
    test_run(cmd);
    snprintf(cmd, sizeof(cmd),
             "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out other-key.pem && "
             "cat server-cert.pem other-key.pem > mismatch.pem");
    test_run(cmd);
    snprintf(cmd, sizeof(cmd),
             "openssl req -new %s -keyout client-key.pem -out client.csr -subj /CN=mongolb && "
             "%s -days 30 -in client.csr -out client-cert.pem && "
             "openssl pkey -in client-key.pem -aes256 -passout file:password.txt "
             "-out client-key-enc.pem && cat client-cert.pem client-key-enc.pem > client-enc.pem "
             "&& cat client-cert.pem client-key.pem > client-plain.pem && "
             "cat server-cert.pem client-key-enc.pem > mismatch-enc.pem",
             ec, sign);
    test_run(cmd);
    snprintf(cmd, sizeof(cmd),
             "openssl req -new %s -keyout expired-key.pem -out expired.csr -subj /CN=expired && "
             "%s -startdate 20200101000000Z -enddate 20200201000000Z -in expired.csr "
             "-out expired-cert.pem && cat expired-cert.pem expired-key.pem > expired.pem",
             ec, sign);
    test_run(cmd);
    snprintf(cmd, sizeof(cmd),
             "openssl req -new %s -keyout future-key.pem -out future.csr -subj /CN=future && "
             "%s -startdate 20990101000000Z -enddate 20990201000000Z -in future.csr "
             "-out future-cert.pem && cat future-cert.pem future-key.pem > future.pem",
             ec, sign);
    test_run(cmd);
    test_run("openssl req -x509 -newkey rsa:1024 -nodes -keyout weak-key.pem -out weak-cert.pem "
             "-subj /CN=weak -days 30 && cat weak-cert.pem weak-key.pem > weak.pem");
}

static void remove_certificates(void)
{
    if (!test_dir[0])
        return;
    char *cmd = NULL;
    if (asprintf(&cmd, "rm -rf '%s'", test_dir) > 0 && system(cmd) != 0)
        fprintf(stderr, "check_tls: could not remove %s\n", test_dir);
    free(cmd);
}

/* A configuration with TLS off, as config_defaults() leaves it, which the tests then set up. */
static void base_config(struct mlb_config *c)
{
    config_defaults(c);
}

/* Sets a path field to a copy of value (the configuration owns and frees its paths). */
static void set_path(char **field, const char *value)
{
    free(*field);
    *field = value ? strdup(value) : NULL;
}

/* Asserts that tls_build(c) fails with code, and that err contains every string in wants. */
static void expect_failure(const struct mlb_config *c, int code, const char *const *wants)
{
    struct tls_contexts t = {(SSL_CTX *)1, (SSL_CTX *)1};
    int r = tls_build(c, &t, err, sizeof(err));
    ck_assert_msg(r == code, "tls_build returned %d, not %d: %s", r, code, err);
    ck_assert_ptr_null(t.server);
    ck_assert_ptr_null(t.client);
    for (const char *const *w = wants; *w; w++)
        ck_assert_msg(strstr(err, *w) != NULL, "'%s' is not in: %s", *w, err);
    ck_assert_msg(strstr(err, PASSWORD) == NULL && strstr(err, WRONG_PASSWORD) == NULL,
                  "a password is in: %s", err);
    ck_assert_msg(ERR_peek_error() == 0, "tls_build left errors in OpenSSL's queue");
}

START_TEST(test_disabled)
{
    struct mlb_config c;
    base_config(&c);
    struct tls_contexts t = {(SSL_CTX *)1, (SSL_CTX *)1};
    ck_assert_int_eq(tls_build(&c, &t, err, sizeof(err)), 0);
    ck_assert_str_eq(err, "");
    ck_assert_ptr_null(t.server);
    ck_assert_ptr_null(t.client);
    tls_free(&t);
    config_free(&c);
}
END_TEST

START_TEST(test_server_context)
{
    struct mlb_config c;
    base_config(&c);
    c.tls_mode = MLB_TLS_REQUIRE;
    set_path(&c.tls_certificate_key_file, test_path("server.pem"));
    struct tls_contexts t;
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);
    ck_assert_ptr_nonnull(t.server);
    ck_assert_ptr_null(t.client);
    SSL_CTX *s = t.server;
    ck_assert_int_eq(SSL_CTX_get_min_proto_version(s), TLS1_2_VERSION);
    uint64_t opts = SSL_CTX_get_options(s);
    ck_assert(opts & SSL_OP_NO_RENEGOTIATION);
    ck_assert(opts & SSL_OP_CIPHER_SERVER_PREFERENCE);
    ck_assert(opts & SSL_OP_NO_COMPRESSION);
    ck_assert_int_ge(SSL_CTX_get_security_level(s), 2);
    ck_assert_int_eq(SSL_CTX_get_session_cache_mode(s), SSL_SESS_CACHE_SERVER);
    ck_assert_int_eq(SSL_CTX_get_verify_mode(s), SSL_VERIFY_NONE);
    ck_assert_ptr_nonnull(SSL_CTX_get0_certificate(s));
    ck_assert_ptr_nonnull(SSL_CTX_get0_privatekey(s));
    tls_free(&t);
    ck_assert_ptr_null(t.server);
    tls_free(&t); /* twice is harmless */

    /* Client certificates: optional asks, required also refuses a client without one. */
    c.tls_client_certificates = MLB_TLS_CERTS_OPTIONAL;
    set_path(&c.tls_ca_file, test_path("ca.pem"));
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(SSL_CTX_get_verify_mode(t.server), SSL_VERIFY_PEER);
    STACK_OF(X509_NAME) *names = SSL_CTX_get_client_CA_list(t.server);
    ck_assert_int_eq(sk_X509_NAME_num(names), 1);
    tls_free(&t);
    c.tls_client_certificates = MLB_TLS_CERTS_REQUIRED;
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(SSL_CTX_get_verify_mode(t.server),
                     SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    tls_free(&t);
    config_free(&c);
}
END_TEST

START_TEST(test_client_context)
{
    struct mlb_config c;
    base_config(&c);
    c.upstream_tls = 1;
    struct tls_contexts t;
    /* No CA file: the system's trust store. */
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);
    ck_assert_ptr_null(t.server);
    ck_assert_ptr_nonnull(t.client);
    SSL_CTX *s = t.client;
    ck_assert_int_eq(SSL_CTX_get_min_proto_version(s), TLS1_2_VERSION);
    ck_assert(SSL_CTX_get_options(s) & SSL_OP_NO_RENEGOTIATION);
    ck_assert_int_ge(SSL_CTX_get_security_level(s), 2);
    ck_assert_int_eq(SSL_CTX_get_session_cache_mode(s),
                     SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    ck_assert_int_eq(SSL_CTX_get_verify_mode(s), SSL_VERIFY_PEER);
    ck_assert_ptr_null(SSL_CTX_get0_certificate(s));
    tls_free(&t);

    c.upstream_tls_allow_invalid_certificates = 1;
    set_path(&c.upstream_tls_ca_file, test_path("ca.pem"));
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(SSL_CTX_get_verify_mode(t.client), SSL_VERIFY_NONE);
    tls_free(&t);

    /* A client certificate whose key is encrypted, with its password file ("\n" or "\r\n"). */
    c.upstream_tls_allow_invalid_certificates = 0;
    set_path(&c.upstream_tls_certificate_key_file, test_path("client-enc.pem"));
    const char *pw_files[] = {"password.txt", "password-crlf.txt"};
    for (int i = 0; i < 2; i++) {
        set_path(&c.upstream_tls_certificate_key_file_password, test_path(pw_files[i]));
        ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s: %s", pw_files[i], err);
        ck_assert_ptr_nonnull(SSL_CTX_get0_certificate(t.client));
        ck_assert_ptr_nonnull(SSL_CTX_get0_privatekey(t.client));
        ck_assert_int_eq(SSL_CTX_check_private_key(t.client), 1);
        tls_free(&t);
    }
    /* An unencrypted key needs no password. */
    set_path(&c.upstream_tls_certificate_key_file_password, NULL);
    set_path(&c.upstream_tls_certificate_key_file, test_path("client-plain.pem"));
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);
    tls_free(&t);
    config_free(&c);
}
END_TEST

START_TEST(test_unreadable_files)
{
    struct mlb_config c;
    base_config(&c);
    c.tls_mode = MLB_TLS_ALLOW;
    set_path(&c.tls_certificate_key_file, test_path("missing.pem"));
    char want[PATH_MAX + 128];
    snprintf(want, sizeof(want),
             "[mongolb] tls_certificate_key_file: %s: cannot read it: No such file or directory",
             test_path("missing.pem"));
    expect_failure(&c, -ENOENT, (const char *[]){want, NULL});
    ck_assert_str_eq(err, want);

    /* A directory is no file. */
    set_path(&c.tls_certificate_key_file, test_dir);
    snprintf(want, sizeof(want),
             "[mongolb] tls_certificate_key_file: %s: cannot read it: Is a directory", test_dir);
    expect_failure(&c, -EISDIR, (const char *[]){want, NULL});

    /* A file mongolb may not read, unless this runs as root, which may read anything. */
    if (geteuid() != 0) {
        test_write_file("secret.pem", "x");
        ck_assert_int_eq(chmod(test_path("secret.pem"), 0), 0);
        set_path(&c.tls_certificate_key_file, test_path("secret.pem"));
        expect_failure(&c, -EACCES, (const char *[]){"Permission denied", NULL});
    }

    /* Towards the servers: the CA file and the password file. */
    config_free(&c);
    base_config(&c);
    c.upstream_tls = 1;
    set_path(&c.upstream_tls_ca_file, test_path("no-ca.pem"));
    snprintf(want, sizeof(want),
             "[upstream] tls_ca_file: %s: cannot read it: No such file or directory",
             test_path("no-ca.pem"));
    expect_failure(&c, -ENOENT, (const char *[]){want, NULL});
    set_path(&c.upstream_tls_ca_file, NULL);
    set_path(&c.upstream_tls_certificate_key_file, test_path("client-enc.pem"));
    set_path(&c.upstream_tls_certificate_key_file_password, test_path("no-password.txt"));
    snprintf(want, sizeof(want),
             "[upstream] tls_certificate_key_file_password: %s: cannot read it: No such file or "
             "directory",
             test_path("no-password.txt"));
    expect_failure(&c, -ENOENT, (const char *[]){want, NULL});
    config_free(&c);
}
END_TEST

START_TEST(test_certificate_and_key_problems)
{
    struct mlb_config c;
    base_config(&c);
    c.tls_mode = MLB_TLS_REQUIRE;
    char want[PATH_MAX + 256];

    set_path(&c.tls_certificate_key_file, test_path("mismatch.pem"));
    snprintf(want, sizeof(want),
             "[mongolb] tls_certificate_key_file: %s: the private key does not match the "
             "certificate (",
             test_path("mismatch.pem"));
    expect_failure(&c, -EINVAL, (const char *[]){want, "key values mismatch", NULL});

    /* A certificate without its key, and a key without its certificate. */
    set_path(&c.tls_certificate_key_file, test_path("server-cert.pem"));
    snprintf(want, sizeof(want),
             "[mongolb] tls_certificate_key_file: %s: no private key could be read from it; the "
             "file must hold the certificate and its private key, in PEM",
             test_path("server-cert.pem"));
    expect_failure(&c, -EINVAL, (const char *[]){want, NULL});
    set_path(&c.tls_certificate_key_file, test_path("server-key.pem"));
    snprintf(want, sizeof(want),
             "[mongolb] tls_certificate_key_file: %s: no usable certificate could be read from it",
             test_path("server-key.pem"));
    expect_failure(&c, -EINVAL, (const char *[]){want, NULL});
    set_path(&c.tls_certificate_key_file, test_path("garbage.pem"));
    expect_failure(&c, -EINVAL,
                   (const char *[]){test_path("garbage.pem"), "no usable certificate", NULL});

    /* An own certificate outside its validity period is refused, as mongod refuses it. */
    set_path(&c.tls_certificate_key_file, test_path("expired.pem"));
    snprintf(want, sizeof(want),
             "[mongolb] tls_certificate_key_file: %s: the certificate (CN=expired) expired on "
             "2020-02-01 00:00:00 UTC; renew it",
             test_path("expired.pem"));
    expect_failure(&c, -EINVAL, (const char *[]){want, NULL});
    ck_assert_str_eq(err, want);
    set_path(&c.tls_certificate_key_file, test_path("future.pem"));
    snprintf(want, sizeof(want),
             "[mongolb] tls_certificate_key_file: %s: the certificate (CN=future) is not valid "
             "before 2099-01-01 00:00:00 UTC",
             test_path("future.pem"));
    expect_failure(&c, -EINVAL, (const char *[]){want, NULL});

    /* RSA 1024 is below security level 2. */
    set_path(&c.tls_certificate_key_file, test_path("weak.pem"));
    expect_failure(&c, -EINVAL, (const char *[]){test_path("weak.pem"), "too small", NULL});

    /* The key mongolb presents to applications cannot be encrypted: there is no password key. */
    set_path(&c.tls_certificate_key_file, test_path("client-enc.pem"));
    snprintf(want, sizeof(want),
             "[mongolb] tls_certificate_key_file: %s: the private key is encrypted, but mongolb "
             "reads this key without a password",
             test_path("client-enc.pem"));
    expect_failure(&c, -EINVAL, (const char *[]){want, NULL});

    /* A CA file without a CA in it. */
    set_path(&c.tls_certificate_key_file, test_path("server.pem"));
    c.tls_client_certificates = MLB_TLS_CERTS_REQUIRED;
    set_path(&c.tls_ca_file, test_path("garbage.pem"));
    snprintf(want, sizeof(want),
             "[mongolb] tls_ca_file: %s: no CA certificate could be read from it (",
             test_path("garbage.pem"));
    expect_failure(&c, -EINVAL, (const char *[]){want, NULL});
    config_free(&c);

    /* Unset files that the mode needs, as a configuration built by hand could have them. */
    base_config(&c);
    c.tls_mode = MLB_TLS_PREFER;
    expect_failure(&c, -EINVAL,
                   (const char *[]){"[mongolb] tls_certificate_key_file: not set, but tls_mode = "
                                    "prefer needs it",
                                    NULL});
    config_free(&c);
}
END_TEST

START_TEST(test_password_problems)
{
    struct mlb_config c;
    base_config(&c);
    c.upstream_tls = 1;
    set_path(&c.upstream_tls_certificate_key_file, test_path("client-enc.pem"));
    char want[PATH_MAX * 2 + 256];

    /* An encrypted key without a password file. */
    snprintf(want, sizeof(want),
             "[upstream] tls_certificate_key_file: %s: the private key is encrypted; set "
             "tls_certificate_key_file_password to a file holding its password",
             test_path("client-enc.pem"));
    expect_failure(&c, -EINVAL, (const char *[]){want, NULL});
    ck_assert_str_eq(err, want);

    /* A wrong password: both files named, neither password shown. */
    set_path(&c.upstream_tls_certificate_key_file_password, test_path("wrong-password.txt"));
    snprintf(want, sizeof(want),
             "[upstream] tls_certificate_key_file_password: %s: the password does not decrypt "
             "the private key in %s (",
             test_path("wrong-password.txt"), test_path("client-enc.pem"));
    expect_failure(&c, -EINVAL, (const char *[]){want, NULL});
    ck_assert_ptr_null(strstr(err, "correct horse"));

    /* An empty first line, and a password longer than OpenSSL takes. */
    set_path(&c.upstream_tls_certificate_key_file_password, test_path("empty-password.txt"));
    snprintf(want, sizeof(want),
             "[upstream] tls_certificate_key_file_password: %s: the first line is empty; it must "
             "hold the password",
             test_path("empty-password.txt"));
    expect_failure(&c, -EINVAL, (const char *[]){want, NULL});
    char *long_pw = malloc(TLS_PASSWORD_MAX + 3);
    ck_assert_ptr_nonnull(long_pw);
    memset(long_pw, 'x', TLS_PASSWORD_MAX + 1);
    strcpy(long_pw + TLS_PASSWORD_MAX + 1, "\n");
    test_write_file("long-password.txt", long_pw);
    set_path(&c.upstream_tls_certificate_key_file_password, test_path("long-password.txt"));
    snprintf(want, sizeof(want),
             "[upstream] tls_certificate_key_file_password: %s: the password is longer than 1023 "
             "bytes",
             test_path("long-password.txt"));
    expect_failure(&c, -EINVAL, (const char *[]){want, NULL});
    ck_assert_ptr_null(strstr(err, "xxxxxxxx"));
    free(long_pw);

    /* The right password for a key that is not the certificate's: a mismatch, named as one. */
    set_path(&c.upstream_tls_certificate_key_file, test_path("mismatch-enc.pem"));
    set_path(&c.upstream_tls_certificate_key_file_password, test_path("password.txt"));
    snprintf(want, sizeof(want),
             "[upstream] tls_certificate_key_file: %s: the private key does not match the "
             "certificate (",
             test_path("mismatch-enc.pem"));
    expect_failure(&c, -EINVAL, (const char *[]){want, NULL});
    config_free(&c);
}
END_TEST

START_TEST(test_every_problem_reported)
{
    struct mlb_config c;
    base_config(&c);
    c.tls_mode = MLB_TLS_REQUIRE;
    set_path(&c.tls_certificate_key_file, test_path("mismatch.pem"));
    c.upstream_tls = 1;
    set_path(&c.upstream_tls_ca_file, test_path("no-ca.pem"));
    set_path(&c.upstream_tls_certificate_key_file, test_path("expired.pem"));
    /* The first problem's code is returned; every problem has its line. */
    expect_failure(&c, -EINVAL,
                   (const char *[]){"[mongolb] tls_certificate_key_file: ", "does not match",
                                    "[upstream] tls_ca_file: ", "No such file or directory",
                                    "[upstream] tls_certificate_key_file: ", "expired on", NULL});
    int lines = 1;
    for (const char *q = err; *q; q++)
        lines += *q == '\n';
    ck_assert_int_eq(lines, 3);
    ck_assert_int_ne(err[strlen(err) - 1], '\n');

    /* A short buffer is cut, never overrun, and still terminated. */
    char small[40];
    struct tls_contexts t;
    ck_assert_int_eq(tls_build(&c, &t, small, sizeof(small)), -EINVAL);
    ck_assert_uint_eq(strlen(small), sizeof(small) - 1);
    ck_assert_int_eq(tls_build(&c, &t, NULL, 0), -EINVAL);
    config_free(&c);
}
END_TEST

START_TEST(test_last_error)
{
    char buf[1024];
    ERR_clear_error();
    ck_assert_str_eq(tls_last_error(buf, sizeof(buf)), "no reason given by OpenSSL");
    BIO *b = BIO_new_file(test_path("nothing-here.pem"), "r");
    ck_assert_ptr_null(b);
    const char *s = tls_last_error(buf, sizeof(buf));
    ck_assert_ptr_eq(s, buf);
    ck_assert_msg(strstr(buf, "No such file or directory") != NULL, "%s", buf);
    ck_assert_ptr_null(strchr(buf, '\n'));
    ck_assert_uint_eq(ERR_peek_error(), 0);
    /* A tiny buffer is cut and terminated. */
    BIO_new_file(test_path("nothing-here.pem"), "r");
    char tiny[8];
    tls_last_error(tiny, sizeof(tiny));
    ck_assert_uint_eq(strlen(tiny), 7);
    ck_assert_uint_eq(ERR_peek_error(), 0);
}
END_TEST

/* A context that cannot be created (no memory: fault.h's tls_context point) is a problem with
 * its side named, and nothing is left half built. */
START_TEST(test_context_cannot_be_created)
{
    struct mlb_config c;
    base_config(&c);
    c.tls_mode = MLB_TLS_REQUIRE;
    set_path(&c.tls_certificate_key_file, test_path("server.pem"));
    c.upstream_tls = true;
    set_path(&c.upstream_tls_ca_file, test_path("ca.pem"));
    char ferr[128];
    ck_assert_int_eq(fault_init("tls_context:1", ferr, sizeof(ferr)), 0);
    expect_failure(&c, -ENOMEM,
                   (const char *const[]){
                       "cannot create the TLS context towards applications (out of memory)", NULL});
    /* The second context (towards the servers) fails after the first was made: it is freed. */
    ck_assert_int_eq(fault_init("tls_context:2", ferr, sizeof(ferr)), 0);
    expect_failure(&c, -ENOMEM,
                   (const char *const[]){
                       "cannot create the TLS context towards the servers (out of memory)", NULL});
    ck_assert_int_eq(fault_init(NULL, ferr, sizeof(ferr)), 0);
    struct tls_contexts t;
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);
    tls_free(&t);
    config_free(&c);
}
END_TEST

/* tls_client_certificates without a CA file to check them against is refused, with both keys
 * named (the configuration's own check says so too; tls_build must not rely on it). */
START_TEST(test_client_certificates_need_a_ca)
{
    struct mlb_config c;
    base_config(&c);
    c.tls_mode = MLB_TLS_REQUIRE;
    set_path(&c.tls_certificate_key_file, test_path("server.pem"));
    c.tls_client_certificates = MLB_TLS_CERTS_REQUIRED;
    expect_failure(&c, -EINVAL,
                   (const char *const[]){"[mongolb] tls_ca_file: not set, but "
                                         "tls_client_certificates = required needs it",
                                         NULL});
    /* An empty buffer gets nothing written and is handed back. */
    char none[1] = {'x'};
    ck_assert_ptr_eq(tls_last_error(none, 0), none);
    ck_assert_int_eq(none[0], 'x');
    config_free(&c);
}
END_TEST

START_TEST(test_warnings)
{
    struct mlb_config c;
    base_config(&c);
    char buf[2048];
    ck_assert_int_eq(tls_warnings(&c, buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "");
    c.upstream_tls = 1;
    ck_assert_int_eq(tls_warnings(&c, buf, sizeof(buf)), 0);
    c.upstream_tls_allow_invalid_hostnames = 1;
    ck_assert_int_eq(tls_warnings(&c, buf, sizeof(buf)), 1);
    ck_assert_ptr_nonnull(strstr(buf, "[upstream] tls_allow_invalid_hostnames = true: "));
    c.upstream_tls_allow_invalid_certificates = 1;
    ck_assert_int_eq(tls_warnings(&c, buf, sizeof(buf)), 2);
    ck_assert_ptr_eq(strstr(buf, "[upstream] tls_allow_invalid_certificates = true: "), buf);
    ck_assert_ptr_nonnull(strstr(buf, "\n[upstream] tls_allow_invalid_hostnames = true: "));
    ck_assert_int_ne(buf[strlen(buf) - 1], '\n');
    /* Without tls = true the keys do nothing, so there is nothing to warn about. */
    c.upstream_tls = 0;
    ck_assert_int_eq(tls_warnings(&c, buf, sizeof(buf)), 0);
    config_free(&c);
}
END_TEST

START_TEST(test_client_prepare)
{
    struct mlb_config c;
    base_config(&c);
    c.upstream_tls = 1;
    struct tls_contexts t;
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);

    /* A host name: SNI, and the name to check. */
    SSL *ssl = SSL_new(t.client);
    ck_assert_int_eq(tls_client_prepare(ssl, "db1.example.com", true), 0);
    ck_assert_str_eq(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), "db1.example.com");
    ck_assert_str_eq(X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0), "db1.example.com");
    ck_assert_ptr_null(X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 1));
    SSL_free(ssl);

    /* A fully qualified name loses its final dot in both. */
    ssl = SSL_new(t.client);
    ck_assert_int_eq(tls_client_prepare(ssl, "db1.example.com.", true), 0);
    ck_assert_str_eq(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), "db1.example.com");
    ck_assert_str_eq(X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0), "db1.example.com");
    SSL_free(ssl);

    /* Without the host check: SNI only. */
    ssl = SSL_new(t.client);
    ck_assert_int_eq(tls_client_prepare(ssl, "db1.example.com", false), 0);
    ck_assert_str_eq(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), "db1.example.com");
    ck_assert_ptr_null(X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0));
    SSL_free(ssl);

    /* IP addresses: no SNI, and the address to check; an IPv6 zone is dropped. */
    static const struct {
        const char *host, *ip;
    } ips[] = {
        {"127.0.0.1", "127.0.0.1"},
        {"::1", "0:0:0:0:0:0:0:1"},
        {"fe80::1%eth0", "FE80:0:0:0:0:0:0:1"},
    };
    for (size_t i = 0; i < sizeof(ips) / sizeof(ips[0]); i++) {
        ssl = SSL_new(t.client);
        ck_assert_int_eq(tls_client_prepare(ssl, ips[i].host, true), 0);
        ck_assert_ptr_null(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
        ck_assert_ptr_null(X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0));
        char *ip = X509_VERIFY_PARAM_get1_ip_asc(SSL_get0_param(ssl));
        ck_assert_ptr_nonnull(ip);
        ck_assert_msg(strcasecmp(ip, ips[i].ip) == 0, "%s: %s", ips[i].host, ip);
        OPENSSL_free(ip);
        SSL_free(ssl);
    }
    ssl = SSL_new(t.client);
    ck_assert_int_eq(tls_client_prepare(ssl, "127.0.0.1", false), 0);
    ck_assert_ptr_null(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    ck_assert_ptr_null(X509_VERIFY_PARAM_get1_ip_asc(SSL_get0_param(ssl)));
    ck_assert_int_eq(tls_client_prepare(ssl, "", true), -EINVAL);
    ck_assert_int_eq(tls_client_prepare(ssl, ".", true), -EINVAL);
    ck_assert_int_eq(tls_client_prepare(ssl, NULL, true), -EINVAL);
    ck_assert_int_eq(tls_client_prepare(NULL, "h", true), -EINVAL);
    SSL_free(ssl);
    tls_free(&t);
    config_free(&c);
}
END_TEST

/*
 * Runs a handshake between the client c and the server s over a BIO pair, as the stream layer's
 * memory BIOs would carry it. Returns true if both sides finished.
 */
static bool handshake_ssl(SSL *c, SSL *s)
{
    BIO *cb, *sb;
    ck_assert_int_eq(BIO_new_bio_pair(&cb, 0, &sb, 0), 1);
    SSL_set_bio(c, cb, cb);
    SSL_set_bio(s, sb, sb);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    bool c_done = false, s_done = false, failed = false;
    for (int i = 0; i < 50 && !failed && !(c_done && s_done); i++) {
        SSL *sides[2] = {c, s};
        bool *done[2] = {&c_done, &s_done};
        for (int k = 0; k < 2 && !failed; k++) {
            if (*done[k])
                continue;
            int r = SSL_do_handshake(sides[k]);
            if (r == 1) {
                *done[k] = true;
            } else {
                int e = SSL_get_error(sides[k], r);
                failed = e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
            }
        }
    }
    return c_done && s_done && !failed;
}

/*
 * Runs a handshake between an SSL from client_ctx (prepared for host) and one from server_ctx
 * (handshake_ssl). Returns true if both sides finished; *verify gets the client's verification
 * result.
 */
static bool handshake(SSL_CTX *client_ctx, SSL_CTX *server_ctx, const char *host, bool verify_host,
                      long *verify, bool *server_saw_cert)
{
    SSL *c = SSL_new(client_ctx), *s = SSL_new(server_ctx);
    ck_assert(c && s);
    ck_assert_int_eq(tls_client_prepare(c, host, verify_host), 0);
    bool ok = handshake_ssl(c, s);
    *verify = SSL_get_verify_result(c);
    if (server_saw_cert) {
        X509 *peer = SSL_get1_peer_certificate(s);
        *server_saw_cert = peer != NULL;
        X509_free(peer);
    }
    SSL_free(c);
    SSL_free(s);
    ERR_clear_error();
    return ok;
}

/* The common name of a certificate's subject, in buf. */
static const char *subject_cn(X509 *cert, char *buf, int len)
{
    ck_assert_ptr_nonnull(cert);
    ck_assert_int_gt(
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, len), 0);
    return buf;
}

START_TEST(test_handshakes)
{
    struct mlb_config c;
    base_config(&c);
    c.tls_mode = MLB_TLS_REQUIRE;
    set_path(&c.tls_certificate_key_file, test_path("server.pem"));
    c.upstream_tls = 1;
    set_path(&c.upstream_tls_ca_file, test_path("ca.pem"));
    struct tls_contexts t;
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);
    long v;
    /* The certificate is for localhost and 127.0.0.1. */
    ck_assert(handshake(t.client, t.server, "localhost", true, &v, NULL));
    ck_assert_int_eq(v, X509_V_OK);
    ck_assert(handshake(t.client, t.server, "127.0.0.1", true, &v, NULL));
    ck_assert(!handshake(t.client, t.server, "db.example.com", true, &v, NULL));
    ck_assert_int_eq(v, X509_V_ERR_HOSTNAME_MISMATCH);
    ck_assert(!handshake(t.client, t.server, "127.0.0.2", true, &v, NULL));
    ck_assert_int_eq(v, X509_V_ERR_IP_ADDRESS_MISMATCH);
    /* tls_allow_invalid_hostnames: the caller passes verify_host = false. */
    ck_assert(handshake(t.client, t.server, "db.example.com", false, &v, NULL));
    tls_free(&t);

    /* The system's trust store does not know the test CA, unless invalid certificates pass. */
    set_path(&c.upstream_tls_ca_file, NULL);
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);
    ck_assert(!handshake(t.client, t.server, "localhost", true, &v, NULL));
    ck_assert_int_eq(v, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
    tls_free(&t);
    c.upstream_tls_allow_invalid_certificates = 1;
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);
    ck_assert(handshake(t.client, t.server, "db.example.com", true, &v, NULL));
    tls_free(&t);
    c.upstream_tls_allow_invalid_certificates = 0;
    set_path(&c.upstream_tls_ca_file, test_path("ca.pem"));

    /* Client certificates required: refused without one, accepted with the encrypted one. */
    c.tls_client_certificates = MLB_TLS_CERTS_REQUIRED;
    set_path(&c.tls_ca_file, test_path("ca.pem"));
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);
    bool saw = true;
    ck_assert(!handshake(t.client, t.server, "localhost", true, &v, &saw));
    ck_assert(!saw);
    tls_free(&t);
    set_path(&c.upstream_tls_certificate_key_file, test_path("client-enc.pem"));
    set_path(&c.upstream_tls_certificate_key_file_password, test_path("password.txt"));
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);
    ck_assert(handshake(t.client, t.server, "localhost", true, &v, &saw));
    ck_assert(saw);
    tls_free(&t);
    /* Optional: a client without a certificate is let in. */
    c.tls_client_certificates = MLB_TLS_CERTS_OPTIONAL;
    set_path(&c.upstream_tls_certificate_key_file, NULL);
    set_path(&c.upstream_tls_certificate_key_file_password, NULL);
    ck_assert_msg(tls_build(&c, &t, err, sizeof(err)) == 0, "%s", err);
    ck_assert(handshake(t.client, t.server, "localhost", true, &v, &saw));
    ck_assert(!saw);
    /* A connection keeps its context alive after tls_free(), as a reload needs: connections
     * begun before a reload finish their handshakes with the certificates they began with. */
    SSL *kept = SSL_new(t.server), *kept_client = SSL_new(t.client);
    ck_assert(kept && kept_client);
    SSL_CTX *old_server = t.server;
    tls_free(&t);
    ck_assert_ptr_null(t.server);
    ck_assert_ptr_null(t.client);
    ck_assert_ptr_eq(SSL_get_SSL_CTX(kept), old_server);
    char cn[64];
    ck_assert_str_eq(subject_cn(SSL_CTX_get0_certificate(old_server), cn, sizeof(cn)), "localhost");
    ck_assert_int_eq(SSL_CTX_check_private_key(old_server), 1);
    ck_assert_int_eq(SSL_get_verify_mode(kept), SSL_VERIFY_PEER); /* optional client certificates */
    ck_assert_int_eq(tls_client_prepare(kept_client, "localhost", true), 0);
    ck_assert(handshake_ssl(kept_client, kept));
    ck_assert_int_eq(SSL_get_verify_result(kept_client), X509_V_OK);
    X509 *peer = SSL_get1_peer_certificate(kept_client);
    ck_assert_str_eq(subject_cn(peer, cn, sizeof(cn)), "localhost");
    X509_free(peer);
    ck_assert_ptr_null(SSL_get0_peer_certificate(kept)); /* this client sent none */
    SSL_free(kept_client);
    SSL_free(kept);
    ERR_clear_error();
    config_free(&c);
}
END_TEST

/* Returns the mongolb binary next to this test's build tree (build/X/tests/.. -> build/X). */
static bool find_mongolb(char *buf, size_t len)
{
    const char *env = getenv("MONGOLB_BIN");
    if (env && *env) {
        snprintf(buf, len, "%s", env);
        return access(buf, X_OK) == 0;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return false;
    self[n] = '\0';
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(self, '/');
        if (!slash)
            return false;
        *slash = '\0';
    }
    snprintf(buf, len, "%s/mongolb", self);
    /* A binary older than the library this test links was built before the code under test. */
    char lib[PATH_MAX + 32];
    snprintf(lib, sizeof(lib), "%s/libmongolb.a", self);
    struct stat bin_st, lib_st;
    if (stat(buf, &bin_st) != 0 || access(buf, X_OK) != 0)
        return false;
    return stat(lib, &lib_st) != 0 || bin_st.st_mtime >= lib_st.st_mtime;
}

/* Runs mongolb --check-config -c ini; returns its exit code, its output (both streams) in out. */
static int check_config(const char *bin, const char *ini, char *out, size_t len)
{
    char *cmd = NULL;
    ck_assert_int_gt(asprintf(&cmd, "'%s' --check-config -c '%s' 2>&1", bin, ini), 0);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    free(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(test_check_config_cli)
{
    char bin[PATH_MAX + 32];
    if (!find_mongolb(bin, sizeof(bin))) {
        fprintf(stderr,
                "check_tls: skipping the --check-config run: %s is missing or older than the "
                "library (build it, or set MONGOLB_BIN)\n",
                bin);
        return;
    }
    char ini[PATH_MAX * 3], out[8192];
    snprintf(ini, sizeof(ini),
             "[mongolb]\ntls_mode = require\ntls_certificate_key_file = %s\n"
             "[upstream]\nseeds = 127.0.0.1:27017\n",
             test_path("mismatch.pem"));
    test_write_file("mismatch.ini", ini);
    int rc = check_config(bin, test_path("mismatch.ini"), out, sizeof(out));
    ck_assert_msg(rc == 1, "exit %d: %s", rc, out);
    char want[PATH_MAX * 2 + 128];
    snprintf(want, sizeof(want),
             "%s: [mongolb] tls_certificate_key_file: %s: the private key does not match the "
             "certificate (",
             test_path("mismatch.ini"), test_path("mismatch.pem"));
    ck_assert_msg(strstr(out, want) != NULL, "'%s' is not in: %s", want, out);
    ck_assert_ptr_null(strstr(out, "configuration is valid"));

    /* A wrong password: the path, never the password. */
    snprintf(ini, sizeof(ini),
             "[upstream]\nseeds = 127.0.0.1:27017\ntls = true\ntls_certificate_key_file = %s\n"
             "tls_certificate_key_file_password = %s\n",
             test_path("client-enc.pem"), test_path("wrong-password.txt"));
    test_write_file("wrong-password.ini", ini);
    rc = check_config(bin, test_path("wrong-password.ini"), out, sizeof(out));
    ck_assert_msg(rc == 1, "exit %d: %s", rc, out);
    ck_assert_msg(strstr(out, test_path("wrong-password.txt")) != NULL, "%s", out);
    ck_assert_ptr_null(strstr(out, WRONG_PASSWORD));
    ck_assert_ptr_null(strstr(out, PASSWORD));

    /* A good configuration passes, with the warnings it calls for. */
    snprintf(ini, sizeof(ini),
             "[mongolb]\ntls_mode = require\ntls_certificate_key_file = %s\n"
             "[upstream]\nseeds = 127.0.0.1:27017\ntls = true\ntls_ca_file = %s\n"
             "tls_certificate_key_file = %s\ntls_certificate_key_file_password = %s\n"
             "tls_allow_invalid_hostnames = true\n",
             test_path("server.pem"), test_path("ca.pem"), test_path("client-enc.pem"),
             test_path("password.txt"));
    test_write_file("good.ini", ini);
    rc = check_config(bin, test_path("good.ini"), out, sizeof(out));
    ck_assert_msg(rc == 0, "exit %d: %s", rc, out);
    ck_assert_ptr_nonnull(strstr(out, "configuration is valid"));
    ck_assert_ptr_nonnull(strstr(out, "warning: [upstream] tls_allow_invalid_hostnames = true"));
    ck_assert_ptr_null(strstr(out, PASSWORD));
}
END_TEST

Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("tls");
    /* Made once, in the parent, before the forked tests run; openssl takes a few seconds. */
    tcase_add_unchecked_fixture(tc, make_certificates, remove_certificates);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_disabled);
    tcase_add_test(tc, test_server_context);
    tcase_add_test(tc, test_client_context);
    tcase_add_test(tc, test_unreadable_files);
    tcase_add_test(tc, test_certificate_and_key_problems);
    tcase_add_test(tc, test_password_problems);
    tcase_add_test(tc, test_every_problem_reported);
    tcase_add_test(tc, test_last_error);
    tcase_add_test(tc, test_warnings);
    tcase_add_test(tc, test_context_cannot_be_created);
    tcase_add_test(tc, test_client_certificates_need_a_ca);
    tcase_add_test(tc, test_client_prepare);
    tcase_add_test(tc, test_handshakes);
    tcase_add_test(tc, test_check_config_cli);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(tls_suite)
