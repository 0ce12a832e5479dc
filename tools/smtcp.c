// SPDX-License-Identifier: Apache-2.0
/*
 * smtcp: a plain C TCP peer for sockmesh's tests and demo.
 *
 *   smtcp listen PORT [-b]       accept one connection on 0.0.0.0:PORT
 *   smtcp connect IPV4 PORT [-b] connect to IPV4:PORT
 *
 * Copies stdin to the connection and the connection to stdout. At EOF on
 * stdin it shuts the write side down (half-close) and goes on reading until
 * the peer's EOF. Default mode polls a non-blocking socket and checks that
 * FIONREAD agrees with what read() returns; -b uses blocking calls only:
 * write all of stdin, shut down, then read to EOF.
 * At exit it prints one line to stderr:
 *   smtcp: sent=N received=M fionread_zero_with_data=K
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define PROG "smtcp"
#include "fdio.h"

#define CHUNK (64 * 1024)

static unsigned long long sent, received, fionread_zero;

static int open_conn(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int one = 1, s;

	if (argc >= 3 && strcmp(argv[1], "listen") == 0) {
		int l = socket(AF_INET, SOCK_STREAM, 0);

		if (l < 0)
			die("socket");
		setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		a.sin_port = htons((unsigned short)atoi(argv[2]));
		if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0)
			die("bind");
		if (listen(l, 1) < 0)
			die("listen");
		fprintf(stderr, "smtcp: listening on %s\n", argv[2]);
		s = accept(l, NULL, NULL);
		if (s < 0)
			die("accept");
		close(l);
		return s;
	}
	if (argc >= 4 && strcmp(argv[1], "connect") == 0) {
		s = socket(AF_INET, SOCK_STREAM, 0);
		if (s < 0)
			die("socket");
		if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) {
			fprintf(stderr, "smtcp: not an IPv4 address: %s\n", argv[2]);
			exit(2);
		}
		a.sin_port = htons((unsigned short)atoi(argv[3]));
		if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
			die("connect");
		return s;
	}
	fprintf(stderr, "usage: smtcp listen PORT [-b] | smtcp connect IPV4 PORT [-b]\n");
	exit(2);
}

static void run_blocking(int s)
{
	static char buf[CHUNK];
	ssize_t n;

	while ((n = read(0, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("read stdin");
		}
		write_all(s, buf, (size_t)n);
		sent += (unsigned long long)n;
	}
	if (shutdown(s, SHUT_WR) < 0)
		die("shutdown");
	while ((n = read(s, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("read socket");
		}
		received += (unsigned long long)n;
		write_all(1, buf, (size_t)n);
	}
}

static void run_polling(int s)
{
	static char out[CHUNK], in[CHUNK];
	size_t pending = 0, off = 0;
	int stdin_eof = 0, shut = 0, sock_eof = 0;

	if (fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK) < 0)
		die("fcntl");
	for (;;) {
		struct pollfd p[2] = { { .fd = -1 }, { .fd = s } };

		if (stdin_eof && pending == 0 && !shut) {
			if (shutdown(s, SHUT_WR) < 0)
				die("shutdown");
			shut = 1;
		}
		if (sock_eof && shut)
			break;
		if (!stdin_eof && pending == 0) {
			p[0].fd = 0;
			p[0].events = POLLIN;
		}
		p[1].events = (sock_eof ? 0 : POLLIN) | (pending ? POLLOUT : 0);
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (p[0].revents) {
			ssize_t n = read(0, out, sizeof(out));

			if (n < 0 && errno != EINTR)
				die("read stdin");
			if (n == 0)
				stdin_eof = 1;
			if (n > 0) {
				pending = (size_t)n;
				off = 0;
			}
		}
		if (pending && (p[1].revents & (POLLOUT | POLLERR))) {
			ssize_t w = write(s, out + off, pending);

			if (w < 0 && errno != EAGAIN && errno != EINTR)
				die("write socket");
			if (w > 0) {
				off += (size_t)w;
				pending -= (size_t)w;
				sent += (unsigned long long)w;
			}
		}
		if (!sock_eof && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			int avail = -1;
			ssize_t n;

			if (ioctl(s, FIONREAD, &avail) < 0)
				die("ioctl FIONREAD");
			n = read(s, in, sizeof(in));
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				die("read socket");
			if (n == 0)
				sock_eof = 1;
			if (n > 0) {
				if (avail == 0)
					fionread_zero++;
				received += (unsigned long long)n;
				write_all(1, in, (size_t)n);
			}
		}
	}
}

int main(int argc, char **argv)
{
	int blocking = strcmp(argv[argc - 1], "-b") == 0;
	int s = open_conn(argc - blocking, argv);

	if (blocking)
		run_blocking(s);
	else
		run_polling(s);
	close(s);
	fprintf(stderr, "smtcp: sent=%llu received=%llu fionread_zero_with_data=%llu\n", sent, received, fionread_zero);
	return 0;
}
