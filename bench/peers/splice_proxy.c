/*
 * splice_proxy — a minimal single-threaded epoll TCP proxy that forwards with splice(2):
 * socket -> pipe -> socket, one pipe pair per direction, the bytes never copied to user space.
 * The floor of scripts/proxy_bench.sh (BENCHMARKS.md, "Proxy"); not part of the library.
 *
 *   gcc -O2 -Wall -o splice_proxy bench/peers/splice_proxy.c
 *   splice_proxy [-p PIPE_SIZE] [HOST:]PORT UPSTREAM_HOST:PORT
 *
 * Listens on PORT (HOST defaults to 127.0.0.1; port 0 picks a free one) and prints exactly
 * one line `listening on IP:PORT` once bound. Every accepted connection gets a non-blocking
 * connect to the upstream; both sockets are registered once, edge-triggered, for in, out
 * and peer half-close. -p sets each pipe's capacity with F_SETPIPE_SZ (default: the kernel's,
 * 64 KiB). A direction's pipe is made when its first byte is ready, so an idle pair holds two
 * fds; it is closed when the direction has ended.
 *
 * Close propagation: a FIN is passed on (shutdown(SHUT_WR)) only once the pipe of that
 * direction is empty, so no tail is lost; the pair closes when both directions have ended.
 * An error or RST on either side, or a refused upstream, resets both (SO_LINGER 0). No
 * timeouts: a half-closed pair whose other peer never sends its FIN stays open. Against
 * tests/proxy_matrix.rs (PROXY_MATRIX_CMD='.../splice_proxy {listen_port}
 * 127.0.0.1:{upstream_port}') it passes 15 of the 16 cases; the one it fails is that missing
 * deadline.
 *
 * The traps: splice() from a socket returns EAGAIN both when the socket is empty and when the
 * pipe is full (a pipe holds 16 buffers, and small segments fill them long before 64 KiB).
 * So EAGAIN means "socket empty" only when the pipe is empty; otherwise the pipe is drained
 * to the other socket and the read is retried; when that socket is full, its EPOLLOUT
 * resumes both. splice() returns 0 only at EOF.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct pair;

struct end {
    struct pair *p;
    int fd;
    int side; /* 0: client, 1: upstream */
    int can_read, can_write;
};

/* Direction k forwards from e[k] to e[1 - k]. */
struct dir {
    int pipe[2];
    size_t len; /* bytes in the pipe */
    int eof, shut;
};

struct pair {
    struct end e[2];
    struct dir d[2];
    int dead;
    struct pair *next_dead;
};

static struct sockaddr_storage up_addr;
static socklen_t up_len;
static int pipe_size; /* 0: the kernel's default */
static size_t pipe_cap = 65536;
static int ep;
static struct pair *dead;
static char listener_tag;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int split_host_port(const char *arg, const char *default_host, char *host, size_t n,
                           const char **port) {
    const char *colon = strrchr(arg, ':');
    if (!colon) {
        snprintf(host, n, "%s", default_host);
        *port = arg;
        return 0;
    }
    size_t len = (size_t)(colon - arg);
    if (len >= n) return -1;
    memcpy(host, arg, len);
    host[len] = 0;
    if (host[0] == '[' && len >= 2 && host[len - 1] == ']') {
        memmove(host, host + 1, len - 2);
        host[len - 2] = 0;
    }
    *port = colon + 1;
    return 0;
}

