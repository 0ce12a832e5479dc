// SPDX-License-Identifier: Apache-2.0
/*
 * httpload: an HTTP/1.1 load generator for the L7 benchmark.
 *
 *   httpload HOST PORT PATH CONNECTIONS RATE SECONDS [WARMUP_SECONDS]
 *
 * CONNECTIONS keep-alive connections send GET PATH. With RATE > 0 it runs
 * open loop: request i of the whole run is due at start + i/RATE (spread
 * over the connections), and its latency is counted from that due time, so
 * a slow response also counts the requests queued behind it (no coordinated
 * omission). With RATE 0 it runs closed loop: each connection sends again as
 * soon as its response is in. Responses need a Content-Length. Prints one
 * JSON line: requests, errors, rps, and latency percentiles in microseconds
 * (measured after the warm-up).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
	int fd;
	int busy;		/* a request is out */
	uint64_t due_ns;	/* when the request out (or next) was due */
	char buf[65536];
	size_t len;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int open_conn(struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	if (fd < 0 || connect(fd, (struct sockaddr *)sa, sizeof(*sa)) < 0) {
		perror("connect");
		exit(1);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Length of a complete response at the start of buf, 0 if incomplete, -1 if unusable. */
static long response_len(const char *buf, size_t len)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4), *cl;
	long body;

	if (!end)
		return 0;
	cl = memmem(buf, (size_t)(end - buf), "ontent-Length:", 14);
	if (!cl)
		cl = memmem(buf, (size_t)(end - buf), "ontent-length:", 14);
	if (!cl)
		return -1;
	body = strtol(cl + 14, NULL, 10);
	if ((size_t)(end + 4 - buf) + (size_t)body > len)
		return 0;
	return (long)(end + 4 - buf) + body;
}

int main(int argc, char **argv)
{
	if (argc < 7) {
		fprintf(stderr, "usage: httpload HOST PORT PATH CONNECTIONS RATE SECONDS [WARMUP_SECONDS]\n");
		return 2;
	}
	const char *host = argv[1], *path = argv[3];
	int nconn = atoi(argv[4]);
	double rate = atof(argv[5]), seconds = atof(argv[6]), warmup = argc > 7 ? atof(argv[7]) : 0;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
	char req[512];
	int reqlen = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host);
	size_t cap = (size_t)((rate > 0 ? rate : 200000) * (seconds + 1)) + 1024, n = 0;
	uint64_t *lat = malloc(cap * sizeof(uint64_t));
	struct conn *c = calloc((size_t)nconn, sizeof(*c));
	uint64_t interval = rate > 0 ? (uint64_t)(1e9 / rate) : 0, next_due, start, measure_from, stop;
	long errors = 0, total = 0;
	int ep = epoll_create1(0);

	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "httpload: %s is not an IPv4 address\n", host);
		return 2;
	}
	for (int i = 0; i < nconn; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };

		c[i].fd = open_conn(&sa);
		epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev);
	}
	/* wake when due, not up to the default 50 us of timer slack later */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	start = now_ns();
	next_due = start;
	measure_from = start + (uint64_t)(warmup * 1e9);
	stop = start + (uint64_t)((warmup + seconds) * 1e9);
	for (;;) {
		uint64_t t = now_ns();
		struct epoll_event evs[64];
		struct timespec wait;
		int k;

		if (t >= stop)
			break;
		/* send what is due on idle connections */
		for (int i = 0; i < nconn; i++) {
			if (c[i].busy)
				continue;
			if (interval) {
				if (next_due > t)
					break;
				c[i].due_ns = next_due;
				next_due += interval;
			} else {
				c[i].due_ns = t;
			}
			if (write(c[i].fd, req, (size_t)reqlen) != reqlen) {
				errors++;
				continue;
			}
			c[i].busy = 1;
		}
		/*
		 * Sleep until the next request is due (or a response comes), to
		 * the nanosecond: a millisecond timeout rounds a sub-millisecond
		 * wait down to 0, and at 1,000 requests/s the loop then spun,
		 * taking a whole core from the processes being measured.
		 */
		wait.tv_sec = 0;
		wait.tv_nsec = 10 * 1000000;
		if (interval && next_due > t && next_due - t < (uint64_t)wait.tv_nsec)
			wait.tv_nsec = (long)(next_due - t);
		k = epoll_pwait2(ep, evs, 64, &wait, NULL);
		for (int e = 0; e < k; e++) {
			struct conn *cc = &c[evs[e].data.u32];
			ssize_t r = read(cc->fd, cc->buf + cc->len, sizeof(cc->buf) - cc->len);
			long rl;

			if (r <= 0) {
				if (r < 0 && errno == EAGAIN)
					continue;
				errors++;
				fprintf(stderr, "httpload: connection closed by the server\n");
				return 1;
			}
			cc->len += (size_t)r;
			while ((rl = response_len(cc->buf, cc->len)) != 0) {
				uint64_t done = now_ns();

				if (rl < 0) {
					fprintf(stderr, "httpload: a response without Content-Length\n");
					return 1;
				}
				if (strncmp(cc->buf + 9, "200", 3) != 0)
					errors++;
				total++;
				if (cc->due_ns >= measure_from && n < cap)
					lat[n++] = done - cc->due_ns;
				memmove(cc->buf, cc->buf + rl, cc->len - (size_t)rl);
				cc->len -= (size_t)rl;
				cc->busy = 0;
			}
		}
	}
	qsort(lat, n, sizeof(uint64_t), cmp_u64);
#define PCT(p) (n ? (double)lat[(size_t)((double)(n - 1) * (p))] / 1000.0 : 0.0)
	printf("{\"requests\":%zu,\"errors\":%ld,\"rps\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f}\n",
	       n, errors, (double)n / seconds, PCT(0.5), PCT(0.9), PCT(0.99), n ? (double)lat[n - 1] / 1000.0 : 0.0);
	(void)total;
	return 0;
}
