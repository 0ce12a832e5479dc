/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * The few kernel types the socket iterators read, declared here with
 * preserve_access_index so libbpf relocates every field against the running
 * kernel's BTF (CO-RE). A full vmlinux.h would clash with the UAPI
 * linux/bpf.h the rest of the object uses. Only the fields read are named;
 * libbpf finds them by name, also inside the kernel's anonymous unions.
 */
#ifndef SOCKMESH_ITER_H
#define SOCKMESH_ITER_H

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct tcp_sock;

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	__u32 uid;
} __attribute__((preserve_access_index));

struct udp_sock;

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
	__u32 uid;
	int bucket;
} __attribute__((preserve_access_index));

/* Linux 6.5+: aborts the socket (ECONNABORTED locally, a RST to the peer).
 * Only tcp/udp iterators may call it: they hold the socket's lock. Weak, so
 * the object still loads where the kernel lacks it (the agent then keeps
 * the iterator unloaded and reports that cutting is unavailable). */
extern int bpf_sock_destroy(struct sock_common *sk) __ksym __weak;

#endif /* SOCKMESH_ITER_H */
