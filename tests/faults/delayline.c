/* SPDX-License-Identifier: Apache-2.0 */
/*
 * delayline — a userspace impairment for the fault-injection tests (test-only; tests/faults/netlab.py drives it).
 *
 * This kernel has no netem qdisc and no nftables queue, but iptables' NFQUEUE target works: the packets an
 * iptables rule sends to queue N come here over netlink (metadata only, GSO packets whole), and each one is either
 * dropped at once (with probability --loss) or held and accepted --delay-ms later, in arrival order. Nothing is
 * copied or changed (metadata only). A constant delay keeps the hold queue FIFO (a ring of up to DELAYLINE_MAX
 * packets; beyond that, packets are dropped, as a full router queue would).
 *
 *   delayline --queue=N [--delay-ms=D] [--loss=PERCENT] [--seed=S] [--gso]
 *
 * Prints "ready" on stdout once the queue is bound, and on SIGTERM/SIGINT accepts everything it holds, prints
 * "packets=... dropped=... overflow=..." on stdout and exits 0. Run it in the network namespace of the rule (netlink
 * queues are per namespace). The rule should use --queue-bypass, so the link works unimpaired while no delayline is
 * bound.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DELAYLINE_MAX 65536U

typedef struct Held {
        uint32_t id;
        uint64_t release_usec;
} Held;

static Held ring[DELAYLINE_MAX];
static unsigned head, count;
static uint64_t delay_usec, n_packets, n_dropped, n_overflow;
static double loss; /* 0..1 */
static uint64_t rng_state = 0x853c49e6748fea9bULL;
static volatile sig_atomic_t stop;

static uint64_t now_usec(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

/* xorshift64*: reproducible loss patterns for a given --seed. */
static double rng_next(void) {
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        return (double) ((rng_state * 0x2545F4914F6CDD1DULL) >> 11) / (double) (1ULL << 53);
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg __attribute__((unused)), struct nfq_data *nfa,
                     void *data __attribute__((unused))) {
        struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
        uint32_t id;

        if (!ph)
                return 0;
        id = ntohl(ph->packet_id);
        n_packets++;
        if (loss > 0 && rng_next() < loss) {
                n_dropped++;
                return nfq_set_verdict(qh, id, NF_DROP, 0, NULL);
        }
        if (delay_usec == 0)
                return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
        if (count == DELAYLINE_MAX) {
                n_overflow++;
                return nfq_set_verdict(qh, id, NF_DROP, 0, NULL);
        }
        ring[(head + count) % DELAYLINE_MAX] = (Held){ .id = id, .release_usec = now_usec() + delay_usec };
        count++;
        return 0;
}

static void release(struct nfq_q_handle *qh, bool all) {
        uint64_t now = now_usec();

        while (count > 0 && (all || ring[head].release_usec <= now)) {
                (void) nfq_set_verdict(qh, ring[head].id, NF_ACCEPT, 0, NULL);
                head = (head + 1) % DELAYLINE_MAX;
                count--;
        }
}

static void on_signal(int sig __attribute__((unused))) {
        stop = 1;
}

static int usage(void) {
        fprintf(stderr, "usage: delayline --queue=N [--delay-ms=D] [--loss=PERCENT] [--seed=S] [--gso]\n");
        return 2;
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "queue", required_argument, NULL, 'q' },
                { "delay-ms", required_argument, NULL, 'd' },
                { "loss", required_argument, NULL, 'l' },
                { "seed", required_argument, NULL, 's' },
                { "gso", no_argument, NULL, 'g' },
                {},
        };
        static char buf[256 * 1024] __attribute__((aligned));
        struct sigaction sa = { .sa_handler = on_signal };
        struct nfq_handle *h;
        struct nfq_q_handle *qh;
        long queue = -1;
        double delay_ms = 0;
        bool gso = false;
        int c, fd;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case 'q':
                        queue = strtol(optarg, NULL, 10);
                        break;
                case 'd':
                        delay_ms = strtod(optarg, NULL);
                        break;
                case 'l':
                        loss = strtod(optarg, NULL) / 100.0;
                        break;
                case 's':
                        rng_state = strtoull(optarg, NULL, 0) | 1;
                        break;
                case 'g':
                        gso = true;
                        break;
                default:
                        return usage();
                }
        if (queue < 0 || queue > 65535 || delay_ms < 0 || delay_ms > 10000 || loss < 0 || loss > 1)
                return usage();
        delay_usec = (uint64_t) (delay_ms * 1000.0);

        (void) sigaction(SIGTERM, &sa, NULL);
        (void) sigaction(SIGINT, &sa, NULL);

        h = nfq_open();
        if (!h) {
                perror("nfq_open");
                return 1;
        }
        qh = nfq_create_queue(h, (uint16_t) queue, on_packet, NULL);
        if (!qh) {
                perror("nfq_create_queue");
                nfq_close(h);
                return 1;
        }
        if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0 || nfq_set_queue_maxlen(qh, DELAYLINE_MAX) < 0) {
                perror("nfq_set_mode");
                nfq_close(h);
                return 1;
        }
        /* With --gso, GSO packets stay whole (fewer verdicts for delay-only links; a loss then takes a whole burst);
         * without, the kernel segments them first, so --loss applies per wire packet. */
        if (gso)
                (void) nfq_set_queue_flags(qh, NFQA_CFG_F_GSO, NFQA_CFG_F_GSO);
        (void) nfnl_rcvbufsiz(nfq_nfnlh(h), 16 * 1024 * 1024);
        fd = nfq_fd(h);
        printf("ready\n");
        (void) fflush(stdout);

        while (!stop) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int timeout = -1;
                ssize_t n;

                if (count > 0) {
                        uint64_t now = now_usec(), at = ring[head].release_usec;
                        timeout = at > now ? (int) ((at - now + 999) / 1000) : 0;
                }
                if (poll(&p, 1, timeout) < 0 && errno != EINTR) {
                        perror("poll");
                        break;
                }
                if (p.revents & POLLIN)
                        for (unsigned i = 0; i < 256; i++) {
                                n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
                                if (n < 0) {
                                        if (errno == ENOBUFS) {
                                                /* The kernel dropped queued packets' notifications: those packets
                                                 * are lost, which TCP recovers from. */
                                                n_overflow++;
                                                continue;
                                        }
                                        break;
                                }
                                (void) nfq_handle_packet(h, buf, (int) n);
                        }
                release(qh, false);
        }
        release(qh, true);
        printf("packets=%" PRIu64 " dropped=%" PRIu64 " overflow=%" PRIu64 "\n", n_packets, n_dropped, n_overflow);
        (void) fflush(stdout);
        nfq_destroy_queue(qh);
        nfq_close(h);
        return 0;
}
