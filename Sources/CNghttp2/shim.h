#pragma once
#include <nghttp2/nghttp2.h>

// Debian 12 ships nghttp2 1.52: the *2 APIs are absent; these keep call sites short.
static inline int reel_nghttp2_is_headers_request(const nghttp2_frame *f) {
    return f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST;
}
static inline int reel_nghttp2_frame_end_stream(const nghttp2_frame *f) {
    return (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
}
