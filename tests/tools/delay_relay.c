/* tests/tools/delay_relay.c: a TCP relay that adds a fixed one-way delay.
 *
 *   delay_relay --listen ADDR:PORT --target ADDR:PORT [--delay-ms MS]
 *               [--max-queue BYTES]
 *
 * Accepts clients on --listen (PORT 0: the kernel picks one), connects each
 * to --target and forwards both directions; every chunk read from one side
 * is written to the other side no earlier than --delay-ms after it was read.
 * When ready it prints one line on stdout:
 *     delay_relay listening on ADDR:PORT
 * On SIGUSR1 it prints, and on SIGTERM/SIGINT it prints and exits 0:
 *     delay_relay bytes up=U down=D connections=C
 * where up counts bytes forwarded client -> target (requests), down bytes
 * forwarded target -> client (answers), and connections the clients accepted.
 *
 * Why it exists: the kernel of the test machines has no `netem` qdisc, so
 * the network-namespace test (tests/integration/netns.t) and the latency
 * benchmark (bench/netns_bench.sh) add link latency with this relay.
 *
 * Design. One thread, one ppoll() loop. Each accepted client is a `pairing`
 * of two sockets and two directed queues (client->target, target->client).
 * A queue is a FIFO of chunks, each stamped with the time it may leave;
 * since the delay is fixed the FIFO order is also deadline order, so only
 * the head's stamp matters and the poll timeout is the earliest head stamp
 * of any queue. Memory is bounded: a side is read only while its queue holds
 * less than --max-queue bytes (TCP flow control then slows the sender).
 * A side's end of stream is passed on (shutdown(SHUT_WR)) once its queue has
 * drained; a pairing is closed when both directions have ended, or at once
 * on any socket error (a reset on one side resets the other: the relay is
 * transparent, not a buffer that hides failures). The target connection is
 * made without blocking, so a target that does not answer stalls only its
 * own pairing. Signals reach the loop through a self-pipe.
 *
 * State owned: the listening socket, the pairings (a fixed table), the
 * byte counters. Nothing is shared; no locks.
 */
#define _GNU_SOURCE /* ppoll: a timeout finer than poll()'s milliseconds */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRINGS 64
#define CHUNK_MAX 65536

typedef struct chunk {
    struct chunk *next;
    uint64_t due_ns;   /* monotonic time it may be written */
    size_t len, off;   /* bytes held, bytes already written */
    unsigned char data[];
} chunk;

typedef struct {
    chunk *head, *tail;
    size_t bytes;      /* unwritten bytes held (bounded by max_queue) */
    int src_eof;       /* the reading side has ended */
    int done;          /* EOF passed on to the writing side */
} queue;

typedef struct {
    int used;
    int fd[2];         /* 0 = client, 1 = target */
    int connecting;    /* the target connect() is still in progress */
    queue q[2];        /* q[0]: client -> target, q[1]: target -> client */
} pairing;

typedef struct {
    struct sockaddr_in listen_addr, target_addr;
    uint64_t delay_ns;
    size_t max_queue;
    int listen_fd;
    int sig_pipe[2];
    pairing p[MAX_PAIRINGS];
    unsigned long long forwarded[2]; /* [0] up, [1] down */
    unsigned long long connections;
} relay;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- signals through a self-pipe ----------------------------------------- */

static int g_sig_fd = -1;

static void on_signal(int sig) {
    int saved = errno;
    char c = sig == SIGUSR1 ? 'U' : 'T';
    if (write(g_sig_fd, &c, 1) < 0) { /* the pipe is full: a wake-up is pending anyway */ }
    errno = saved;
}

static int install_signals(relay *r) {
    if (pipe(r->sig_pipe) != 0) return -1;
    fcntl(r->sig_pipe[0], F_SETFL, O_NONBLOCK);
    fcntl(r->sig_pipe[1], F_SETFL, O_NONBLOCK);
    g_sig_fd = r->sig_pipe[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* ---- options --------------------------------------------------------------- */

static int parse_addr(const char *s, struct sockaddr_in *out) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host || colon == s) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || port < 0 || port > 65535) return -1;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static int parse_number(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

static void usage(FILE *f) {
    fputs("usage: delay_relay --listen ADDR:PORT --target ADDR:PORT [--delay-ms MS] [--max-queue BYTES]\n"
          "  Forwards TCP both ways, each chunk delayed by MS (default 0, at most 10000).\n"
          "  Prints 'delay_relay bytes up=U down=D connections=C' on SIGUSR1 and on exit (SIGTERM).\n",
          f);
}

/* 0 to run, 1 for --help, -1 on a bad command line (the message is printed) */
static int parse_options(relay *r, int argc, char **argv) {
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},   {"target", required_argument, NULL, 't'},
        {"delay-ms", required_argument, NULL, 'd'}, {"max-queue", required_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    int have_listen = 0, have_target = 0, c;
    double v;
    r->max_queue = 1u << 20;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (parse_addr(optarg, &r->listen_addr)) goto bad_addr;
            have_listen = 1;
            break;
        case 't':
            if (parse_addr(optarg, &r->target_addr)) goto bad_addr;
            have_target = 1;
            break;
        case 'd':
            if (parse_number(optarg, 0, 10000, &v)) {
                fprintf(stderr, "delay_relay: --delay-ms %s: expected a number of milliseconds in [0, 10000]\n", optarg);
                return -1;
            }
            r->delay_ns = (uint64_t)(v * 1e6 + 0.5);
            break;
        case 'q':
            if (parse_number(optarg, 1024, 1 << 30, &v)) {
                fprintf(stderr, "delay_relay: --max-queue %s: expected bytes in [1024, 2^30]\n", optarg);
                return -1;
            }
            r->max_queue = (size_t)v;
            break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc || !have_listen || !have_target) {
        usage(stderr);
        return -1;
    }
    return 0;
bad_addr:
    fprintf(stderr, "delay_relay: %s: expected IPV4:PORT\n", optarg);
    return -1;
}

