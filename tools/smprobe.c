// SPDX-License-Identifier: Apache-2.0
/*
 * smprobe: kernel-level socket probes for sockmesh's policy tests. Results
 * are what the kernel said (errno names), not a runtime's interpretation.
 *
 *   smprobe serve PORT
 *       listen on [::]:PORT, dual-stack (IPv4 clients arrive as v4-mapped,
 *       as on Node's default listener); each accepted connection gets "hi\n"
 *       and is then echoed until the peer closes (one process, poll loop)
 *   smprobe connect ADDR PORT TIMEOUT_MS
 *       one connect to an IPv4 address, an IPv6 one (::ffff:a.b.c.d from an
 *       AF_INET6 socket; fe80::x%eth0); prints "ok <ms>" once the handshake
 *       completed, or the errno name ("EPERM <ms>", "ETIMEDOUT <ms>")
 *   smprobe udp-serve PORT
 *       an unconnected UDP socket on 0.0.0.0:PORT answering each datagram
 *   smprobe udp-hold IPV4 PORT SECONDS
 *       a connected UDP socket: ask, print "connected" once answered, then ask
 *       every 100 ms; prints how it ended ("ECONNABORTED <ms>", "timeout <ms>")
 *   smprobe udp-send ADDR PORT TIMEOUT_MS
 *       sendto() from an unconnected socket (AF_INET6 for an IPv6 address,
 *       so ::ffff:a.b.c.d is a dual-stack send), then wait for the answer:
 *       "ok <ms>", the errno of sendto ("EPERM <ms>"), or "ETIMEDOUT <ms>"
 *   smprobe hold IPV4 PORT SECONDS
 *       connect, read the greeting, print "connected" (flushed), then block
 *       in read() for up to SECONDS; prints how it ended: "eof <ms>",
 *       "timeout <ms>" or the errno name ("ECONNABORTED <ms>", ...)
 *   smprobe spoof-syn SRC_IPV4 DST_IPV4 DPORT
 *       sends one TCP SYN from a raw socket (IP_HDRINCL) claiming SRC_IPV4;
 *       prints "sent <source port>", or the errno name when sendto failed
 *   smprobe spoof-udp SRC_IPV4 DST_IPV4 DPORT
 *       the same for one UDP datagram
 *   smprobe spoof-frame IFACE DST_MAC SRC_IPV4 DST_IPV4 DPORT
 *       the SYN as a whole Ethernet frame through AF_PACKET on IFACE
 * Exit status: 0 when the probe ran (whatever the verdict), 2 on misuse.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <net/if.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROG "smprobe"

static void die(const char *what)
{
	fprintf(stderr, PROG ": %s: %s\n", what, strerror(errno));
	exit(1);
}

#define MAX_CONNS 256

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static const char *errname(int e)
{
	switch (e) {
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ECONNREFUSED: return "ECONNREFUSED";
	case ECONNRESET: return "ECONNRESET";
	case ECONNABORTED: return "ECONNABORTED";
	case EHOSTUNREACH: return "EHOSTUNREACH";
	case ENETUNREACH: return "ENETUNREACH";
	case EPIPE: return "EPIPE";
	case EDESTADDRREQ: return "EDESTADDRREQ";
	default: return strerror(e);
	}
}

/* Any address smprobe dials: IPv4, or IPv6 with an optional %interface. */
static socklen_t any_addr_of(const char *text, const char *port, struct sockaddr_storage *out)
{
	char ip[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	char *pct;

	memset(out, 0, sizeof(*out));
	if (!strchr(text, ':')) {
		struct sockaddr_in *a = (struct sockaddr_in *)out;

		a->sin_family = AF_INET;
		a->sin_port = htons((unsigned short)atoi(port));
		if (inet_pton(AF_INET, text, &a->sin_addr) != 1)
			goto bad;
		return sizeof(*a);
	}
	snprintf(ip, sizeof(ip), "%s", text);
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;

	a6->sin6_family = AF_INET6;
	a6->sin6_port = htons((unsigned short)atoi(port));
	pct = strchr(ip, '%');
	if (pct) {
		*pct = 0;
		a6->sin6_scope_id = if_nametoindex(pct + 1);
	}
	if (inet_pton(AF_INET6, ip, &a6->sin6_addr) != 1)
		goto bad;
	return sizeof(*a6);
bad:
	fprintf(stderr, PROG ": not an address: %s\n", text);
	exit(2);
}

static struct sockaddr_in addr_of(const char *ip, const char *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };

	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
		fprintf(stderr, PROG ": not an IPv4 address: %s\n", ip);
		exit(2);
	}
	a.sin_port = htons((unsigned short)atoi(port));
	return a;
}

