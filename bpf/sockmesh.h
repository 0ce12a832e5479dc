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
	SM_CTR_POL_ALLOWED,		/* policy judgements that allowed (an isolated direction had a rule) */
	SM_CTR_POL_EGRESS_DENIED,	/* connects refused (EPERM): the client's egress policy */
	SM_CTR_POL_INGRESS_DENIED,	/* connects refused (EPERM): the local destination's ingress policy */
	SM_CTR_POL_SYN_DENIED,		/* SYNs dropped at a listener: ingress policy, source seen by address */
	SM_CTR_POL_UDP_DENIED,		/* datagrams dropped at an unconnected socket: ingress policy */
	SM_CTR_POL_TICKET_HIT,		/* SYNs whose source the kernel saw connect (same node) */
	SM_CTR_POL_NO_TICKET,		/* SYNs claiming a local pod's address that no local connect made: judged as an address */
	SM_CTR_POL_CUT,			/* established sockets destroyed because policy no longer allows them */
	SM_CTR_POL_EVENTS_LOST,		/* policy events dropped: sm_pol_events full */
	SM_CTR_POL_IPV6_DENIED,		/* IPv6 packets (not loopback) dropped at an ingress-isolated pod's socket */
	SM_CTR_POL_SPOOF_DROPPED,	/* packets from a pod's raw socket with another source address: dropped as they left */
	SM_CTR_POL_GUARD_DROPPED,	/* frames leaving a pod through its veth with another source address (IPv4 or ARP): dropped */
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

/* ---- NetworkPolicy (docs/policy-datapath.md) ---- */

/* Reserved peer classes; the agent allocates the others from 16 up. */
enum sm_peer_class {
	SM_PEER_ANY = 0,	/* an entry for every peer (a rule with no from/to) */
	SM_PEER_ANY_POD = 1,	/* an entry for every pod of the cluster */
	SM_PEER_WORLD = 2,	/* an address no ipBlock names */
	SM_PEER_NODE_PROXY = 3,	/* the node proxy's upstream connections */
};

enum sm_pol_dir {
	SM_DIR_INGRESS = 0,
	SM_DIR_EGRESS = 1,
	SM_DIR_L7 = 2,		/* a client at an L7 service's listener: subject and peer are both the client's classes */
};

enum sm_pol_flags {
	SM_POL_F_INGRESS_ISOLATED = 1,	/* some policy selects the pod for ingress: only allowed peers reach it */
	SM_POL_F_EGRESS_ISOLATED = 2,	/* some policy selects the pod for egress: it reaches only allowed peers */
	SM_POL_F_POD = 4,		/* a pod (a subject that is a pod; an ipcache /32 whose peer is that pod's class) */
	SM_POL_F_PROXY = 8,		/* (ipcache) the node proxy's listener address: dialled, it stands for the proxy, not a pod */
};

/* A local pod as a policy subject and a source (by cgroup id, and by its address). */
struct sm_pol_subject {
	__u32 subject;		/* subject class: which sm_policy entries protect it */
	__u32 peer;		/* its peer class, as other pods' rules see it */
	enum sm_pol_flags flags;	/* SM_POL_F_*_ISOLATED */
	__u32 ip4;		/* its address (network order); 0 for the node proxy */
};

/* sm_ipcache key: an IPv4 prefix. prefixlen counts the bits of ip4. */
struct sm_ipcache_key {
	__u32 prefixlen;
	__u32 ip4;		/* network order */
};

struct sm_ipcache_val {
	__u32 peer;		/* the class of a source at this prefix */
	__u32 addr_peer;	/* for a pod's /32: its class when not known to be the pod (no ticket) */
	enum sm_pol_flags flags;	/* SM_POL_F_POD */
	__u32 pad;
};

/* sm_policy key: an allow entry. prefixlen counts bits after itself:
 * 96 one port, 80 every port of proto, 72 every port and protocol, 81..95 a
 * port range's aligned block. */
struct sm_policy_key {
	__u32 prefixlen;
	__u32 subject;
	__u32 peer;
	__u8 dir;		/* enum sm_pol_dir */
	__u8 proto;		/* IPPROTO_TCP / UDP / SCTP */
	__u16 port;		/* network order: its high bits are the prefix bits */
};

struct sm_policy_val {
	__u32 rule;		/* the agent's rule reference (metrics) */
	__u32 flags;
};

/* A same-node TCP connect in flight, by its 4-tuple (network order), seen
 * from the client: written by sockops when the SYN is about to leave, read
 * where the SYN reaches the listener. Only BPF programs write it. */
struct sm_ticket_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
};

struct sm_ticket {
	__u32 peer;		/* the client's peer class, from its cgroup */
	__u32 flags;		/* SM_SP_F_POD */
};

enum sm_sock_pol_flags {
	SM_SP_F_ACTIVE = 1,	/* a pod connected this socket (client side) */
	SM_SP_F_PASSIVE = 2,	/* accepted by a pod's listener */
	SM_SP_F_JUDGED = 4,	/* peer holds the class the connect was judged with */
	SM_SP_F_POD = 8,	/* that class is a pod's (every-pod entries apply) */
};

/* What was judged for a socket (socket local storage), for the cut pass. */
struct sm_sock_pol {
	__u32 peer;		/* the client's peer class, from its cgroup (active sockets) */
	enum sm_sock_pol_flags flags;
};

enum sm_pol_event_kind {
	SM_PE_DENY_CONNECT = 1,	/* connect() refused with EPERM (dir says whose policy) */
	SM_PE_DENY_SYN = 2,	/* a SYN dropped at the listener */
	SM_PE_DENY_UDP = 3,	/* a datagram dropped at an unconnected socket */
	SM_PE_CUT = 4,		/* an established socket destroyed by the cut pass */
	SM_PE_SPOOF = 5,	/* a raw socket of a pod sent a packet with another source address: dropped */
};

/* One record on sm_pol_events. The agent writes the reason (it knows which
 * pods and policies each class stands for); the kernel records the facts. */
struct sm_pol_event {
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
	__u64 cookie;		/* the socket's cookie; 0 for a dropped packet */
	__u32 src_ip4;		/* network order; 0 when the kernel did not know it yet (connect) */
	__u32 dst_ip4;		/* network order */
	__u32 src_port;		/* host order; 0 when not bound yet */
	__u32 dst_port;		/* host order */
	__u32 subject;		/* the subject class judged */
	__u32 peer;		/* the peer class judged */
	__u32 proto;		/* IPPROTO_* */
	enum sm_pol_dir dir;
	enum sm_pol_event_kind kind;
	__u32 sender_ip4;	/* SM_PE_SPOOF: the address of the pod that sent it (network order); else 0 */
	__u32 suppressed;	/* identical denials (same kind, direction, ends, port) folded into this one since the last record */
	__u32 pad;
};

/* A pod's host-side veth (key: its ifindex in the node's namespace): the
 * one address packets leaving the pod through it may carry. */
struct sm_port {
	__u32 ip4;		/* network order */
	__u32 pad;
};

/* sm_pol_seen: at most one denial record per key and second; the others are counted. */
struct sm_pol_seen_key {
	__u8 kind;
	__u8 dir;
	__u8 proto;
	__u8 pad;
	__u32 src_ip4;
	__u32 dst_ip4;
	__u32 dst_port;
};

struct sm_pol_seen {
	__u64 last_ns;		/* when the last record for this key was written */
	__u32 suppressed;	/* denials since then that wrote none */
	__u32 pad;
};

#endif /* SOCKMESH_H */
