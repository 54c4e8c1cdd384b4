#include "CReelTLS.h"
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>

struct reel_tls_ctx { SSL_CTX *ctx; };
struct reel_tls { SSL *ssl; };

static int select_h2(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                     const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl; (void)arg;
    for (unsigned int i = 0; i < inlen;) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen) break;
        if (n == 2 && memcmp(in + i + 1, "h2", 2) == 0) { *out = in + i + 1; *outlen = 2; return SSL_TLSEXT_ERR_OK; }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;  // gRPC needs h2
}

reel_tls_ctx *reel_tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) { snprintf(err, errlen, "SSL_CTX_new failed"); return NULL; }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(err, errlen, "cannot load certificate %s: %s", cert_file, ERR_reason_error_string(ERR_get_error()));
        SSL_CTX_free(ctx); return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "cannot load private key %s: %s", key_file, ERR_reason_error_string(ERR_get_error()));
        SSL_CTX_free(ctx); return NULL;
    }
    SSL_CTX_set_alpn_select_cb(ctx, select_h2, NULL);
    reel_tls_ctx *r = malloc(sizeof *r);
    r->ctx = ctx;
    return r;
}

void reel_tls_ctx_free(reel_tls_ctx *c) { if (c) { SSL_CTX_free(c->ctx); free(c); } }

reel_tls *reel_tls_new(reel_tls_ctx *c, int fd) {
    SSL *ssl = SSL_new(c->ctx);
    if (!ssl) return NULL;
    SSL_set_fd(ssl, fd);
    SSL_set_accept_state(ssl);
    reel_tls *t = malloc(sizeof *t);
    t->ssl = ssl;
    return t;
}

void reel_tls_free(reel_tls *t) { if (t) { SSL_free(t->ssl); free(t); } }

static int code(reel_tls *t, int rc) {
    switch (SSL_get_error(t->ssl, rc)) {
    case SSL_ERROR_WANT_READ: return REEL_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE: return REEL_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: return REEL_TLS_CLOSED;
    default: ERR_clear_error(); return REEL_TLS_ERROR;
    }
}

int reel_tls_handshake(reel_tls *t) {
    int rc = SSL_do_handshake(t->ssl);
    return rc == 1 ? REEL_TLS_OK : code(t, rc);
}

int reel_tls_alpn_is_h2(reel_tls *t) {
    const unsigned char *p = NULL; unsigned int n = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    return n == 2 && memcmp(p, "h2", 2) == 0;
}

long reel_tls_read(reel_tls *t, void *buf, size_t len) {
    size_t got = 0;
    int rc = SSL_read_ex(t->ssl, buf, len, &got);
    return rc == 1 ? (long)got : code(t, rc);
}

long reel_tls_write(reel_tls *t, const void *buf, size_t len) {
    size_t put = 0;
    int rc = SSL_write_ex(t->ssl, buf, len, &put);
    return rc == 1 ? (long)put : code(t, rc);
}