static __attribute__((noreturn)) void serve(const char *port)
{
	struct pollfd fds[MAX_CONNS + 1];
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT };
	int one = 1, zero = 0, n = 1, l = socket(AF_INET6, SOCK_STREAM, 0);
	char buf[4096];

	if (l < 0)
		die("socket");
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	a.sin6_port = htons((unsigned short)atoi(port));
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("bind");
	if (listen(l, 64) < 0)
		die("listen");
	fprintf(stderr, PROG ": serving on %s\n", port);
	fds[0].fd = l;
	fds[0].events = POLLIN;
	for (;;) {
		if (poll(fds, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (fds[0].revents & POLLIN) {
			int s = accept(l, NULL, NULL);

			if (s >= 0 && n <= MAX_CONNS) {
				if (write(s, "hi\n", 3) != 3) {
					close(s);
				} else {
					fds[n].fd = s;
					fds[n].events = POLLIN;
					fds[n].revents = 0;
					n++;
				}
			} else if (s >= 0) {
				close(s);
			}
		}
		for (int i = 1; i < n; i++) {
			ssize_t r;

			if (!fds[i].revents)
				continue;
			r = read(fds[i].fd, buf, sizeof(buf));
			if (r > 0 && write(fds[i].fd, buf, (size_t)r) == r)
				continue;
			close(fds[i].fd);
			fds[i] = fds[--n];
			i--;
		}
	}
}

/* Connects within timeout_ms: 0, or the errno. */
static int connect_within(int s, const void *a, socklen_t alen, int timeout_ms)
{
	struct pollfd p = { .fd = s, .events = POLLOUT };
	int err = 0, fl = fcntl(s, F_GETFL);
	socklen_t len = sizeof(err);

	fcntl(s, F_SETFL, fl | O_NONBLOCK);
	if (connect(s, (const struct sockaddr *)a, alen) == 0)
		goto done;
	if (errno != EINPROGRESS)
		return errno;
	if (poll(&p, 1, timeout_ms) == 0)
		return ETIMEDOUT;
	if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	if (err)
		return err;
done:
	fcntl(s, F_SETFL, fl);
	return 0;
}

static int read_greeting(int s)
{
	char buf[3];
	size_t got = 0;

	while (got < sizeof(buf)) {
		ssize_t r = read(s, buf + got, sizeof(buf) - got);

		if (r <= 0)
			return r == 0 ? ECONNRESET : errno;
		got += (size_t)r;
	}
	return memcmp(buf, "hi\n", 3) == 0 ? 0 : EPROTO;
}

static int probe_connect(const char *ip, const char *port, int timeout_ms)
{
	struct sockaddr_storage a;
	socklen_t alen = any_addr_of(ip, port, &a);
	long long t0 = now_ms();
	int s = socket(a.ss_family, SOCK_STREAM, 0), e;

	if (s < 0)
		die("socket");
	e = connect_within(s, &a, alen, timeout_ms);
	printf("%s %lld\n", e ? errname(e) : "ok", now_ms() - t0);
	close(s);
	return 0;
}

static int probe_hold(const char *ip, const char *port, int seconds)
{
	struct sockaddr_in a = addr_of(ip, port);
	struct timeval tv = { .tv_sec = seconds };
	int s = socket(AF_INET, SOCK_STREAM, 0), e;
	long long t0;
	char c;
	ssize_t r;

	if (s < 0)
		die("socket");
	e = connect_within(s, &a, sizeof(a), 5000);
	if (!e)
		e = read_greeting(s);
	if (e) {
		printf("%s 0\n", errname(e));
		return 0;
	}
	printf("connected\n");
	fflush(stdout);
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	t0 = now_ms();
	/* a wake-up with nothing to report (EAGAIN before the deadline: sockmap's
	 * receive path can do that on a state change) is not how it ended */
	do
		r = read(s, &c, 1);
	while (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) && now_ms() - t0 < seconds * 1000LL - 50);
	if (r == 0)
		printf("eof %lld\n", now_ms() - t0);
	else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		printf("timeout %lld\n", now_ms() - t0);
	else if (r < 0)
		printf("%s %lld\n", errname(errno), now_ms() - t0);
	else
		printf("data %lld\n", now_ms() - t0);
	close(s);
	return 0;
}

