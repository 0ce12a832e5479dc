// SPDX-License-Identifier: Apache-2.0
/*
 * rrbench: the C load generator of sockmesh's datapath benchmark. A C client,
 * so that the kernel path is what gets measured, not a runtime's overhead.
 *
 *   rrbench serve PORT                      serve connections one after another
 *   rrbench rr IPV4 PORT SIZE SECONDS       request/response: send SIZE bytes,
 *                                           read SIZE back, as fast as possible
 *   rrbench bulk IPV4 PORT WRITE SECONDS    write WRITE-byte buffers for SECONDS
 *   rrbench conn IPV4 PORT SECONDS          new connections one after another:
 *                                           connect, hello, read the 1-byte
 *                                           answer, close with a reset (no
 *                                           TIME_WAIT piling up)
 *
 * The server learns the mode from a 9-byte hello: 'r', 'b' or 'c' and a u64 size.
 * rr prints {"requests","seconds","rps","p50_us","p90_us","p99_us"};
 * bulk prints {"bytes","seconds","gbit_s"} once the server has read it all.
 * conn prints {"connects","failed","seconds","cps","p50_us","p99_us"} (latency:
 * socket() to the answer read; failed: connects the kernel refused, e.g. EPERM).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROG "rrbench"
#include "../tools/fdio.h"

#define MAX_SAMPLES (8u << 20)

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int read_full(int fd, void *buf, size_t n)
{
	char *p = buf;

	while (n > 0) {
		ssize_t r = read(fd, p, n);

		if (r == 0)
			return 0;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			die("read");
		}
		p += r;
		n -= (size_t)r;
	}
	return 1;
}

static void serve_one(int s)
{
	unsigned char hello[9];
	uint64_t size, total = 0;
	char *buf;

	if (!read_full(s, hello, sizeof(hello)))
		return;
	memcpy(&size, hello + 1, 8);
	if (size == 0 || size > (64u << 20)) {
		fprintf(stderr, "rrbench: bad size %llu\n", (unsigned long long)size);
		return;
	}
	if (hello[0] == 'c') {
		/* one answer, then close: the client resets */
		if (write(s, "k", 1) != 1)
			return;
		return;
	}
	buf = malloc(size);
	if (!buf)
		die("malloc");
	if (hello[0] == 'r') {
		while (read_full(s, buf, size))
			write_all(s, buf, size);
	} else {
		ssize_t r;

		while ((r = read(s, buf, size)) != 0) {
			if (r < 0) {
				if (errno == EINTR)
					continue;
				die("read");
			}
			total += (uint64_t)r;
		}
		write_all(s, &total, sizeof(total));
	}
	free(buf);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int dial(const char *ip, const char *port, char mode, uint64_t size)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(port)) };
	unsigned char hello[9] = { (unsigned char)mode };
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);

	if (s < 0)
		die("socket");
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
		fprintf(stderr, "rrbench: not an IPv4 address: %s\n", ip);
		exit(2);
	}
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	memcpy(hello + 1, &size, 8);
	write_all(s, hello, sizeof(hello));
	return s;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "serve") == 0) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2])) };
		int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);

		if (l < 0)
			die("socket");
		setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0)
			die("bind");
		if (listen(l, 16) < 0)
			die("listen");
		fprintf(stderr, "rrbench: serving on %s\n", argv[2]);
		for (;;) {
			int s = accept(l, NULL, NULL);

			if (s < 0)
				die("accept");
			setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			serve_one(s);
			close(s);
		}
	}
	if (argc == 6 && strcmp(argv[1], "rr") == 0) {
		uint64_t size = strtoull(argv[4], NULL, 10);
		double secs = atof(argv[5]), t0, t1;
		uint32_t *lat = malloc(MAX_SAMPLES * sizeof(uint32_t));
		char *buf = malloc(size ? size : 1);
		size_t n = 0;
		int s = dial(argv[2], argv[3], 'r', size);

		if (!lat || !buf)
			die("malloc");
		memset(buf, 'x', size);
		t0 = now_s();
		do {
			uint64_t a = now_ns(), d;

			write_all(s, buf, size);
			if (!read_full(s, buf, size)) {
				fprintf(stderr, "rrbench: server closed early\n");
				return 1;
			}
			d = now_ns() - a;
			lat[n++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
		} while (n < MAX_SAMPLES && ((n & 63) || now_s() - t0 < secs));
		t1 = now_s();
		close(s);
		qsort(lat, n, sizeof(*lat), cmp_u32);
		printf("{\"requests\":%zu,\"seconds\":%.6f,\"rps\":%.1f,\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f}\n",
		       n, t1 - t0, (double)n / (t1 - t0), lat[n / 2] / 1e3, lat[n * 9 / 10] / 1e3, lat[n * 99 / 100] / 1e3);
		return 0;
	}
	if (argc == 5 && strcmp(argv[1], "conn") == 0) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[3])) };
		struct linger rst = { .l_onoff = 1, .l_linger = 0 };
		unsigned char hello[9] = { 'c', 1 };
		double secs = atof(argv[4]), t0, t1;
		uint32_t *lat = malloc(MAX_SAMPLES * sizeof(uint32_t));
		size_t n = 0, failed = 0;
		char k;

		if (!lat)
			die("malloc");
		if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) {
			fprintf(stderr, "rrbench: not an IPv4 address: %s\n", argv[2]);
			return 2;
		}
		t0 = now_s();
		do {
			uint64_t b = now_ns(), d;
			int s = socket(AF_INET, SOCK_STREAM, 0);

			if (s < 0)
				die("socket");
			setsockopt(s, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
			if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
				failed++;
				close(s);
				continue;
			}
			write_all(s, hello, sizeof(hello));
			if (!read_full(s, &k, 1)) {
				fprintf(stderr, "rrbench: server closed early\n");
				return 1;
			}
			close(s);
			d = now_ns() - b;
			lat[n++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
		} while (n < MAX_SAMPLES && (((n + failed) & 63) || now_s() - t0 < secs));
		t1 = now_s();
		if (n == 0) {
			printf("{\"connects\":0,\"failed\":%zu,\"seconds\":%.6f,\"cps\":0,\"p50_us\":0,\"p99_us\":0}\n", failed, t1 - t0);
			return 0;
		}
		qsort(lat, n, sizeof(*lat), cmp_u32);
		printf("{\"connects\":%zu,\"failed\":%zu,\"seconds\":%.6f,\"cps\":%.1f,\"p50_us\":%.3f,\"p99_us\":%.3f}\n",
		       n, failed, t1 - t0, (double)n / (t1 - t0), lat[n / 2] / 1e3, lat[n * 99 / 100] / 1e3);
		return 0;
	}
	if (argc == 6 && strcmp(argv[1], "bulk") == 0) {
		uint64_t size = strtoull(argv[4], NULL, 10), sent = 0, acked = 0;
		double secs = atof(argv[5]), t0, t1;
		char *buf = malloc(size);
		int s = dial(argv[2], argv[3], 'b', size);

		if (!buf)
			die("malloc");
		memset(buf, 'y', size);
		t0 = now_s();
		do {
			write_all(s, buf, size);
			sent += size;
		} while ((sent / size) % 16 || now_s() - t0 < secs);
		if (shutdown(s, SHUT_WR) < 0)
			die("shutdown");
		if (!read_full(s, &acked, sizeof(acked)))
			die("no byte count from the server");
		t1 = now_s();
		close(s);
		if (acked != sent) {
			fprintf(stderr, "rrbench: sent %llu, server read %llu\n", (unsigned long long)sent, (unsigned long long)acked);
			return 1;
		}
		printf("{\"bytes\":%llu,\"seconds\":%.6f,\"gbit_s\":%.4f}\n", (unsigned long long)sent, t1 - t0,
		       (double)sent * 8 / (t1 - t0) / 1e9);
		return 0;
	}
	fprintf(stderr, "usage: rrbench serve PORT | rrbench rr IPV4 PORT SIZE SECONDS | rrbench bulk IPV4 PORT WRITE SECONDS\n");
	return 2;
}
