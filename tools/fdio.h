/* SPDX-License-Identifier: Apache-2.0 */
/* Small I/O helpers shared by the C peers (tools/smtcp.c, benchmarks/rrbench.c).
 * The includer defines PROG, the name printed before errors. */
#ifndef SOCKMESH_FDIO_H
#define SOCKMESH_FDIO_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, PROG ": %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Writes all n bytes, retrying short writes and EINTR; dies on error. */
static void write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			die("write");
		}
		p += w;
		n -= (size_t)w;
	}
}

#endif /* SOCKMESH_FDIO_H */