/* The Internet checksum (RFC 1071) of len bytes, in network order. Reads
 * bytes, not 16-bit words: the structs summed are other types (aliasing). */
static __attribute__((noreturn)) void udp_serve(const char *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET }, from;
	socklen_t flen;
	char buf[512];
	int s = socket(AF_INET, SOCK_DGRAM, 0);

	if (s < 0)
		die("socket");
	a.sin_port = htons((unsigned short)atoi(port));
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("bind");
	fprintf(stderr, PROG ": udp on %s\n", port);
	for (;;) {
		ssize_t r;

		flen = sizeof(from);
		r = recvfrom(s, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
		if (r > 0)
			sendto(s, buf, (size_t)r, 0, (struct sockaddr *)&from, flen);
	}
}

static int udp_send(const char *ip, const char *port, int timeout_ms)
{
	struct sockaddr_storage a;
	socklen_t alen = any_addr_of(ip, port, &a);
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
	long long t0 = now_ms();
	int s = socket(a.ss_family, SOCK_DGRAM, 0);
	char buf[16];
	ssize_t r;

	if (s < 0)
		die("socket");
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (sendto(s, "ping", 4, 0, (struct sockaddr *)&a, alen) < 0) {
		printf("%s %lld\n", errname(errno), now_ms() - t0);
		return 0;
	}
	r = recv(s, buf, sizeof(buf), 0);
	if (r < 0)
		printf("%s %lld\n", errno == EAGAIN || errno == EWOULDBLOCK ? "ETIMEDOUT" : errname(errno), now_ms() - t0);
	else
		printf("ok %lld\n", now_ms() - t0);
	close(s);
	return 0;
}

/* A connected UDP socket asking every 100 ms until SECONDS pass or a call fails. */
static int udp_hold(const char *ip, const char *port, int seconds)
{
	struct sockaddr_in a = addr_of(ip, port);
	struct timeval tv = { .tv_sec = 1 };
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	long long t0;
	char buf[16];

	if (s < 0)
		die("socket");
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		printf("%s 0\n", errname(errno));
		return 0;
	}
	if (send(s, "ping", 4, 0) < 0 || recv(s, buf, sizeof(buf), 0) < 0) {
		printf("%s 0\n", errname(errno));
		return 0;
	}
	printf("connected\n");
	fflush(stdout);
	t0 = now_ms();
	while (now_ms() - t0 < seconds * 1000LL) {
		if (send(s, "ping", 4, 0) < 0 || recv(s, buf, sizeof(buf), 0) < 0) {
			printf("%s %lld\n", errno == EAGAIN || errno == EWOULDBLOCK ? "ETIMEDOUT" : errname(errno), now_ms() - t0);
			return 0;
		}
		usleep(100 * 1000);
	}
	printf("timeout %lld\n", now_ms() - t0);
	return 0;
}

