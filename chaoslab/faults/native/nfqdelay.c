/*
 * nfqdelay - packet delay through an NFQUEUE (part of chaoslab).
 *
 *   nfqdelay --queue N --delay-us D [--jitter-us J] [--dist uniform|normal]
 *
 * The kernel equivalent of `tc netem delay D J` for kernels without sch_netem:
 * an iptables rule sends the faulted packets to queue N (with --queue-bypass,
 * so packets pass untouched whenever no program is bound), this program holds
 * each one for D +- J us and then accepts it.  Packets leave in arrival order
 * (a late packet never overtakes an earlier one), like netem with a rate.
 * The queue is fail-open: if it ever fills up, the kernel accepts instead of
 * dropping.  Only the packet metadata is copied to user space.
 *
 * Runs in the target's network namespace (queues are per namespace).  Prints
 * JSON lines: ready, stats (every second) and exit, with the measured hold
 * time of released packets.  On SIGTERM/SIGINT/SIGHUP (and the parent-death
 * SIGTERM) every held packet is accepted at once before it exits.  If it is
 * killed outright, the kernel drops the packets it held and, thanks to
 * --queue-bypass, lets new ones through undelayed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#define NS 1000000000ull
#define RING (1u << 18)

struct held {
    uint32_t id;
    uint64_t arrive, release;
};

static struct held ring[RING];
static uint32_t head, tail; /* ring[head..tail) are held, oldest first */
static uint64_t delay_ns, jitter_ns, last_release;
static int normal;
static uint64_t packets, released, overflow, held_ns_sum, held_ns_max;
static struct nfq_q_handle *qh;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static double uniform01(void) { return (random() + 1.0) / ((double)RAND_MAX + 2.0); }

static uint64_t hold_ns(void)
{
    if (!jitter_ns)
        return delay_ns;
    double j;
    if (normal) /* Box-Muller: delay + jitter * N(0, 1) */
        j = sqrt(-2.0 * log(uniform01())) * cos(2 * M_PI * uniform01());
    else
        j = 2.0 * uniform01() - 1.0;
    double h = (double)delay_ns + j * (double)jitter_ns;
    return h > 0 ? (uint64_t)h : 0;
}

static void accept_packet(uint32_t id, uint64_t arrive, uint64_t t)
{
    nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
    uint64_t held = t - arrive;
    held_ns_sum += held;
    if (held > held_ns_max)
        held_ns_max = held;
    released++;
}

static int on_packet(struct nfq_q_handle *q, struct nfgenmsg *m, struct nfq_data *d, void *data)
{
    (void)q, (void)m, (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(d);
    if (!ph)
        return 0;
    uint32_t id = ntohl(ph->packet_id);
    uint64_t t = now_ns();
    packets++;
    if (tail - head >= RING) { /* never drop: pass it on undelayed */
        overflow++;
        accept_packet(id, t, t);
        return 0;
    }
    uint64_t rel = t + hold_ns();
    if (rel < last_release)
        rel = last_release;
    last_release = rel;
    ring[tail++ % RING] = (struct held){id, t, rel};
    return 0;
}

static void release_due(int all)
{
    uint64_t t = now_ns();
    while (head != tail && (all || ring[head % RING].release <= t)) {
        struct held *h = &ring[head++ % RING];
        accept_packet(h->id, h->arrive, t);
    }
}

static void print_stats(const char *event)
{
    printf("{\"event\":\"%s\",\"packets\":%llu,\"released\":%llu,\"held\":%u,\"overflow\":%llu,"
           "\"held_us_sum\":%llu,\"held_us_max\":%llu}\n",
           event, (unsigned long long)packets, (unsigned long long)released, tail - head,
           (unsigned long long)overflow, (unsigned long long)(held_ns_sum / 1000),
           (unsigned long long)(held_ns_max / 1000));
    fflush(stdout);
}

static unsigned long long num_arg(const char *opt, const char *s, unsigned long long hi)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > hi) {
        fprintf(stderr, "nfqdelay: bad %s: %s\n", opt, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    long queue = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--queue"))
            queue = (long)num_arg(argv[i], argv[i + 1], 65535);
        else if (!strcmp(argv[i], "--delay-us"))
            delay_ns = num_arg(argv[i], argv[i + 1], 60000000ull) * 1000;
        else if (!strcmp(argv[i], "--jitter-us"))
            jitter_ns = num_arg(argv[i], argv[i + 1], 60000000ull) * 1000;
        else if (!strcmp(argv[i], "--dist")) {
            if (strcmp(argv[i + 1], "uniform") && strcmp(argv[i + 1], "normal")) {
                fprintf(stderr, "nfqdelay: --dist must be uniform or normal\n");
                return 2;
            }
            normal = !strcmp(argv[i + 1], "normal");
        } else {
            fprintf(stderr, "nfqdelay: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (queue < 0) {
        fprintf(stderr, "usage: nfqdelay --queue N --delay-us D [--jitter-us J] [--dist uniform|normal]\n");
        return 2;
    }
    srandom((unsigned)now_ns());

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) /* the parent died before PDEATHSIG was set */
        return 1;

    struct nfq_handle *h = nfq_open();
    if (!h) {
        fprintf(stderr, "nfqdelay: nfq_open: %s\n", strerror(errno));
        return 1;
    }
    qh = nfq_create_queue(h, (uint16_t)queue, on_packet, NULL);
    if (!qh) {
        fprintf(stderr, "nfqdelay: cannot bind queue %ld: %s\n", queue, strerror(errno));
        return 1;
    }
    if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0 || nfq_set_queue_maxlen(qh, RING) < 0) {
        fprintf(stderr, "nfqdelay: configuring queue %ld: %s\n", queue, strerror(errno));
        return 1;
    }
    nfq_set_queue_flags(qh, NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_FAIL_OPEN);
    int fd = nfq_fd(h);
    int one = 1, rcvbuf = 8 << 20;
    setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);

    printf("{\"event\":\"ready\",\"queue\":%ld}\n", queue);
    fflush(stdout);

    char buf[65536];
    uint64_t next_stats = now_ns() + NS;
    for (;;) {
        release_due(0);
        uint64_t t = now_ns();
        if (t >= next_stats) {
            print_stats("stats");
            next_stats = t + NS;
        }
        uint64_t until = next_stats;
        if (head != tail && ring[head % RING].release < until)
            until = ring[head % RING].release;
        uint64_t wait = until > t ? until - t : 0;
        struct timespec ts = {(time_t)(wait / NS), (long)(wait % NS)};
        struct pollfd p[2] = {{fd, POLLIN, 0}, {sfd, POLLIN, 0}};
        int n = ppoll(p, 2, &ts, NULL);
        if (n < 0 && errno != EINTR)
            break;
        if (p[1].revents & POLLIN)
            break;
        if (p[0].revents & POLLIN) {
            ssize_t r;
            while ((r = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0)
                nfq_handle_packet(h, buf, (int)r);
        }
    }
    release_due(1);
    print_stats("exit");
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}