/* ---- queues ------------------------------------------------------------------ */

static void queue_clear(queue *q) {
    for (chunk *c = q->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    memset(q, 0, sizeof *q);
}

static int queue_push(queue *q, const unsigned char *data, size_t len, uint64_t due_ns) {
    chunk *c = malloc(sizeof *c + len);
    if (!c) return -1;
    c->next = NULL;
    c->due_ns = due_ns;
    c->len = len;
    c->off = 0;
    memcpy(c->data, data, len);
    if (q->tail) q->tail->next = c;
    else q->head = c;
    q->tail = c;
    q->bytes += len;
    return 0;
}

static void queue_pop(queue *q) {
    chunk *c = q->head;
    q->head = c->next;
    if (!q->head) q->tail = NULL;
    free(c);
}

static int queue_head_due(const queue *q, uint64_t now) { return q->head && q->head->due_ns <= now; }

/* ---- pairings ------------------------------------------------------------------ */

static void pairing_close(pairing *p) {
    for (int s = 0; s < 2; s++) {
        if (p->fd[s] >= 0) close(p->fd[s]);
        queue_clear(&p->q[s]);
    }
    memset(p, 0, sizeof *p);
    p->fd[0] = p->fd[1] = -1;
}

static void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void accept_client(relay *r) {
    int fd = accept(r->listen_fd, NULL, NULL);
    if (fd < 0) return;
    pairing *p = NULL;
    for (int i = 0; i < MAX_PAIRINGS && !p; i++)
        if (!r->p[i].used) p = &r->p[i];
    int t = p ? socket(AF_INET, SOCK_STREAM, 0) : -1;
    if (t < 0) {
        close(fd);
        return;
    }
    set_nonblocking(fd);
    set_nonblocking(t);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memset(p, 0, sizeof *p);
    p->used = 1;
    p->fd[0] = fd;
    p->fd[1] = t;
    r->connections++;
    if (connect(t, (struct sockaddr *)&r->target_addr, sizeof r->target_addr) == 0) return;
    if (errno == EINPROGRESS) p->connecting = 1;
    else pairing_close(p);
}

/* Reads what side s offers into its queue. -1 when the pairing must close. */
static int pump_in(relay *r, pairing *p, int s) {
    unsigned char buf[CHUNK_MAX];
    queue *q = &p->q[s];
    size_t room = r->max_queue - q->bytes;
    if (room == 0) return 0; /* full: read again once the queue drains */
    ssize_t n = recv(p->fd[s], buf, room < sizeof buf ? room : sizeof buf, 0);
    if (n > 0) return queue_push(q, buf, (size_t)n, now_ns() + r->delay_ns);
    if (n == 0) {
        q->src_eof = 1;
        return 0;
    }
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
}

/* Writes the due chunks of queue s to the other side. -1 when the pairing must close. */
static int pump_out(relay *r, pairing *p, int s, uint64_t now) {
    queue *q = &p->q[s];
    int dst = p->fd[1 - s];
    while (queue_head_due(q, now)) {
        chunk *c = q->head;
        ssize_t n = send(dst, c->data + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
        c->off += (size_t)n;
        q->bytes -= (size_t)n;
        r->forwarded[s] += (unsigned long long)n;
        if (c->off < c->len) return 0;
        queue_pop(q);
    }
    if (q->src_eof && !q->head && !q->done) {
        shutdown(dst, SHUT_WR);
        q->done = 1;
    }
    return 0;
}

static int finish_connect(pairing *p) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(p->fd[1], SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err) return -1;
    p->connecting = 0;
    return 0;
}

/* ---- the loop ------------------------------------------------------------------ */

static void print_counts(const relay *r) {
    printf("delay_relay bytes up=%llu down=%llu connections=%llu\n", r->forwarded[0], r->forwarded[1],
           r->connections);
    fflush(stdout);
}

/* The poll set for one pairing, and the earliest due time of its queues. */
static void pairing_events(const relay *r, const pairing *p, struct pollfd pf[2], uint64_t now,
                           uint64_t *next_due) {
    for (int s = 0; s < 2; s++) {
        pf[s].fd = p->fd[s];
        pf[s].events = 0;
        pf[s].revents = 0;
    }
    if (p->connecting) {
        pf[1].events = POLLOUT;
        if (!p->q[0].src_eof && p->q[0].bytes < r->max_queue) pf[0].events |= POLLIN;
        return;
    }
    for (int s = 0; s < 2; s++) {
        const queue *q = &p->q[s];
        if (!q->src_eof && q->bytes < r->max_queue) pf[s].events |= POLLIN;
        if (queue_head_due(q, now)) pf[1 - s].events |= POLLOUT;
        else if (q->head && q->head->due_ns < *next_due) *next_due = q->head->due_ns;
    }
    /* A side that has ended and has nothing due is left out of poll(): its
     * hang-up would otherwise wake the loop again and again. */
    for (int s = 0; s < 2; s++)
        if (!pf[s].events && p->q[s].src_eof) pf[s].fd = -1;
}

static int pairing_step(relay *r, pairing *p, const struct pollfd pf[2]) {
    if (p->connecting) {
        if (pf[1].revents & (POLLOUT | POLLERR | POLLHUP))
            if (finish_connect(p)) return -1;
        if (pf[0].revents & (POLLIN | POLLHUP) && pump_in(r, p, 0)) return -1;
        return 0;
    }
    for (int s = 0; s < 2; s++) {
        if (pf[s].revents & POLLERR) return -1;
        if (pf[s].revents & (POLLIN | POLLHUP) && !p->q[s].src_eof && pump_in(r, p, s)) return -1;
    }
    uint64_t now = now_ns();
    for (int s = 0; s < 2; s++)
        if (pump_out(r, p, s, now)) return -1;
    return p->q[0].done && p->q[1].done ? -1 : 0;
}

/* Handles what the signal pipe holds: 1 when the relay must stop. */
static int handle_signals(relay *r) {
    char c[16];
    ssize_t n;
    int stop = 0;
    while ((n = read(r->sig_pipe[0], c, sizeof c)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (c[i] == 'U') print_counts(r);
            else stop = 1;
        }
    return stop;
}

static void run(relay *r) {
    struct pollfd pf[2 + 2 * MAX_PAIRINGS];
    for (;;) {
        uint64_t now = now_ns(), next_due = UINT64_MAX;
        pf[0] = (struct pollfd){.fd = r->sig_pipe[0], .events = POLLIN};
        pf[1] = (struct pollfd){.fd = r->listen_fd, .events = POLLIN};
        int polled[MAX_PAIRINGS];
        for (int i = 0; i < MAX_PAIRINGS; i++) {
            polled[i] = r->p[i].used;
            if (polled[i]) pairing_events(r, &r->p[i], &pf[2 + 2 * i], now, &next_due);
            else pf[2 + 2 * i] = pf[3 + 2 * i] = (struct pollfd){.fd = -1};
        }
        struct timespec wait, *timeout = NULL;
        if (next_due != UINT64_MAX) {
            wait.tv_sec = (time_t)((next_due - now) / 1000000000u);
            wait.tv_nsec = (long)((next_due - now) % 1000000000u);
            timeout = &wait;
        }
        int rc = ppoll(pf, 2 + 2 * MAX_PAIRINGS, timeout, NULL);
        if (rc < 0 && errno != EINTR) break;
        if (rc > 0 && (pf[0].revents & POLLIN) && handle_signals(r)) break;
        if (rc > 0 && (pf[1].revents & POLLIN)) accept_client(r);
        for (int i = 0; i < MAX_PAIRINGS; i++) {
            pairing *p = &r->p[i];
            if (polled[i] && pairing_step(r, p, &pf[2 + 2 * i])) pairing_close(p);
        }
    }
}

static int open_listener(relay *r) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t len = sizeof r->listen_addr;
    if (bind(fd, (struct sockaddr *)&r->listen_addr, sizeof r->listen_addr) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&r->listen_addr, &len) != 0) {
        close(fd);
        return -1;
    }
    set_nonblocking(fd);
    r->listen_fd = fd;
    return 0;
}

int main(int argc, char **argv) {
    static relay r;
    for (int i = 0; i < MAX_PAIRINGS; i++) r.p[i].fd[0] = r.p[i].fd[1] = -1;
    int rc = parse_options(&r, argc, argv);
    if (rc) return rc > 0 ? 0 : 2;
    if (install_signals(&r) != 0 || open_listener(&r) != 0) {
        fprintf(stderr, "delay_relay: cannot listen: %s\n", strerror(errno));
        return 1;
    }
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &r.listen_addr.sin_addr, host, sizeof host);
    printf("delay_relay listening on %s:%u\n", host, ntohs(r.listen_addr.sin_port));
    fflush(stdout);
    run(&r);
    print_counts(&r);
    for (int i = 0; i < MAX_PAIRINGS; i++)
        if (r.p[i].used) pairing_close(&r.p[i]);
    close(r.listen_fd);
    close(r.sig_pipe[0]);
    close(r.sig_pipe[1]);
    return 0;
}