static unsigned short csum(const void *data, size_t len)
{
	const unsigned char *p = data;
	unsigned int sum = 0;

	for (; len > 1; len -= 2, p += 2)
		sum += (unsigned int)(p[0] << 8 | p[1]);
	if (len)
		sum += (unsigned int)(p[0] << 8);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return htons((unsigned short)~sum);
}

/* An IPv4 + TCP SYN from src to dst:port (both network order), checksums
 * filled: what the spoof probes send, as a packet or inside a frame. */
struct syn_packet {
	struct iphdr ip;
	struct tcphdr tcp;
} __attribute__((packed));

static void fill_syn(struct syn_packet *p, unsigned int src, unsigned int dst, unsigned short port)
{
	struct {
		unsigned int src, dst;
		unsigned char zero, proto;
		unsigned short len;
		struct tcphdr tcp;
	} pseudo;

	memset(p, 0, sizeof(*p));
	p->tcp.source = htons(40000 + (unsigned short)(getpid() % 20000));
	p->tcp.dest = port;
	p->tcp.seq = htonl(0x5eed);
	p->tcp.doff = 5;
	p->tcp.syn = 1;
	p->tcp.window = htons(64240);
	memset(&pseudo, 0, sizeof(pseudo));
	pseudo.src = src;
	pseudo.dst = dst;
	pseudo.proto = IPPROTO_TCP;
	pseudo.len = htons(sizeof(struct tcphdr));
	pseudo.tcp = p->tcp;
	p->tcp.check = csum(&pseudo, sizeof(pseudo));
	p->ip.version = 4;
	p->ip.ihl = 5;
	p->ip.ttl = 64;
	p->ip.protocol = IPPROTO_TCP;
	p->ip.tot_len = htons(sizeof(*p));
	p->ip.saddr = src;
	p->ip.daddr = dst;
	p->ip.check = csum(&p->ip, sizeof(p->ip));
}

static int spoof_syn(const char *src, const char *dst, const char *port)
{
	struct sockaddr_in d = addr_of(dst, port), sa = addr_of(src, "0");
	struct syn_packet pkt;
	int one = 1, s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);

	if (s < 0)
		die("socket(SOCK_RAW)");
	if (setsockopt(s, IPPROTO_IP, IP_HDRINCL, &one, sizeof(one)) < 0)
		die("IP_HDRINCL");
	fill_syn(&pkt, sa.sin_addr.s_addr, d.sin_addr.s_addr, d.sin_port);
	if (sendto(s, &pkt, sizeof(pkt), 0, (struct sockaddr *)&d, sizeof(d)) < 0)
		printf("%s\n", errname(errno)); /* EPERM: dropped as it left */
	else
		printf("sent %u\n", ntohs(pkt.tcp.source));
	close(s);
	return 0;
}

/* One UDP datagram from a raw socket claiming SRC_IPV4 (checksum 0: none, allowed for UDP over IPv4). */
static int spoof_udp(const char *src, const char *dst, const char *port)
{
	struct sockaddr_in d = addr_of(dst, port), sa = addr_of(src, "0");
	struct {
		struct iphdr ip;
		struct udphdr udp;
		char data[4];
	} pkt;
	int one = 1, s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);

	if (s < 0)
		die("socket(SOCK_RAW)");
	if (setsockopt(s, IPPROTO_IP, IP_HDRINCL, &one, sizeof(one)) < 0)
		die("IP_HDRINCL");
	memset(&pkt, 0, sizeof(pkt));
	memcpy(pkt.data, "ping", 4);
	pkt.udp.source = htons(40000 + (unsigned short)(getpid() % 20000));
	pkt.udp.dest = d.sin_port;
	pkt.udp.len = htons(sizeof(pkt.udp) + sizeof(pkt.data));
	pkt.ip.version = 4;
	pkt.ip.ihl = 5;
	pkt.ip.ttl = 64;
	pkt.ip.protocol = IPPROTO_UDP;
	pkt.ip.tot_len = htons(sizeof(pkt));
	pkt.ip.saddr = sa.sin_addr.s_addr;
	pkt.ip.daddr = d.sin_addr.s_addr;
	pkt.ip.check = csum(&pkt.ip, sizeof(pkt.ip));
	if (sendto(s, &pkt, sizeof(pkt), 0, (struct sockaddr *)&d, sizeof(d)) < 0)
		printf("%s\n", errname(errno));
	else
		printf("sent %u\n", ntohs(pkt.udp.source));
	close(s);
	return 0;
}

