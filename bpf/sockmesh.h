/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * Types shared by sockmesh.bpf.c and the agent. The agent never copies these
 * by hand: mesh-agent/datapath/layout.ts reads member offsets and enum values
 * from this object's BTF at load time and refuses to run when they disagree.
 */
#ifndef SOCKMESH_H
#define SOCKMESH_H

/* A TCP socket's 4-tuple as seen from that socket. Addresses in network byte
 * order, ports in host byte order (so the agent can print them without
 * knowing how the kernel stores remote_port). */
struct sm_sock_key {
	__u32 local_ip4;
	__u32 remote_ip4;
	__u32 local_port;
	__u32 remote_port;
};

/* What the agent knows about an enrolled local endpoint (a pod address). */
enum sm_endpoint_flags {
	SM_EP_F_ENROLLED = 1,	/* short-circuit connections of this endpoint */
};

struct sm_endpoint {
	__u32 identity;			/* numeric security identity; 0 = none yet */
	enum sm_endpoint_flags flags;	/* SM_EP_F_* bits (an enum type so BTF carries the names) */
};

/* Per-CPU counters, one slot each. The agent reads the names from BTF. */
enum sm_counter {
	SM_CTR_SOCK_INSERTED = 0,	/* sockets put into sm_sock_hash */
	SM_CTR_SOCK_INSERT_FAILED,	/* sock_hash_update failed (map full, ...) */
	SM_CTR_SOCK_SKIPPED,		/* established, but an end is not enrolled */
	SM_CTR_MSG_REDIRECTED,		/* sendmsg calls redirected to the peer */
	SM_CTR_BYTES_REDIRECTED,	/* bytes in those calls */
	SM_CTR_MSG_PASSED,		/* sendmsg calls the stack carried (peer missing) */
	SM_CTR_BYTES_PASSED,		/* bytes in those calls */
	SM_CTR_SVC_TRANSLATED,		/* connects to a service VIP sent to a backend */
	SM_CTR_SVC_NO_BACKEND,		/* connects to a service with no ready backend: refused */
	SM_CTR_SVC_BACKEND_MISS,	/* picked slot absent (the set changed under the connect): refused */
	SM_CTR_SVC_NOT_ENROLLED,	/* connects to a VIP left alone: the client is not enrolled */
	SM_CTR_FLOW_EVENTS_LOST,	/* flow events dropped: sm_flow_events full, or no socket storage for the flow */
	SM_CTR_MAX,
};

/* Per-socket state kept by sk_msg in socket local storage. */
struct sm_sock_state {
	__u32 flags;		/* SM_SOCK_F_* */
	__u32 pad;
};

enum sm_sock_flags {
	SM_SOCK_F_STACK = 1,	/* one-way switch: from now on the stack carries it */
};

/* A service frontend: VIP (network order) and port (host order), TCP. */
struct sm_svc_key {
	__u32 vip4;
	__u16 port;
	__u16 pad;
};

enum sm_svc_flags {
	SM_SVC_F_ANY_CLIENT = 1,	/* translate for every client, enrolled or not (no kube-proxy here) */
};

/* A service: its backends are sm_backends[{id, gen, 0..count-1}]. The agent
 * writes a new set under the other generation, then flips gen and count in
 * one update, then deletes the old set: a connect sees one whole set. */
struct sm_svc {
	__u32 id;
	__u16 count;
	__u8 gen;
	__u8 pad;
	enum sm_svc_flags flags;	/* SM_SVC_F_* bits (an enum type so BTF carries the names) */
};

struct sm_backend_key {
	__u32 svc_id;
	__u16 slot;
	__u8 gen;
	__u8 pad;
};

/* A backend: pod IPv4 (network order) and port (host order). */
struct sm_backend {
	__u32 ip4;
	__u16 port;
	__u16 pad;
};

/* What the agent knows about a pod's cgroup (key: cgroup id). */
enum sm_cgroup_flags {
	SM_CG_F_ENROLLED = 1,	/* the pod is enrolled in the mesh */
};

struct sm_cgroup {
	__u32 identity;
	enum sm_cgroup_flags flags;
};

/* The service a socket dialled, kept for getpeername (socket local storage). */
struct sm_sock_svc {
	__u32 vip4;		/* 0: not a service connection */
	__u16 port;
	__u16 pad;
};

/* What a flow event reports. */
enum sm_flow_kind {
	SM_FLOW_OPEN = 1,	/* the connection is established */
	SM_FLOW_CLOSE = 2,	/* the socket went to TCP_CLOSE */
};

enum sm_flow_flags {
	SM_FLOW_F_ACTIVE = 1,		/* this socket connected (client side); else it was accepted */
	SM_FLOW_F_SHORT_CIRCUITED = 2,	/* it entered sm_sock_hash: its sends may take the redirect */
	SM_FLOW_F_SERVICE = 4,		/* connect4 translated it: it dialled svc_ip4:svc_port */
};

/* One record on sm_flow_events, for one socket of a connection the mesh
 * tracks (an end is an enrolled endpoint, or connect4 translated it). A
 * short-circuited connection has two sockets, so four records. Times are
 * bpf_ktime_get_ns() (CLOCK_MONOTONIC). Byte counts are payload bytes of the
 * connection, SYN and FIN excluded; they are 0 in open records. */
struct sm_flow_event {
	__u64 cookie;		/* bpf_get_socket_cookie(): stable per socket */
	__u64 ts_ns;		/* when this happened */
	__u64 open_ns;		/* when the connection was established (= ts_ns in open records) */
	__u64 stack_sent;	/* bytes the peer acknowledged through TCP (bytes_acked) */
	__u64 stack_recv;	/* bytes received through TCP (bytes_received) */
	__u64 redir_sent;	/* bytes sk_msg redirected from this socket into its peer */
	__u32 local_ip4;	/* network order */
	__u32 remote_ip4;	/* network order; the backend, for a translated socket */
	__u32 svc_ip4;		/* network order; the VIP dialled, 0 unless SM_FLOW_F_SERVICE */
	__u32 local_port;	/* host order */
	__u32 remote_port;	/* host order */
	__u32 svc_port;		/* host order */
	enum sm_flow_kind kind;
	enum sm_flow_flags flags;	/* SM_FLOW_F_* bits */
};

enum sm_flow_state {
	SM_FLOW_S_FIN_IN = 1,	/* the peer's FIN arrived: bytes_received counts it */
	SM_FLOW_S_CLOSED = 2,	/* the close record was sent */
};

/* Per-socket state of a tracked connection (socket local storage). */
struct sm_sock_flow {
	__u64 open_ns;		/* bpf_ktime_get_ns() at established */
	__u64 redir_sent;	/* bytes sk_msg redirected from this socket */
	__u64 acked_base;	/* bytes_acked at established: the SYN on the active side */
	__u64 recv_base;	/* bytes_received at established */
	enum sm_flow_flags flags;	/* as in the open record */
	enum sm_flow_state state;	/* SM_FLOW_S_* bits */
};

#endif /* SOCKMESH_H */
