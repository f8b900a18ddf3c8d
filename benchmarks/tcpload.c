/*
 * tcpload: a small load generator for the Event Store v5 TCP protocol,
 * used by benchmarks/tcp.py (which compiles it with the system C compiler).
 *
 *   tcpload PORT MODE CONNS INFLIGHT EVENTS SECONDS DATA_SIZE [AUTH [RATE]]
 *
 * MODE: write       WriteEvents of EVENTS events (DATA_SIZE bytes of JSON each)
 *                   to stream "bench-<conn>", expected version Any
 *       readevent   ReadEvent of a random event of stream "bench-0" (EVENTS =
 *                   number of events in that stream)
 *       readstream  ReadStreamEventsForward of 100 events from a random start
 *                   in stream "bench-0" (EVENTS = its length)
 *       readall     ReadAllEventsForward of 100 events from position 0
 * AUTH=1 sends Authenticate admin/changeit first on every connection.
 * RATE > 0 paces the requests to RATE per second in total (for latency at a
 * given load); each connection still has at most INFLIGHT outstanding.
 *
 * Every connection keeps INFLIGHT requests outstanding for SECONDS seconds
 * (127.0.0.1 only).  Prints one JSON line: requests, events, seconds,
 * latency p50/p99/max in microseconds.  Heartbeat requests from the server
 * are answered.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 256
#define MAX_INFLIGHT 4096
#define MAX_SAMPLES 4000000

typedef struct {
    int fd;
    unsigned char *in;
    size_t in_len, in_cap;
    unsigned char *out;
    size_t out_len, out_cap, out_off;
    double sent_at[MAX_INFLIGHT];
    int outstanding;
    uint64_t seq;
    int index;
    double next_due;
} conn_t;

static const char *mode;
static int events_per, data_size, stream_len;
static double *samples;
static long nsamples;
static long long total_requests, total_events;
static uint64_t rng = 88172645463325252ULL;

static uint64_t xorshift(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void ensure(unsigned char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t c = *cap ? *cap : 65536;
    while (c < need) c *= 2;
    *buf = realloc(*buf, c);
    if (!*buf) { perror("realloc"); exit(2); }
    *cap = c;
}

static size_t varint(unsigned char *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) { p[n++] = (unsigned char)(v | 0x80); v >>= 7; }
    p[n++] = (unsigned char)v;
    return n;
}

/* Append one framed package to the connection's output buffer. */
static void put_package(conn_t *c, int command, const unsigned char *corr,
                        const unsigned char *payload, size_t len) {
    ensure(&c->out, &c->out_cap, c->out_len + 22 + len);
    unsigned char *p = c->out + c->out_len;
    uint32_t total = (uint32_t)(18 + len);
    memcpy(p, &total, 4);
    p[4] = (unsigned char)command;
    p[5] = 0;
    memcpy(p + 6, corr, 16);
    if (len) memcpy(p + 22, payload, len);
    c->out_len += 22 + len;
}

static unsigned char payload[1 << 24];

static size_t build_request(conn_t *c, int *command) {
    unsigned char *p = payload;
    char stream[64];
    if (!strcmp(mode, "write")) {
        int sl = snprintf(stream, sizeof stream, "bench-%d", c->index);
        *p++ = 0x0a; p += varint(p, sl); memcpy(p, stream, sl); p += sl;
        *p++ = 0x10; p += varint(p, (uint64_t)(int64_t)-2);
        for (int i = 0; i < events_per; i++) {
            unsigned char ev[64];
            size_t n = 0;
            ev[n++] = 0x0a; ev[n++] = 16;
            uint64_t a = xorshift(), b = xorshift();
            memcpy(ev + n, &a, 8); memcpy(ev + n + 8, &b, 8); n += 16;
            ev[n++] = 0x12; ev[n++] = 5; memcpy(ev + n, "bench", 5); n += 5;
            ev[n++] = 0x18; ev[n++] = 1;
            ev[n++] = 0x20; ev[n++] = 0;
            ev[n++] = 0x2a; n += varint(ev + n, data_size);
            size_t body = n + data_size;
            *p++ = 0x1a; p += varint(p, body);
            memcpy(p, ev, n); p += n;
            memset(p, ' ', data_size);
            if (data_size >= 2) { p[0] = '{'; p[data_size - 1] = '}'; }
            p += data_size;
        }
        *p++ = 0x20; *p++ = 0;
        *command = 0x82;
    } else if (!strcmp(mode, "readevent")) {
        *p++ = 0x0a; *p++ = 7; memcpy(p, "bench-0", 7); p += 7;
        *p++ = 0x10; p += varint(p, stream_len > 0 ? xorshift() % stream_len : 0);
        *p++ = 0x18; *p++ = 0; *p++ = 0x20; *p++ = 0;
        *command = 0xB0;
    } else if (!strcmp(mode, "readstream")) {
        int start = stream_len > 100 ? (int)(xorshift() % (stream_len - 100)) : 0;
        *p++ = 0x0a; *p++ = 7; memcpy(p, "bench-0", 7); p += 7;
        *p++ = 0x10; p += varint(p, start);
        *p++ = 0x18; p += varint(p, 100);
        *p++ = 0x20; *p++ = 0; *p++ = 0x28; *p++ = 0;
        *command = 0xB2;
    } else { /* readall */
        *p++ = 0x08; *p++ = 0; *p++ = 0x10; *p++ = 0;
        *p++ = 0x18; p += varint(p, 100);
        *p++ = 0x20; *p++ = 0; *p++ = 0x28; *p++ = 0;
        *command = 0xB6;
    }
    return (size_t)(p - payload);
}

