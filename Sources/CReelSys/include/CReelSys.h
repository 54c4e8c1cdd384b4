#pragma once
#include <stdint.h>
#include <stddef.h>

// Thin wrappers over epoll/eventfd/socket calls whose C shapes (packed structs,
// macros) don't import cleanly into Swift.
int reel_epoll_create(void);
int reel_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
// Fills `datas`/`events` with up to `max` ready entries; returns the count or -1.
int reel_epoll_wait(int epfd, uint64_t *datas, uint32_t *events, int max, int timeout_ms);
int reel_eventfd(void);
int reel_eventfd_signal(int fd);
void reel_eventfd_drain(int fd);
// Listening socket with SO_REUSEADDR|SO_REUSEPORT, non-blocking. Returns fd or -errno.
int reel_listen_tcp(const char *host, int port, int backlog);
int reel_accept_nonblocking(int lfd);
int reel_connect_tcp(const char *host, int port);
int reel_set_nonblocking(int fd);
int reel_local_port(int fd);

enum {
    REEL_EPOLLIN = 0x001, REEL_EPOLLOUT = 0x004, REEL_EPOLLERR = 0x008, REEL_EPOLLHUP = 0x010,
    REEL_EPOLLRDHUP = 0x2000, REEL_EPOLL_CTL_ADD = 1, REEL_EPOLL_CTL_DEL = 2, REEL_EPOLL_CTL_MOD = 3,
};
