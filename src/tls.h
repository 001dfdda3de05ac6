/*
 * tls.h: the OpenSSL contexts for both sides of the proxy, built from the configuration.
 *
 * One SSL_CTX serves applications (the [mongolb] tls_* keys) and one dials the servers (the
 * [upstream] tls_* keys). tls_build() reads every certificate, key, password and CA file the
 * configuration names, synchronously, through OpenSSL and plain reads; it never touches the event
 * loop, so it runs at start, on SIGHUP and under --check-config alike. The stream layer (stream.c)
 * creates one SSL per connection from these contexts and drives it with memory BIOs.
 *
 * What the contexts enforce, on both sides: TLS 1.2 or newer, no renegotiation, no compression,
 * and OpenSSL's default cipher suites and groups at security level 2 or above (112-bit security:
 * RSA and DH keys of at least 2048 bits, ECC keys of at least 224 bits, no RC4). The level is
 * raised to 2 if the system's OpenSSL configuration sets it lower, and left alone if it sets it
 * higher. The server context prefers its own cipher order.
 *
 * Reload: an SSL holds a reference to the SSL_CTX it was created from, so the proxy may build new
 * contexts on SIGHUP, swap them in for new connections, and tls_free() the old ones at once;
 * connections opened with them keep them alive until they close.
 *
 * Functions return 0 or a negative errno code unless said otherwise. No message ever holds a
 * password: only the path of the file it is in.
 */
#ifndef MONGOLB_TLS_H
#define MONGOLB_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "config.h"

/* The longest password a password file may hold (OpenSSL's PEM_BUFSIZE less one). */
#define TLS_PASSWORD_MAX 1023

struct tls_contexts {
    /*
     * Towards applications; NULL when tls_mode = disabled. A server certificate and key from
     * tls_certificate_key_file; client certificates per tls_client_certificates (none: not asked
     * for; optional: SSL_VERIFY_PEER, verified against tls_ca_file when sent; required: also
     * SSL_VERIFY_FAIL_IF_NO_PEER_CERT), with tls_ca_file's subjects sent as the acceptable CAs. A
     * server-side session cache (SSL_SESS_CACHE_SERVER, with a session id context) and OpenSSL's
     * session tickets, whose keys are new with every context, so a reload ends resumption of
     * sessions made under the old one.
     */
    SSL_CTX *server;
    /*
     * Towards the servers; NULL when [upstream] tls = false. Server certificates verified
     * (SSL_VERIFY_PEER) against tls_ca_file or, when it is not set, the system's trust store,
     * unless tls_allow_invalid_certificates (SSL_VERIFY_NONE). A client certificate and key from
     * tls_certificate_key_file when set. Session cache mode SSL_SESS_CACHE_CLIENT |
     * SSL_SESS_CACHE_NO_INTERNAL_STORE, and no new-session callback: OpenSSL keeps no sessions
     * itself, so whoever wants resumption towards a server installs one with
     * SSL_CTX_sess_set_new_cb() (taking a reference to each session it keeps) and hands the
     * session to SSL_set_session() on the next connection to the same server.
     */
    SSL_CTX *client;
};

/*
 * Builds the contexts cfg asks for into out (both NULL when TLS is off on both sides). Returns 0,
 * or a negative errno code with out's members NULL and every problem found written to err, one per
 * line, without a trailing newline: the section and key, the file's path, what is wrong, and
 * OpenSSL's reason where it gave one, e.g.
 *   [mongolb] tls_certificate_key_file: /etc/mongolb/server.pem: the private key does not match
 *   the certificate (x509 certificate routines: key values mismatch)
 * The code is that of the first problem: -ENOENT, -EACCES, -EISDIR and the like for a file that
 * cannot be opened, -EINVAL for a file's content, -ENOMEM. Problems reported: a file that cannot
 * be read; no certificate in a certificate file; an own certificate (server or client) that has
 * expired or is not yet valid, which is an error as in mongod (a peer that verifies would refuse
 * it anyway, and a reload keeps the running contexts); no private key, a key that does not match
 * the certificate, an encrypted key without a password file (or, for [mongolb], at all), a
 * password file that is unreadable, empty or too long, and a password that does not decrypt the
 * key; a CA file with no certificate in it.
 */
int tls_build(const struct mlb_config *cfg, struct tls_contexts *out, char *err, size_t err_len);

/* Drops the contexts' references (SSL_CTX_free) and sets both to NULL; t may hold NULLs. */
void tls_free(struct tls_contexts *t);

/*
 * Writes OpenSSL's error queue of this thread into buf as one line, oldest first, "library:
 * reason (detail)" joined by "; ", and empties the queue. Writes "no reason given by OpenSSL" if
 * the queue is empty. Returns buf.
 */
const char *tls_last_error(char *buf, size_t len);

/*
 * Writes the start-up warnings cfg calls for into buf, one per line without a trailing newline
 * ("" if none): [upstream] tls_allow_invalid_certificates or tls_allow_invalid_hostnames turned
 * on with tls = true. Returns how many there are (0 or more); the caller logs each line at warn.
 */
int tls_warnings(const struct mlb_config *cfg, char *buf, size_t len);

/*
 * Prepares an SSL made from tls_contexts.client for a connection to host (a host name, or an IP
 * address without brackets; an IPv6 %zone is ignored): sends host as SNI unless it is an IP
 * address (RFC 6066 allows only names there), and, when verify_host is true, makes the handshake
 * check the server's certificate against host: its DNS names (SSL_set1_host, with partial
 * wildcards such as www*.example.com refused) or its IP addresses (X509_VERIFY_PARAM_set1_ip_asc).
 * Pass verify_host = !cfg->upstream_tls_allow_invalid_hostnames. The check only fails a handshake
 * whose context verifies at all, that is unless tls_allow_invalid_certificates. Call it before
 * SSL_connect(). Returns 0, -EINVAL for an empty or unusable host, or -ENOMEM.
 */
int tls_client_prepare(SSL *ssl, const char *host, bool verify_host);

#endif