static int resolve(const char *arg, const char *default_host, struct sockaddr_storage *out,
                   socklen_t *out_len) {
    char host[256];
    const char *port;
    if (split_host_port(arg, default_host, host, sizeof host, &port) < 0) return -1;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res;
    if (getaddrinfo(host, port, &hints, &res) != 0) return -1;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *out_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void kill_pair(struct pair *p, int reset) {
    if (p->dead) return;
    for (int i = 0; i < 2; i++) {
        if (reset) {
            struct linger l = {.l_onoff = 1, .l_linger = 0};
            setsockopt(p->e[i].fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
        close(p->e[i].fd);
        for (int j = 0; j < 2; j++)
            if (p->d[i].pipe[j] >= 0) close(p->d[i].pipe[j]);
    }
    /* Events for it may still sit in this turn's batch: free it after the batch. */
    p->dead = 1;
    p->next_dead = dead;
    dead = p;
}

static int make_pipe(struct dir *d) {
    if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0) return -1;
    if (pipe_size > 0 && fcntl(d->pipe[1], F_SETPIPE_SZ, pipe_size) < 0) return -1;
    return 0;
}

/* Moves what it can in direction k; -1 on an error (the pair is then reset). */
static int pump(struct pair *p, int k) {
    struct dir *d = &p->d[k];
    struct end *src = &p->e[k], *dst = &p->e[1 - k];
    for (;;) {
        int progress = 0;
        if (!d->eof && src->can_read) {
            if (d->pipe[0] < 0 && make_pipe(d) < 0) return -1;
            ssize_t n = splice(src->fd, NULL, d->pipe[1], NULL, pipe_cap,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                d->len += (size_t)n;
                progress = 1;
            } else if (n == 0) {
                d->eof = 1;
                progress = 1;
            } else if (errno == EAGAIN) {
                if (d->len == 0) src->can_read = 0; /* else: the pipe may be full */
            } else if (errno != EINTR) {
                return -1;
            }
        }
        if (d->len > 0 && dst->can_write) {
            ssize_t m = splice(d->pipe[0], NULL, dst->fd, NULL, d->len,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (m > 0) {
                d->len -= (size_t)m;
                progress = 1;
            } else if (m < 0 && errno == EAGAIN) {
                dst->can_write = 0;
            } else if (m < 0 && errno != EINTR) {
                return -1;
            }
        }
        if (d->eof && d->len == 0 && !d->shut) {
            if (shutdown(dst->fd, SHUT_WR) < 0) return -1;
            d->shut = 1;
            for (int j = 0; j < 2; j++) {
                if (d->pipe[j] >= 0) close(d->pipe[j]);
                d->pipe[j] = -1;
            }
        }
        if (!progress) return 0;
    }
}

static void on_event(struct end *e, uint32_t ev) {
    struct pair *p = e->p;
    if (p->dead) return;
    if (ev & EPOLLERR) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { /* a reset, or the upstream refused */
            kill_pair(p, 1);
            return;
        }
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) e->can_read = 1;
    if (ev & (EPOLLOUT | EPOLLHUP)) e->can_write = 1;
    if (pump(p, e->side) < 0 || pump(p, 1 - e->side) < 0) {
        kill_pair(p, 1);
        return;
    }
    if (p->d[0].shut && p->d[1].shut) kill_pair(p, 0);
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void accept_all(int lfd) {
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN) perror("splice_proxy: accept");
            return;
        }
        int u = socket(up_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct pair *p = u < 0 ? NULL : calloc(1, sizeof *p);
        if (!p || (connect(u, (struct sockaddr *)&up_addr, up_len) < 0 && errno != EINPROGRESS)) {
            struct linger l = {.l_onoff = 1, .l_linger = 0};
            setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            close(c);
            if (u >= 0) close(u);
            free(p);
            continue;
        }
        nodelay(c);
        nodelay(u);
        for (int i = 0; i < 2; i++) {
            p->e[i].p = p;
            p->e[i].side = i;
            p->d[i].pipe[0] = p->d[i].pipe[1] = -1;
        }
        p->e[0].fd = c;
        p->e[1].fd = u;
        for (int i = 0; i < 2; i++) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                     .data.ptr = &p->e[i]};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, p->e[i].fd, &ev) < 0) die("epoll_ctl");
        }
    }
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "p:h")) != -1) {
        if (opt == 'p') {
            pipe_size = atoi(optarg);
        } else {
            fprintf(stderr, "usage: splice_proxy [-p PIPE_SIZE] [HOST:]PORT UPSTREAM_HOST:PORT\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, "usage: splice_proxy [-p PIPE_SIZE] [HOST:]PORT UPSTREAM_HOST:PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_storage la;
    socklen_t la_len;
    if (resolve(argv[optind], "127.0.0.1", &la, &la_len) < 0) {
        fprintf(stderr, "splice_proxy: bad listen address %s\n", argv[optind]);
        return 2;
    }
    if (resolve(argv[optind + 1], "127.0.0.1", &up_addr, &up_len) < 0) {
        fprintf(stderr, "splice_proxy: bad upstream %s\n", argv[optind + 1]);
        return 2;
    }
    /* The capacity actually granted (rounded up to a power-of-two number of pages). */
    if (pipe_size > 0) {
        int probe[2];
        if (pipe(probe) < 0) die("pipe");
        int got = fcntl(probe[1], F_SETPIPE_SZ, pipe_size);
        if (got < 0) die("F_SETPIPE_SZ");
        pipe_cap = (size_t)got;
        close(probe[0]);
        close(probe[1]);
    }
    int lfd = socket(la.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (lfd < 0) die("socket");
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&la, la_len) < 0) die("bind");
    if (listen(lfd, 1024) < 0) die("listen");
    la_len = sizeof la;
    getsockname(lfd, (struct sockaddr *)&la, &la_len);
    char ip[INET6_ADDRSTRLEN];
    int port;
    if (la.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&la;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        printf("listening on [%s]:%d\n", ip, port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&la;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        port = ntohs(a->sin_port);
        printf("listening on %s:%d\n", ip, port);
    }
    fflush(stdout);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listener_tag};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl");
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &listener_tag)
                accept_all(lfd);
            else
                on_event(evs[i].data.ptr, evs[i].events);
        }
        while (dead) {
            struct pair *p = dead;
            dead = p->next_dead;
            free(p);
        }
    }
}