static void send_request(conn_t *c, double t) {
    int command;
    size_t len = build_request(c, &command);
    unsigned char corr[16] = {0};
    uint64_t slot = c->seq % MAX_INFLIGHT;
    memcpy(corr, &c->seq, 8);
    corr[15] = 0x5a;
    c->seq++;
    c->sent_at[slot] = t;
    c->outstanding++;
    put_package(c, command, corr, payload, len);
}

static long long count_events(const unsigned char *data, size_t len, int command) {
    /* Replies carrying events: count field-1 (stream read) or field-3 ($all)
     * entries at the top level. */
    int field = command == 0xB3 ? 1 : command == 0xB7 ? 3 : 0;
    if (!field) return command == 0x83 ? events_per : 1;
    long long n = 0;
    size_t i = 0;
    while (i < len) {
        uint64_t key = 0; int shift = 0;
        while (i < len) { key |= (uint64_t)(data[i] & 0x7f) << shift; shift += 7; if (!(data[i++] & 0x80)) break; }
        int wt = key & 7, f = (int)(key >> 3);
        if (wt == 0) { while (i < len && (data[i++] & 0x80)) {} }
        else if (wt == 2) {
            uint64_t l = 0; shift = 0;
            while (i < len) { l |= (uint64_t)(data[i] & 0x7f) << shift; shift += 7; if (!(data[i++] & 0x80)) break; }
            if (f == field) n++;
            i += l;
        } else if (wt == 1) i += 8;
        else if (wt == 5) i += 4;
        else break;
    }
    return n;
}

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); exit(2); }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: tcpload PORT MODE CONNS INFLIGHT EVENTS SECONDS DATA_SIZE [AUTH]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    mode = argv[2];
    int nconns = atoi(argv[3]);
    int inflight = atoi(argv[4]);
    events_per = atoi(argv[5]);
    stream_len = events_per;
    double seconds = atof(argv[6]);
    data_size = atoi(argv[7]);
    int auth = argc > 8 && atoi(argv[8]);
    double rate = argc > 9 ? atof(argv[9]) : 0;
    if (nconns > MAX_CONNS || inflight > MAX_INFLIGHT || nconns < 1 || inflight < 1) return 2;
    if (strcmp(mode, "write")) events_per = 1;
    samples = malloc(sizeof(double) * MAX_SAMPLES);
    conn_t *conns = calloc(nconns, sizeof(conn_t));
    struct pollfd *pfds = calloc(nconns, sizeof(struct pollfd));
    rng ^= (uint64_t)getpid() * 2654435761ULL ^ (uint64_t)(now() * 1e6);
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = connect_to(port);
        conns[i].index = i;
        if (auth) {
            unsigned char block[32];
            size_t n = 0;
            block[n++] = 5; memcpy(block + n, "admin", 5); n += 5;
            block[n++] = 8; memcpy(block + n, "changeit", 8); n += 8;
            unsigned char corr[16] = {0xaa};
            ensure(&conns[i].out, &conns[i].out_cap, 64);
            unsigned char *p = conns[i].out;
            uint32_t total = (uint32_t)(18 + n);
            memcpy(p, &total, 4); p[4] = 0xF2; p[5] = 1; memcpy(p + 6, corr, 16); memcpy(p + 22, block, n);
            conns[i].out_len = 22 + n;
            conns[i].outstanding = 0;
        }
    }
    double start = now(), end = start + seconds;
    double gap = rate > 0 ? nconns / rate : 0;
    for (int i = 0; i < nconns; i++) {
        conns[i].next_due = start + gap * i / nconns;
        if (!gap)
            for (int k = 0; k < inflight; k++) send_request(&conns[i], start);
    }
    int measuring = 1;
    while (1) {
        double t = now();
        if (measuring && t >= end) measuring = 0;
        double wait_s = 0.1;
        if (gap && measuring) {
            for (int i = 0; i < nconns; i++) {
                conn_t *c = &conns[i];
                while (c->outstanding < inflight && t >= c->next_due) {
                    send_request(c, t);
                    c->next_due += gap;
                    if (c->next_due < t - 1.0) c->next_due = t; /* fell behind: do not burst */
                }
                double w = c->next_due - t;
                if (w < wait_s) wait_s = w < 0 ? 0 : w;
            }
        }
        int busy = 0;
        for (int i = 0; i < nconns; i++) {
            pfds[i].fd = conns[i].fd;
            pfds[i].events = POLLIN | (conns[i].out_len > conns[i].out_off ? POLLOUT : 0);
            if (conns[i].outstanding) busy = 1;
        }
        if (!measuring && !busy) break;
        if (!measuring && t > end + 10) break; /* drain at most 10 s */
        struct timespec timeout = {(time_t)wait_s, (long)((wait_s - (time_t)wait_s) * 1e9)};
        if (ppoll(pfds, nconns, &timeout, NULL) < 0) { if (errno == EINTR) continue; perror("poll"); return 2; }
        for (int i = 0; i < nconns; i++) {
            conn_t *c = &conns[i];
            if (pfds[i].revents & POLLOUT) {
                ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
                if (w > 0) {
                    c->out_off += w;
                    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
                }
            }
            if (!(pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ensure(&c->in, &c->in_cap, c->in_len + 262144);
            ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
            if (r <= 0) { fprintf(stderr, "connection %d closed\n", i); return 3; }
            c->in_len += r;
            size_t off = 0;
            double rt = now();
            while (c->in_len - off >= 4) {
                uint32_t len;
                memcpy(&len, c->in + off, 4);
                if (c->in_len - off < 4 + (size_t)len) break;
                unsigned char *pkg = c->in + off + 4;
                int command = pkg[0];
                if (command == 0x01) {
                    put_package(c, 0x02, pkg + 2, NULL, 0);
                } else if (command == 0xF3 || command == 0xF4) {
                    /* authentication answer */
                } else if (pkg[17] == 0x5a) {
                    uint64_t seq;
                    memcpy(&seq, pkg + 2, 8);
                    double lat = rt - c->sent_at[seq % MAX_INFLIGHT];
                    c->outstanding--;
                    if (command == 0xF0 || command == 0xF1 || command == 0xF4) {
                        fprintf(stderr, "error reply 0x%02x: %.*s\n", command, (int)(len - 18), pkg + 18);
                        return 3;
                    }
                    if (measuring) {
                        total_requests++;
                        total_events += count_events(pkg + 18, len - 18, command);
                        if (nsamples < MAX_SAMPLES) samples[nsamples++] = lat;
                        if (!gap) send_request(c, rt);
                    }
                }
                off += 4 + len;
            }
            if (off) { memmove(c->in, c->in + off, c->in_len - off); c->in_len -= off; }
            if (c->out_len > c->out_off) {
                ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
                if (w > 0) { c->out_off += w; if (c->out_off == c->out_len) c->out_off = c->out_len = 0; }
            }
        }
    }
    qsort(samples, nsamples, sizeof(double), cmp_double);
    double p50 = nsamples ? samples[nsamples / 2] : 0;
    double p99 = nsamples ? samples[(long)(nsamples * 0.99)] : 0;
    double mx = nsamples ? samples[nsamples - 1] : 0;
    printf("{\"requests\": %lld, \"events\": %lld, \"seconds\": %.3f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f}\n",
           total_requests, total_events, seconds, p50 * 1e6, p99 * 1e6, mx * 1e6);
    return 0;
}
