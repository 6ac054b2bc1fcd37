/*
 * oneway_upstream — the upstream of scripts/proxy_bench.sh's one-way runs (loadgen's
 * `upload` and `download` scenarios through a proxy). Single-threaded, epoll, edge-triggered.
 *
 *   gcc -O2 -Wall -o oneway_upstream bench/peers/oneway_upstream.c
 *   oneway_upstream sink [HOST:]PORT
 *   oneway_upstream source BYTES [HOST:]PORT
 *
 * sink: reads every connection to its EOF, checking each byte against loadgen's pattern (byte
 *   i of a connection is i % 251), then writes the number of bytes that matched before the
 *   first mismatch as one decimal line and closes (FIN).
 * source: writes BYTES bytes of the same pattern to every connection as soon as it is
 *   accepted, then half-closes (FIN), reads and discards until the client's EOF, closes.
 *
 * Prints exactly one line `listening on IP:PORT` once bound (HOST defaults to 127.0.0.1, port 0
 * picks a free one). An error on a connection closes it (the client counts the error).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define PERIOD 251
#define CHUNK 65536

struct conn {
    int fd;
    unsigned long long pos;  /* sink: bytes read; source: bytes written */
    unsigned long long good; /* sink: bytes that matched before the first mismatch */
    int bad, shut;
};

static unsigned char pattern[CHUNK + PERIOD];
static unsigned char buf[CHUNK];
static int source;
static unsigned long long total;
static char listener_tag;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void finish(struct conn *c) {
    close(c->fd);
    free(c);
}

/* Returns 1 when the connection was closed. */
static int serve(struct conn *c) {
    if (source) {
        while (!c->shut) {
            if (c->pos == total) {
                shutdown(c->fd, SHUT_WR);
                c->shut = 1;
                break;
            }
            size_t off = (size_t)(c->pos % PERIOD);
            size_t len = total - c->pos < CHUNK ? (size_t)(total - c->pos) : CHUNK;
            ssize_t n = send(c->fd, pattern + off, len, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN) break;
                if (errno == EINTR) continue;
                finish(c);
                return 1;
            }
            c->pos += (unsigned long long)n;
        }
    }
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EAGAIN) return 0;
            if (errno == EINTR) continue;
            finish(c);
            return 1;
        }
        if (n == 0) break;
        if (!source && !c->bad) {
            size_t off = (size_t)(c->pos % PERIOD);
            if (memcmp(buf, pattern + off, (size_t)n) == 0) {
                c->good += (unsigned long long)n;
            } else {
                for (ssize_t i = 0; i < n && buf[i] == pattern[off + (size_t)i]; i++) c->good++;
                c->bad = 1;
            }
        }
        c->pos += (unsigned long long)n;
    }
    if (!source) {
        char line[32];
        int len = snprintf(line, sizeof line, "%llu\n", c->good);
        send(c->fd, line, (size_t)len, MSG_NOSIGNAL);
    }
    finish(c);
    return 1;
}

int main(int argc, char **argv) {
    const char *listen_arg;
    if (argc == 3 && strcmp(argv[1], "sink") == 0) {
        listen_arg = argv[2];
    } else if (argc == 4 && strcmp(argv[1], "source") == 0) {
        source = 1;
        total = strtoull(argv[2], NULL, 10);
        listen_arg = argv[3];
    } else {
        fprintf(stderr, "usage: oneway_upstream sink [HOST:]PORT\n"
                        "       oneway_upstream source BYTES [HOST:]PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = (unsigned char)(i % PERIOD);

    char host[256] = "127.0.0.1";
    const char *port = listen_arg;
    const char *colon = strrchr(listen_arg, ':');
    if (colon) {
        snprintf(host, sizeof host, "%.*s", (int)(colon - listen_arg), listen_arg);
        port = colon + 1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res;
    if (getaddrinfo(host, port, &hints, &res) != 0) {
        fprintf(stderr, "oneway_upstream: bad listen address %s\n", listen_arg);
        return 2;
    }
    int lfd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (lfd < 0) die("socket");
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, res->ai_addr, res->ai_addrlen) < 0) die("bind");
    freeaddrinfo(res);
    if (listen(lfd, 1024) < 0) die("listen");
    struct sockaddr_storage la;
    socklen_t la_len = sizeof la;
    getsockname(lfd, (struct sockaddr *)&la, &la_len);
    char ip[INET6_ADDRSTRLEN];
    if (la.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&la;
        printf("listening on [%s]:%d\n", inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip),
               ntohs(a->sin6_port));
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&la;
        printf("listening on %s:%d\n", inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip),
               ntohs(a->sin_port));
    }
    fflush(stdout);

    int ep = epoll_create1(EPOLL_CLOEXEC);
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
            if (evs[i].data.ptr != &listener_tag) {
                serve(evs[i].data.ptr);
                continue;
            }
            for (;;) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) break;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                struct conn *c = calloc(1, sizeof *c);
                if (!c) die("calloc");
                c->fd = fd;
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                         .data.ptr = c};
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
            }
        }
    }
}