/* A whole Ethernet frame through AF_PACKET (no socket layer, no cgroup hook
 * sees it): a TCP SYN claiming SRC_IPV4, to DST_MAC on IFACE. */
static int spoof_frame(const char *ifname, const char *mac, const char *src, const char *dst, const char *port)
{
	struct sockaddr_in d = addr_of(dst, port), sa = addr_of(src, "0");
	struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_halen = 6 };
	struct ifreq ifr;
	struct {
		struct ether_header eth;
		struct syn_packet syn;
	} __attribute__((packed)) f;
	unsigned int m[6];
	int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));

	if (s < 0)
		die("socket(AF_PACKET)");
	if (sscanf(mac, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6) {
		fprintf(stderr, PROG ": not a MAC address: %s\n", mac);
		return 2;
	}
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0)
		die("SIOCGIFHWADDR");
	for (int i = 0; i < 6; i++) {
		f.eth.ether_dhost[i] = (unsigned char)m[i];
		ll.sll_addr[i] = (unsigned char)m[i];
	}
	memcpy(f.eth.ether_shost, ifr.ifr_hwaddr.sa_data, 6);
	f.eth.ether_type = htons(ETH_P_IP);
	fill_syn(&f.syn, sa.sin_addr.s_addr, d.sin_addr.s_addr, d.sin_port);
	ll.sll_ifindex = (int)if_nametoindex(ifname);
	if (sendto(s, &f, sizeof(f), 0, (struct sockaddr *)&ll, sizeof(ll)) < 0)
		printf("%s\n", errname(errno));
	else
		printf("sent %u\n", ntohs(f.syn.tcp.source));
	close(s);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && strcmp(argv[1], "serve") == 0)
		serve(argv[2]);
	if (argc == 5 && strcmp(argv[1], "connect") == 0)
		return probe_connect(argv[2], argv[3], atoi(argv[4]));
	if (argc == 5 && strcmp(argv[1], "hold") == 0)
		return probe_hold(argv[2], argv[3], atoi(argv[4]));
	if (argc == 3 && strcmp(argv[1], "udp-serve") == 0)
		udp_serve(argv[2]);
	if (argc == 5 && strcmp(argv[1], "udp-hold") == 0)
		return udp_hold(argv[2], argv[3], atoi(argv[4]));
	if (argc == 5 && strcmp(argv[1], "udp-send") == 0)
		return udp_send(argv[2], argv[3], atoi(argv[4]));
	if (argc == 7 && strcmp(argv[1], "spoof-frame") == 0)
		return spoof_frame(argv[2], argv[3], argv[4], argv[5], argv[6]);
	if (argc == 5 && strcmp(argv[1], "spoof-udp") == 0)
		return spoof_udp(argv[2], argv[3], argv[4]);
	if (argc == 5 && strcmp(argv[1], "spoof-syn") == 0)
		return spoof_syn(argv[2], argv[3], argv[4]);
	fprintf(stderr, "usage: smprobe serve PORT | connect ADDR PORT TIMEOUT_MS | hold IPV4 PORT SECONDS | udp-serve PORT | udp-hold IPV4 PORT SECONDS | udp-send ADDR PORT TIMEOUT_MS | spoof-syn SRC DST PORT | spoof-udp SRC DST PORT | spoof-frame IFACE MAC SRC DST PORT\n");
	return 2;
}
