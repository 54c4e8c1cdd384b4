#pragma once
#include <stddef.h>

// TLS for the gRPC listener (OpenSSL), with ALPN "h2". Opaque handles keep OpenSSL's
// types out of Swift.
typedef struct reel_tls_ctx reel_tls_ctx;
typedef struct reel_tls reel_tls;

// NULL on failure, with a message in err.
reel_tls_ctx *reel_tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen);
void reel_tls_ctx_free(reel_tls_ctx *ctx);

reel_tls *reel_tls_new(reel_tls_ctx *ctx, int fd);
void reel_tls_free(reel_tls *t);

enum { REEL_TLS_OK = 0, REEL_TLS_WANT_READ = -1, REEL_TLS_WANT_WRITE = -2, REEL_TLS_CLOSED = -3, REEL_TLS_ERROR = -4 };

// REEL_TLS_OK when the handshake is done.
int reel_tls_handshake(reel_tls *t);
// 1 when the client chose h2 with ALPN.
int reel_tls_alpn_is_h2(reel_tls *t);
// > 0 bytes, or one of the codes above.
long reel_tls_read(reel_tls *t, void *buf, size_t len);
long reel_tls_write(reel_tls *t, const void *buf, size_t len);
