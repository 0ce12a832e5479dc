// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/*
 * sockmesh kernel short-circuit.
 *
 *  sockops (cgroup): when a TCP connection between two enrolled local
 *      endpoints is established, put the socket into sm_sock_hash under its
 *      own 4-tuple.
 *  sk_msg (sm_sock_hash): each sendmsg is redirected to the ingress queue of
 *      the peer socket (the reversed 4-tuple), skipping TCP/IP, veth and the
 *      bridge. When the peer is not there, the normal stack carries that
 *      send and every later one of the socket (see the rule below).
 *  cgroup/connect4: a TCP connect to a service VIP:port goes straight to one
 *      of its backends, picked at random (socket-level load balancing: no
 *      NAT per packet, no conntrack); a service without backends refuses the
 *      connect with ECONNREFUSED. The socket remembers the VIP.
 *  cgroup/getpeername4: such a socket reports the VIP:port it dialled.
 *  cgroup/connect6, getpeername6: the same for a dual-stack (AF_INET6)
 *      socket dialling ::ffff:VIP.
 *  NetworkPolicy (docs/policy-datapath.md): connect4 refuses with EPERM a
 *      connect the client's egress policy or a local destination's ingress
 *      policy does not allow; sockops hands the client's class to the
 *      listener in a ticket; cgroup_skb/ingress drops SYNs and datagrams a
 *      pod's ingress policy does not allow; iter/tcp destroys established
 *      sockets a changed policy no longer allows.
 *  Flow records: sockops writes an open record on sm_flow_events when a
 *      connection the mesh tracks is established (an end is enrolled, or
 *      connect4 translated it) and a close record, with its byte counts,
 *      when that socket reaches TCP_CLOSE; sk_msg counts each socket's
 *      redirected bytes for it.
 *
 * Byte order rule: the two paths of one byte stream may only ever change from
 * "redirect" to "stack", never back. Redirected bytes are queued on the peer
 * at once and read before anything the stack delivers later, so that change
 * keeps order; the other way could overtake bytes still in flight.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sockmesh.h"
#include "sockmesh_iter.h"

#include "sockmesh_maps.h"

static __always_inline void count_add(enum sm_counter ctr, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&sm_counters, &ctr);

	if (v)
		*v += n;
}

static __always_inline int endpoint_enrolled(__u32 ip4)
{
	struct sm_endpoint *ep = bpf_map_lookup_elem(&sm_endpoints, &ip4);

	return ep && (ep->flags & SM_EP_F_ENROLLED);
}

/* sock_ops and sk_msg both load remote_port as the wire value shifted into
 * the upper half of a host-order u32; bpf_ntohl turns that into the port. */
static __always_inline int v4_mapped(const __u32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff);
}

/* An IPv4 connection: an AF_INET socket, or an AF_INET6 one with v4-mapped
 * addresses (what a listener on "::" accepts from an IPv4 client). Both keep
 * the IPv4 addresses where local_ip4/remote_ip4 (and sk_msg's) read them. */
static __always_inline int ipv4_connection(struct bpf_sock_ops *ops)
{
	if (ops->family == 2 /* AF_INET */)
		return 1;
	return ops->family == 10 /* AF_INET6 */ && v4_mapped(ops->local_ip6) && v4_mapped(ops->remote_ip6);
}

static __always_inline void key_from_sockops(struct sm_sock_key *k, struct bpf_sock_ops *ops)
{
	k->local_ip4 = ops->local_ip4;
	k->remote_ip4 = ops->remote_ip4;
	k->local_port = ops->local_port;
	k->remote_port = bpf_ntohl(ops->remote_port);
}

static __always_inline void peer_key_from_msg(struct sm_sock_key *k, struct sk_msg_md *msg)
{
	k->local_ip4 = msg->remote_ip4;
	k->remote_ip4 = msg->local_ip4;
	k->local_port = bpf_ntohl(msg->remote_port);
	k->remote_port = msg->local_port;
}

/* 1 when the socket went into sm_sock_hash. */
static __always_inline int insert_established(struct bpf_sock_ops *ops)
{
	struct sm_sock_key key = {};

	key_from_sockops(&key, ops);
	if (bpf_sock_hash_update(ops, &sm_sock_hash, &key, BPF_NOEXIST) != 0) {
		count_add(SM_CTR_SOCK_INSERT_FAILED, 1);
		return 0;
	}
	count_add(SM_CTR_SOCK_INSERTED, 1);
	return 1;
}

/* One record on sm_flow_events; a full ring buffer loses it, counted. */
static __always_inline void emit_flow_event(struct bpf_sock_ops *ops, const struct sm_sock_flow *flow,
					    const struct sm_sock_svc *svc, enum sm_flow_kind kind, __u64 now,
					    __u64 stack_sent, __u64 stack_recv)
{
	struct sm_flow_event *e = bpf_ringbuf_reserve(&sm_flow_events, sizeof(*e), 0);

	if (!e) {
		count_add(SM_CTR_FLOW_EVENTS_LOST, 1);
		return;
	}
	e->cookie = bpf_get_socket_cookie(ops);
	e->ts_ns = now;
	e->open_ns = flow->open_ns;
	e->stack_sent = stack_sent;
	e->stack_recv = stack_recv;
	e->redir_sent = flow->redir_sent;
	e->local_ip4 = ops->local_ip4;
	e->remote_ip4 = ops->remote_ip4;
	e->local_port = ops->local_port;
	e->remote_port = bpf_ntohl(ops->remote_port);
	e->svc_ip4 = svc ? svc->vip4 : 0;
	e->svc_port = svc ? svc->port : 0;
	e->kind = kind;
	e->flags = flow->flags;
	bpf_ringbuf_submit(e, 0);
}

/* ---- NetworkPolicy ------------------------------------------------------ */

#define SM_POL_EVENT_EVERY_NS 1000000000ULL

/* One policy record on sm_pol_events. Denials are folded: at most one record
 * per (kind, direction, ends, port) and second, carrying how many identical
 * ones it stands for; the counters count every one. Cuts are never folded. */
static __always_inline void emit_pol_event(enum sm_pol_event_kind kind, enum sm_pol_dir dir, __u64 cookie, __u32 src, __u32 dst,
					   __u32 sport, __u32 dport, __u32 subject, __u32 peer, __u32 proto)
{
	struct sm_pol_seen_key sk = {};
	struct sm_pol_seen fresh = {}, *seen;
	struct sm_pol_event *e;
	__u32 suppressed = 0;
	__u64 now = bpf_ktime_get_ns();

	if (kind != SM_PE_CUT) {
		sk.kind = kind;
		sk.dir = dir;
		sk.proto = proto;
		sk.src_ip4 = src;
		sk.dst_ip4 = dst;
		sk.dst_port = dport;
		seen = bpf_map_lookup_elem(&sm_pol_seen, &sk);
		if (seen && now - seen->last_ns < SM_POL_EVENT_EVERY_NS) {
			__sync_fetch_and_add(&seen->suppressed, 1);
			return;
		}
		if (seen) {
			suppressed = seen->suppressed;
			seen->suppressed = 0;
			seen->last_ns = now;
		} else {
			fresh.last_ns = now;
			bpf_map_update_elem(&sm_pol_seen, &sk, &fresh, BPF_ANY);
		}
	}
	e = bpf_ringbuf_reserve(&sm_pol_events, sizeof(*e), 0);
	if (!e) {
		count_add(SM_CTR_POL_EVENTS_LOST, 1);
		return;
	}
	e->ts_ns = now;
	e->cookie = cookie;
	e->src_ip4 = src;
	e->dst_ip4 = dst;
	e->src_port = sport;
	e->dst_port = dport;
	e->subject = subject;
	e->peer = peer;
	e->proto = proto;
	e->dir = dir;
	e->kind = kind;
	e->sender_ip4 = 0;
	e->suppressed = suppressed;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
}

/* Whether an allow entry covers (subject, peer, dir, proto, port): the peer's
 * own class, then "every pod" (pods only), then "every peer". Port in network
 * order. NetworkPolicy only allows, so any hit allows. */
static __always_inline int pol_allowed(__u32 subject, __u32 peer, int is_pod, __u8 dir, __u8 proto, __u16 port_be)
{
	struct sm_policy_key k = {};

	k.prefixlen = 96;
	k.subject = subject;
	k.peer = peer;
	k.dir = dir;
	k.proto = proto;
	k.port = port_be;
	if (bpf_map_lookup_elem(&sm_policy, &k))
		goto allowed;
	if (is_pod) {
		k.peer = SM_PEER_ANY_POD;
		if (bpf_map_lookup_elem(&sm_policy, &k))
			goto allowed;
	}
	k.peer = SM_PEER_ANY;
	if (bpf_map_lookup_elem(&sm_policy, &k))
		goto allowed;
	return 0;
allowed:
	count_add(SM_CTR_POL_ALLOWED, 1);
	return 1;
}

/* An L7 service's client at the node proxy's listener: allowed when the
 * agent wrote an entry for the client's own (subject, peer) classes on that
 * port, that is when every backend would take this client. */
static __always_inline int l7_allowed(struct sm_pol_subject *src, __u8 proto, __u16 port_be)
{
	struct sm_policy_key k = {};

	k.prefixlen = 96;
	k.subject = src->subject;
	k.peer = src->peer;
	k.dir = SM_DIR_L7;
	k.proto = proto;
	k.port = port_be;
	if (!bpf_map_lookup_elem(&sm_policy, &k))
		return 0;
	count_add(SM_CTR_POL_ALLOWED, 1);
	return 1;
}

/* The class of a source known only by its address (a packet's, or an
 * accepted socket's peer without a ticket). A local pod's address may be
 * forged from this node, so it counts as an address; a pod on another node
 * is its pod (that node guards its addresses); the node proxy's address is
 * the node's own as a source. */
static __always_inline __u32 source_peer(__u32 ip4, int *is_pod)
{
	struct sm_ipcache_key k = { .prefixlen = 32, .ip4 = ip4 };
	struct sm_ipcache_val *v = bpf_map_lookup_elem(&sm_ipcache, &k);

	*is_pod = 0;
	if (!v)
		return SM_PEER_WORLD;
	if (!(v->flags & SM_POL_F_POD))
		return v->peer;
	if ((v->flags & SM_POL_F_PROXY) || bpf_map_lookup_elem(&sm_pol_pods, &ip4))
		return v->addr_peer;
	*is_pod = 1;
	return v->peer;
}

/* The class of a destination this node dials (port in host order): a local
 * pod's (to: its subject entry, looked up by the caller), else the ipcache's. `proxy`: it is an L7
 * service's listener on the node proxy, judged for every client by
 * l7_allowed; any other port of that address is the node's, an address. */
static __always_inline __u32 dialled_peer(struct sm_pol_subject *to, __u32 dst, __u32 port, int *is_pod, int *proxy)
{
	struct sm_ipcache_key k = { .prefixlen = 32, .ip4 = dst };
	struct sm_ipcache_val *v;

	*is_pod = 0;
	*proxy = 0;
	if (to) {
		*is_pod = 1;
		return to->peer;
	}
	v = bpf_map_lookup_elem(&sm_ipcache, &k);
	if (!v)
		return SM_PEER_WORLD;
	if (!(v->flags & SM_POL_F_POD))
		return v->peer;
	if (v->flags & SM_POL_F_PROXY) {
		if (bpf_map_lookup_elem(&sm_l7_ports, &port)) {
			*proxy = 1;
			return v->peer;
		}
		return v->addr_peer;
	}
	*is_pod = 1;
	return v->peer;
}

/* How far up the cgroup tree a pod's cgroup may sit above a process: the
 * local runtime runs processes in the pod's cgroup; the kubelet runs them in
 * a container cgroup below it, and QoS classes put pods at different depths. */
#define SM_CGROUP_LEVELS 8

/* The entry of a map keyed by cgroup id for a cgroup or, failing that, its
 * nearest ancestor the agent knows: the calling task's cgroup (skb NULL: a
 * constant, so each caller compiles to one kind of helper) or the cgroup of
 * the socket a packet belongs to. */
static __always_inline void *cgroup_entry(void *map, struct __sk_buff *skb)
{
	__u64 cg = skb ? bpf_skb_cgroup_id(skb) : bpf_get_current_cgroup_id();
	void *v = bpf_map_lookup_elem(map, &cg);
	int level;

	if (v)
		return v;
	for (level = SM_CGROUP_LEVELS; level >= 1; level--) {
		cg = skb ? bpf_skb_ancestor_cgroup_id(skb, level) : bpf_get_current_ancestor_cgroup_id(level);
		if (!cg)
			continue; /* deeper than this cgroup */
		v = bpf_map_lookup_elem(map, &cg);
		if (v)
			return v;
	}
	return 0;
}

/* The policy subject of the calling task. NULL: not a pod. */
static __always_inline struct sm_pol_subject *current_subject(void)
{
	return cgroup_entry(&sm_pol_cgroups, 0);
}

static __always_inline int is_loopback(__u32 ip4)
{
	return (bpf_ntohl(ip4) >> 24) == 127;
}

/* How long an unconnected UDP socket's send lets the answers in (as conntrack would). */
#define SM_UDP_REPLY_NS (30ULL * 1000000000ULL)

/* A UDP send that answers what dst sent this socket within the last 30 s:
 * not a new conversation, so neither end's policy judges it again. */
static __always_inline int udp_answer(struct bpf_sock_addr *ctx, struct sm_pol_subject *src, __u32 dst, __u16 dport)
{
	struct sm_ticket_key k = {};
	struct bpf_sock *sk = ctx->sk;
	__u64 *seen;

	if (!sk || !src->ip4)
		return 0;
	k.saddr = dst;
	k.daddr = src->ip4;
	k.sport = bpf_ntohs(dport);
	k.dport = (__u16)sk->src_port;
	seen = bpf_map_lookup_elem(&sm_udp_peers, &k);
	return seen && bpf_ktime_get_ns() - *seen < SM_UDP_REPLY_NS;
}

/* connect() of a TCP or UDP socket after service translation, or an
 * unconnected UDP send (sendmsg4), to dst:dport (network order): 1 goes on,
 * 0 refuses (the kernel answers EPERM for a 0 without a retval). Egress of
 * the client's pod, then the ingress of a destination pod on this node, so
 * a same-node client fails at once rather than in SYN retransmits. */
static __always_inline int judge_connect(struct bpf_sock_addr *ctx, struct sm_pol_subject *src, __u32 dst, __u16 dport)
{
	struct sm_pol_subject *to;
	struct sm_sock_pol *sp;
	__u8 proto = ctx->protocol;
	__u32 peer, port;
	int is_pod, proxy;

	if (!src || is_loopback(dst) || (src->ip4 && src->ip4 == dst))
		return 1;
	if (proto == IPPROTO_UDP && udp_answer(ctx, src, dst, dport))
		return 1;
	to = bpf_map_lookup_elem(&sm_pol_pods, &dst);
	/* the destination's class matters to an egress-isolated pod, and to every
	 * pod on an L7 listener port; otherwise the ipcache is not asked */
	port = bpf_ntohs(dport);
	if (!(src->flags & SM_POL_F_EGRESS_ISOLATED) && (to || !bpf_map_lookup_elem(&sm_l7_ports, &port)))
		goto ingress;
	peer = dialled_peer(to, dst, port, &is_pod, &proxy);
	if (proxy) {
		if (!l7_allowed(src, proto, dport)) {
			count_add(SM_CTR_POL_EGRESS_DENIED, 1);
			emit_pol_event(SM_PE_DENY_CONNECT, SM_DIR_L7, bpf_get_socket_cookie(ctx), src->ip4, dst, 0, bpf_ntohs(dport),
				       src->subject, src->peer, proto);
			return 0;
		}
	} else if (src->flags & SM_POL_F_EGRESS_ISOLATED) {
		if (!pol_allowed(src->subject, peer, is_pod, SM_DIR_EGRESS, proto, dport)) {
			count_add(SM_CTR_POL_EGRESS_DENIED, 1);
			emit_pol_event(SM_PE_DENY_CONNECT, SM_DIR_EGRESS, bpf_get_socket_cookie(ctx), src->ip4, dst, 0,
				       bpf_ntohs(dport), src->subject, peer, proto);
			return 0;
		}
	}
ingress:
	if (to && (to->flags & SM_POL_F_INGRESS_ISOLATED) &&
	    !pol_allowed(to->subject, src->peer, src->flags & SM_POL_F_POD, SM_DIR_INGRESS, proto, dport)) {
		count_add(SM_CTR_POL_INGRESS_DENIED, 1);
		emit_pol_event(SM_PE_DENY_CONNECT, SM_DIR_INGRESS, bpf_get_socket_cookie(ctx), src->ip4, dst, 0,
			       bpf_ntohs(dport), to->subject, src->peer, proto);
		return 0;
	}
	/* the class this connect was judged with travels to the listener (ticket) */
	sp = bpf_sk_storage_get(&sm_sock_pol, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (sp) {
		sp->peer = src->peer;
		sp->flags = SM_SP_F_ACTIVE | SM_SP_F_JUDGED | (src->flags & SM_POL_F_POD ? SM_SP_F_POD : 0);
	}
	return 1;
}

/* sockops, the SYN is about to leave: the 4-tuple carries the client's class. */
static __always_inline void write_ticket(struct bpf_sock_ops *ops)
{
	struct sm_ticket_key k = {};
	struct sm_ticket t = {};
	struct bpf_sock *sk = ops->sk;
	struct sm_sock_pol *sp;

	if (!sk || ops->family != 2 /* AF_INET */)
		return;
	sp = bpf_sk_storage_get(&sm_sock_pol, sk, 0, 0);
	if (!sp || !(sp->flags & SM_SP_F_JUDGED))
		return;
	k.saddr = ops->local_ip4;
	k.daddr = ops->remote_ip4;
	k.sport = ops->local_port;
	k.dport = bpf_ntohl(ops->remote_port);
	t.peer = sp->peer;
	t.flags = sp->flags & SM_SP_F_POD;
	bpf_map_update_elem(&sm_tickets, &k, &t, BPF_ANY);
}

/* sockops, a pod's listener accepted: the ticket is spent; the socket keeps
 * the client's class for the cut pass. */
static __always_inline void take_ticket(struct bpf_sock_ops *ops)
{
	struct sm_ticket_key k = {};
	struct bpf_sock *sk = ops->sk;
	struct sm_sock_pol *sp;
	__u32 local = ops->local_ip4;
	struct sm_ticket *t;

	if (!sk || !ipv4_connection(ops) || !bpf_map_lookup_elem(&sm_pol_pods, &local))
		return;
	k.saddr = ops->remote_ip4;
	k.daddr = ops->local_ip4;
	k.sport = bpf_ntohl(ops->remote_port);
	k.dport = ops->local_port;
	t = bpf_map_lookup_elem(&sm_tickets, &k);
	sp = bpf_sk_storage_get(&sm_sock_pol, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (sp) {
		sp->peer = t ? t->peer : 0;
		sp->flags = SM_SP_F_PASSIVE | (t ? SM_SP_F_JUDGED | (t->flags & SM_SP_F_POD) : 0);
	}
	if (t)
		bpf_map_delete_elem(&sm_tickets, &k);
}

/* The service a translated socket dialled, or NULL. */
static __always_inline struct sm_sock_svc *dialled_service(struct bpf_sock *sk)
{
	struct sm_sock_svc *svc = bpf_sk_storage_get(&sm_sock_svc, sk, 0, 0);

	return svc && svc->vip4 ? svc : 0;
}

/* Established: into the sockhash when both ends are enrolled; an open record
 * when the mesh tracks the connection (an end enrolled, or translated). */
static __always_inline void establish_socket(struct bpf_sock_ops *ops)
{
	struct sm_sock_flow *flow = 0;
	struct sm_sock_svc *svc = 0;
	struct bpf_sock *sk = ops->sk;
	enum sm_flow_flags flags = 0;
	int local, remote;
	__u64 now;

	if (!ipv4_connection(ops))
		return;
	local = endpoint_enrolled(ops->local_ip4);
	remote = endpoint_enrolled(ops->remote_ip4);
	svc = sk ? dialled_service(sk) : 0;
	/* storage before the sockhash: sk_msg counts from the first redirect */
	if (sk && (local || remote || svc)) {
		flow = bpf_sk_storage_get(&sm_sock_flow, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!flow)
			count_add(SM_CTR_FLOW_EVENTS_LOST, 1);
	}
	if (local && remote) {
		if (insert_established(ops))
			flags |= SM_FLOW_F_SHORT_CIRCUITED;
	} else {
		count_add(SM_CTR_SOCK_SKIPPED, 1);
	}
	if (!flow)
		return;
	if (ops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		flags |= SM_FLOW_F_ACTIVE;
	if (svc)
		flags |= SM_FLOW_F_SERVICE;
	now = bpf_ktime_get_ns();
	flow->open_ns = now;
	flow->redir_sent = 0;
	/* the SYN counts in bytes_acked on the active side: start from here */
	flow->acked_base = ops->bytes_acked;
	flow->recv_base = ops->bytes_received;
	flow->flags = flags;
	flow->state = 0;
	if (bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG) != 0) {
		count_add(SM_CTR_FLOW_EVENTS_LOST, 1); /* no close record will follow */
		return;
	}
	emit_flow_event(ops, flow, svc, SM_FLOW_OPEN, now, 0, 0);
}

/* Whether bytes_acked counts our FIN, from the state the socket closes from:
 * FIN_WAIT2 means it was acknowledged; CLOSING and LAST_ACK end on its
 * acknowledgement, or on a reset or timeout with it outstanding. */
static __always_inline int fin_acked(struct bpf_sock_ops *ops, __u32 old_state)
{
	if (old_state == BPF_TCP_FIN_WAIT2)
		return 1;
	return (old_state == BPF_TCP_CLOSING || old_state == BPF_TCP_LAST_ACK) && ops->snd_una == ops->snd_nxt;
}

/* TCP_CLOSE: the close record, with payload bytes (SYN and FIN taken out). */
static __always_inline void close_flow(struct bpf_sock_ops *ops, struct sm_sock_flow *flow, __u32 old_state)
{
	__u64 sent = ops->bytes_acked - flow->acked_base;
	__u64 recv = ops->bytes_received - flow->recv_base;
	struct bpf_sock *sk = ops->sk;
	struct sm_sock_svc *svc = 0;

	if (flow->state & SM_FLOW_S_CLOSED)
		return;
	flow->state |= SM_FLOW_S_CLOSED;
	if (sent && fin_acked(ops, old_state))
		sent--;
	if (recv && (flow->state & SM_FLOW_S_FIN_IN))
		recv--;
	if (sk && (flow->flags & SM_FLOW_F_SERVICE))
		svc = dialled_service(sk);
	bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG);
	emit_flow_event(ops, flow, svc, SM_FLOW_CLOSE, bpf_ktime_get_ns(), sent, recv);
}

/* A tracked socket changed state (args[0] old, args[1] new). */
static __always_inline void follow_state(struct bpf_sock_ops *ops)
{
	struct bpf_sock *sk = ops->sk;
	struct sm_sock_flow *flow;

	if (!sk)
		return;
	flow = bpf_sk_storage_get(&sm_sock_flow, sk, 0, 0);
	if (!flow)
		return;
	switch (ops->args[1]) {
	case BPF_TCP_CLOSE_WAIT:
	case BPF_TCP_CLOSING:
		flow->state |= SM_FLOW_S_FIN_IN;
		break;
	case BPF_TCP_FIN_WAIT1:
		/* from here the peer's FIN can end the socket with no state saying
		 * it came (FIN_WAIT2 -> TIME_WAIT is TCP_CLOSE here): watch the
		 * flags of each segment that arrives until the socket closes */
		bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG);
		break;
	case BPF_TCP_CLOSE:
		close_flow(ops, flow, ops->args[0]);
		break;
	}
}

#define SM_TCP_FLAG_FIN 0x01

/* A segment arrived on a socket that sent its FIN (see follow_state). */
static __always_inline void note_fin(struct bpf_sock_ops *ops)
{
	struct bpf_sock *sk = ops->sk;
	struct sm_sock_flow *flow;

	if (!(ops->skb_tcp_flags & SM_TCP_FLAG_FIN) || !sk)
		return;
	flow = bpf_sk_storage_get(&sm_sock_flow, sk, 0, 0);
	if (flow)
		flow->state |= SM_FLOW_S_FIN_IN;
}

SEC("sockops")
int sm_sockops(struct bpf_sock_ops *ops)
{
	switch (ops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		write_ticket(ops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		take_ticket(ops);
		establish_socket(ops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		establish_socket(ops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		follow_state(ops);
		break;
	case BPF_SOCK_OPS_PARSE_HDR_OPT_CB:
		note_fin(ops);
		break;
	}
	return 1;
}

/* 0 once a send of this socket went to the stack: it stays there. */
static __always_inline int stream_may_redirect(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	struct sm_sock_state *st;

	if (!sk)
		return 1;
	st = bpf_sk_storage_get(&sm_sock_state, sk, 0, 0);
	return !(st && (st->flags & SM_SOCK_F_STACK));
}

static __always_inline void stay_on_stack(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	struct sm_sock_state *st;

	if (!sk)
		return;
	st = bpf_sk_storage_get(&sm_sock_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (st)
		st->flags |= SM_SOCK_F_STACK;
}

/* Counters, and the socket's own count for its close record. sk_msg runs
 * under the socket lock: a plain add is enough. */
static __always_inline void count_redirected(struct sk_msg_md *msg, __u32 size)
{
	struct bpf_sock *sk = msg->sk;
	struct sm_sock_flow *flow;

	count_add(SM_CTR_MSG_REDIRECTED, 1);
	count_add(SM_CTR_BYTES_REDIRECTED, size);
	if (!sk)
		return;
	flow = bpf_sk_storage_get(&sm_sock_flow, sk, 0, 0);
	if (flow)
		flow->redir_sent += size;
}

SEC("sk_msg")
int sm_sk_msg(struct sk_msg_md *msg)
{
	struct sm_sock_key peer = {};
	__u32 size = msg->size;

	if (stream_may_redirect(msg)) {
		peer_key_from_msg(&peer, msg);
		if (bpf_msg_redirect_hash(msg, &sm_sock_hash, &peer, BPF_F_INGRESS) == SK_PASS) {
			count_redirected(msg, size);
			return SK_PASS;
		}
		/* peer not (yet) in the map: the stack carries this and all later bytes */
		stay_on_stack(msg);
	}
	count_add(SM_CTR_MSG_PASSED, 1);
	count_add(SM_CTR_BYTES_PASSED, size);
	return SK_PASS;
}

/* Whether the connecting process belongs to an enrolled pod: its own cgroup,
 * or the nearest ancestor the agent knows. */
static __always_inline int client_enrolled(void)
{
	struct sm_cgroup *c = cgroup_entry(&sm_cgroups, 0);

	return c && (c->flags & SM_CG_F_ENROLLED);
}

/* SM_XLATE_*: the connect goes on untouched or translated, or is refused
 * (retval set). src: the caller's policy subject (NULL: not a pod). ip4/port
 * (network order): the address dialled, replaced by the backend's when
 * translated. */
#define SM_XLATE_REFUSED 0
#define SM_XLATE_NONE 1
#define SM_XLATE_DONE 2
static __always_inline int translate_service(struct bpf_sock_addr *ctx, struct sm_pol_subject *src, __u32 *ip4, __u32 *port)
{
	struct sm_svc_key key = {};
	struct sm_backend_key bkey = {};
	struct sm_sock_svc *mem;
	struct sm_backend *be;
	struct sm_svc *svc;

	key.vip4 = *ip4;
	key.port = bpf_ntohs((__u16)*port);
	svc = bpf_map_lookup_elem(&sm_services, &key);
	if (!svc)
		return SM_XLATE_NONE;
	/* a pod under policy is translated too: NetworkPolicy judges the backend it reaches (kube-proxy's DNAT would come too late) */
	if (!(svc->flags & SM_SVC_F_ANY_CLIENT) && !src && !client_enrolled()) {
		count_add(SM_CTR_SVC_NOT_ENROLLED, 1);
		return SM_XLATE_NONE;
	}
	if (svc->count == 0) {
		count_add(SM_CTR_SVC_NO_BACKEND, 1);
		bpf_set_retval(-ECONNREFUSED);
		return SM_XLATE_REFUSED;
	}
	bkey.svc_id = svc->id;
	bkey.gen = svc->gen;
	bkey.slot = bpf_get_prandom_u32() % svc->count;
	be = bpf_map_lookup_elem(&sm_backends, &bkey);
	if (!be) {
		count_add(SM_CTR_SVC_BACKEND_MISS, 1);
		bpf_set_retval(-ECONNREFUSED);
		return SM_XLATE_REFUSED;
	}
	mem = bpf_sk_storage_get(&sm_sock_svc, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (mem) {
		mem->vip4 = key.vip4;
		mem->port = key.port;
	}
	*ip4 = be->ip4;
	*port = bpf_htons(be->port);
	count_add(SM_CTR_SVC_TRANSLATED, 1);
	return SM_XLATE_DONE;
}

SEC("cgroup/connect4")
int sm_connect4(struct bpf_sock_addr *ctx)
{
	struct sm_pol_subject *src;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;
	src = current_subject();
	if (ctx->protocol == IPPROTO_TCP) {
		__u32 ip4 = ctx->user_ip4, port = ctx->user_port;
		int x = translate_service(ctx, src, &ip4, &port);

		if (x == SM_XLATE_REFUSED)
			return 0;
		if (x == SM_XLATE_DONE) {
			ctx->user_ip4 = ip4;
			ctx->user_port = port;
		}
	}
	return judge_connect(ctx, src, ctx->user_ip4, (__u16)ctx->user_port);
}

/* An unconnected UDP send (sendto with an address): judged like a connect. */
SEC("cgroup/sendmsg4")
int sm_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	return judge_connect(ctx, current_subject(), ctx->user_ip4, (__u16)ctx->user_port);
}

/* An AF_INET6 socket's connect, or its unconnected UDP send: to a v4-mapped
 * address it is IPv4 (the INET4 hooks never run for it), judged the same,
 * and a TCP connect to a service VIP is translated as connect4 does (a
 * dual-stack client, as Java's sockets are by default, dials ::ffff:VIP);
 * real IPv6 is refused to a pod that is egress-isolated (pods have IPv4
 * policy only), loopback aside. */
static __always_inline int judge_inet6(struct bpf_sock_addr *ctx, int translate)
{
	struct sm_pol_subject *src;
	__u32 ip6[4];

	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	src = current_subject();
	if (v4_mapped(ip6)) {
		__u32 port = ctx->user_port;

		if (translate && ctx->protocol == IPPROTO_TCP) {
			int x = translate_service(ctx, src, &ip6[3], &port);

			if (x == SM_XLATE_REFUSED)
				return 0;
			if (x == SM_XLATE_DONE) {
				ctx->user_ip6[3] = ip6[3];
				ctx->user_port = port;
			}
		}
		return judge_connect(ctx, src, ip6[3], (__u16)port);
	}
	if (ip6[0] == 0 && ip6[1] == 0 && ip6[2] == 0 && ip6[3] == bpf_htonl(1))
		return 1;
	if (src && (src->flags & SM_POL_F_EGRESS_ISOLATED)) {
		count_add(SM_CTR_POL_EGRESS_DENIED, 1);
		emit_pol_event(SM_PE_DENY_CONNECT, SM_DIR_EGRESS, bpf_get_socket_cookie(ctx), src->ip4, 0, 0,
			       bpf_ntohs((__u16)ctx->user_port), src->subject, SM_PEER_WORLD, ctx->protocol);
		return 0;
	}
	return 1;
}

SEC("cgroup/connect6")
int sm_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;
	return judge_inet6(ctx, 1);
}

/* sendto/sendmsg with an address on an AF_INET6 UDP socket (a dual-stack
 * socket reaching an IPv4 pod as ::ffff:a.b.c.d): EPERM as sendmsg4 gives. */
SEC("cgroup/sendmsg6")
int sm_sendmsg6(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	return judge_inet6(ctx, 0);
}

/* A translated socket reports the service it dialled, as if connected to it. */
static __always_inline void restore_service_peer(struct bpf_sock_addr *ctx)
{
	struct sm_sock_svc *mem = bpf_sk_storage_get(&sm_sock_svc, ctx->sk, 0, 0);

	if (mem && mem->vip4) {
		ctx->user_ip4 = mem->vip4;
		ctx->user_port = bpf_htons(mem->port);
	}
}

SEC("cgroup/getpeername4")
int sm_getpeername4(struct bpf_sock_addr *ctx)
{
	restore_service_peer(ctx);
	return 1;
}

/* The same for a dual-stack socket translated in connect6: ::ffff:VIP. */
SEC("cgroup/getpeername6")
int sm_getpeername6(struct bpf_sock_addr *ctx)
{
	struct sm_sock_svc *mem = bpf_sk_storage_get(&sm_sock_svc, ctx->sk, 0, 0);

	if (mem && mem->vip4) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = mem->vip4;
		ctx->user_port = bpf_htons(mem->port);
	}
	return 1;
}

#define SM_TCP_FLAG_SYN 0x02
#define SM_TCP_FLAG_ACK 0x10
#define SM_TCP_LISTEN 10
#define SM_ETH_P_IP 0x0800

/* The policy subject of the pod whose socket a packet belongs to. */
static __always_inline struct sm_pol_subject *skb_subject(struct __sk_buff *skb)
{
	return cgroup_entry(&sm_pol_cgroups, skb);
}

struct sm_ip4_head {
	__u8 ver_ihl;
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
};

#define SM_ETH_P_IPV6 0x86DD

/* Packets reaching a pod's socket: judged only where a new peer can start
 * talking (a bare SYN at a listener, a datagram at an unconnected socket).
 * Everything else belongs to a connection judged when it was opened. IPv6
 * other than loopback never reaches an ingress-isolated pod: its policy is
 * IPv4 (link-local IPv6 would go around it). */
SEC("cgroup_skb/ingress")
int sm_pol_ingress(struct __sk_buff *skb)
{
	struct sm_ticket_key tk = {}, back = {};
	struct sm_pol_subject *s;
	struct sm_ip4_head ip;
	struct sm_ticket *t;
	struct bpf_sock *sk;
	__u64 *seen;
	__u16 ports[2];
	__u8 tcp_flags;
	__u32 peer;
	int is_pod, off;

	if (skb->protocol != bpf_htons(SM_ETH_P_IP)) {
		__u32 src6[4];

		if (skb->protocol != bpf_htons(SM_ETH_P_IPV6))
			return 1;
		s = skb_subject(skb);
		if (!s || !(s->flags & SM_POL_F_INGRESS_ISOLATED))
			return 1;
		if (bpf_skb_load_bytes(skb, 8, src6, sizeof(src6)))
			return 1;
		if (src6[0] == 0 && src6[1] == 0 && src6[2] == 0 && src6[3] == bpf_htonl(1))
			return 1;
		count_add(SM_CTR_POL_IPV6_DENIED, 1);
		return 0;
	}
	/* the cheap tests first: most packets belong to established connections */
	sk = skb->sk;
	if (sk)
		sk = bpf_sk_fullsock(sk);
	if (!sk || (sk->protocol == IPPROTO_TCP && sk->state != SM_TCP_LISTEN) || (sk->protocol == IPPROTO_UDP && sk->state == 1))
		return 1;
	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
		return 1;
	if (is_loopback(ip.saddr) || ip.saddr == ip.daddr || (ip.frag_off & bpf_htons(0x1fff)))
		return 1;
	off = (ip.ver_ihl & 0x0f) * 4;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return 1;
	s = skb_subject(skb);
	if (!s || !(s->flags & SM_POL_F_INGRESS_ISOLATED))
		return 1;
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return 1;
	tk.saddr = ip.saddr;
	tk.daddr = ip.daddr;
	tk.sport = bpf_ntohs(ports[0]);
	tk.dport = bpf_ntohs(ports[1]);
	if (ip.protocol == IPPROTO_TCP) {
		if (sk->state != SM_TCP_LISTEN)
			return 1;
		if (bpf_skb_load_bytes(skb, off + 13, &tcp_flags, 1))
			return 1;
		if ((tcp_flags & (SM_TCP_FLAG_SYN | SM_TCP_FLAG_ACK)) != SM_TCP_FLAG_SYN)
			return 1;
	} else {
		if (sk->state == 1 /* connected UDP socket: only its peer reaches it */)
			return 1;
		/* an answer to what this socket sent (its pod's egress allowed that) */
		back.saddr = ip.daddr;
		back.daddr = ip.saddr;
		back.sport = tk.dport;
		back.dport = tk.sport;
		seen = bpf_map_lookup_elem(&sm_udp_peers, &back);
		if (seen && bpf_ktime_get_ns() - *seen < SM_UDP_REPLY_NS)
			return 1;
	}
	t = bpf_map_lookup_elem(&sm_tickets, &tk);
	if (t) {
		count_add(SM_CTR_POL_TICKET_HIT, 1);
		peer = t->peer;
		is_pod = t->flags & SM_SP_F_POD;
	} else {
		if (bpf_map_lookup_elem(&sm_pol_pods, &ip.saddr))
			count_add(SM_CTR_POL_NO_TICKET, 1);
		peer = source_peer(ip.saddr, &is_pod);
	}
	if (pol_allowed(s->subject, peer, is_pod, SM_DIR_INGRESS, ip.protocol, ports[1]))
		return 1;
	count_add(ip.protocol == IPPROTO_TCP ? SM_CTR_POL_SYN_DENIED : SM_CTR_POL_UDP_DENIED, 1);
	emit_pol_event(ip.protocol == IPPROTO_TCP ? SM_PE_DENY_SYN : SM_PE_DENY_UDP, SM_DIR_INGRESS, 0, ip.saddr, ip.daddr,
		       bpf_ntohs(ports[0]), bpf_ntohs(ports[1]), s->subject, peer, ip.protocol);
	return 0;
}

#define SM_SOCK_RAW 3

/* A packet with another source address than its pod's, dropped: one SPOOF
 * record naming the pod that sent it (sender) and the address it claimed.
 * Never folded: the drops are what the spoofing detector counts. */
static __always_inline void report_spoof(struct __sk_buff *skb, struct sm_ip4_head *ip, int l3_off, __u32 claimed,
					 __u32 sender, __u32 subject, __u32 peer)
{
	struct sm_pol_event *e;
	__u16 ports[2] = {};

	if (ip && (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP))
		bpf_skb_load_bytes(skb, l3_off + (ip->ver_ihl & 0x0f) * 4, ports, sizeof(ports));
	e = bpf_ringbuf_reserve(&sm_pol_events, sizeof(*e), 0);
	if (!e) {
		count_add(SM_CTR_POL_EVENTS_LOST, 1);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->cookie = 0;
	e->src_ip4 = claimed;
	e->dst_ip4 = ip ? ip->daddr : 0;
	e->src_port = bpf_ntohs(ports[0]);
	e->dst_port = bpf_ntohs(ports[1]);
	e->subject = subject;
	e->peer = peer;
	e->proto = ip ? ip->protocol : 0;
	e->dir = SM_DIR_EGRESS;
	e->kind = SM_PE_SPOOF;
	e->sender_ip4 = sender;
	e->suppressed = 0;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
}

/* Packets leaving a pod's sockets. A raw socket's forged source address is
 * dropped. For UDP it never drops (sends were judged at connect or sendmsg);
 * it records what the receiving side needs: the sender's class for a local
 * ingress-isolated pod (a ticket, as sockops writes for TCP), and the
 * conversation, so answers come back to an unconnected socket. */
SEC("cgroup_skb/egress")
int sm_pol_egress(struct __sk_buff *skb)
{
	struct sm_ticket_key tk = {};
	struct sm_ticket t = {};
	struct sm_pol_subject *s, *to;
	struct sm_ip4_head ip;
	struct bpf_sock *sk;
	__u16 ports[2];
	__u64 now;

	if (skb->protocol != bpf_htons(SM_ETH_P_IP))
		return 1;
	/* stream sockets (nearly every packet): nothing to record, and they cannot choose their source */
	sk = skb->sk;
	if (sk)
		sk = bpf_sk_fullsock(sk);
	if (!sk || (sk->type != SM_SOCK_RAW && sk->protocol != IPPROTO_UDP))
		return 1;
	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
		return 1;
	s = skb_subject(skb);
	if (!s)
		return 1;
	/* a pod's raw socket sending as another address: only raw sockets can choose
	 * their source; AF_PACKET frames never pass this hook (the veth guard sees them) */
	if (sk->type == SM_SOCK_RAW && s->ip4 && ip.saddr != s->ip4) {
		count_add(SM_CTR_POL_SPOOF_DROPPED, 1);
		report_spoof(skb, &ip, 0, ip.saddr, s->ip4, s->subject, s->peer);
		return 0;
	}
	if (ip.protocol != IPPROTO_UDP || (ip.frag_off & bpf_htons(0x1fff)))
		return 1;
	if (is_loopback(ip.daddr) || ip.saddr == ip.daddr)
		return 1;
	if (bpf_skb_load_bytes(skb, (ip.ver_ihl & 0x0f) * 4, ports, sizeof(ports)))
		return 1;
	tk.saddr = ip.saddr;
	tk.daddr = ip.daddr;
	tk.sport = bpf_ntohs(ports[0]);
	tk.dport = bpf_ntohs(ports[1]);
	/* a forged source address (a raw socket) opens no door for answers */
	if (ip.saddr == s->ip4) {
		now = bpf_ktime_get_ns();
		bpf_map_update_elem(&sm_udp_peers, &tk, &now, BPF_ANY);
	}
	to = bpf_map_lookup_elem(&sm_pol_pods, &ip.daddr);
	if (to && (to->flags & SM_POL_F_INGRESS_ISOLATED)) {
		t.peer = s->peer;
		t.flags = s->flags & SM_POL_F_POD ? SM_SP_F_POD : 0;
		bpf_map_update_elem(&sm_tickets, &tk, &t, BPF_ANY);
	}
	return 1;
}

#define SM_TCP_TIME_WAIT 6
#define SM_TCP_NEW_SYN_RECV 12

/* The cut pass, run by the agent in each pod's network namespace after a
 * policy change: every established pod socket is judged again with the
 * current maps, and destroyed when its connection is no longer allowed. The
 * iterator holds the socket's lock, which bpf_sock_destroy needs. */
SEC("iter/tcp")
int sm_pol_cut(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct sm_pol_subject *me, *from;
	struct sm_sock_pol *sp;
	struct tcp_sock *tp;
	__u32 local, remote, peer, subject;
	__u16 port_be;
	__u8 dir;
	int is_pod, proxy;

	if (!skc)
		return 0;
	if (skc->skc_state == SM_TCP_LISTEN || skc->skc_state == SM_TCP_TIME_WAIT || skc->skc_state == SM_TCP_NEW_SYN_RECV)
		return 0;
	if (skc->skc_family == 2 /* AF_INET */) {
		local = skc->skc_rcv_saddr;
		remote = skc->skc_daddr;
	} else if (skc->skc_family == 10 /* AF_INET6: an IPv4 connection when both ends are v4-mapped */) {
		__u32 l6[4], r6[4];

		bpf_probe_read_kernel(l6, sizeof(l6), &skc->skc_v6_rcv_saddr);
		bpf_probe_read_kernel(r6, sizeof(r6), &skc->skc_v6_daddr);
		if (!v4_mapped(l6) || !v4_mapped(r6))
			return 0;
		local = l6[3];
		remote = r6[3];
	} else {
		return 0;
	}
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sp = bpf_sk_storage_get(&sm_sock_pol, (struct sock *)tp, 0, 0);
	if (!sp)
		return 0;
	me = bpf_map_lookup_elem(&sm_pol_pods, &local);
	if (!me)
		return 0;
	if (sp->flags & SM_SP_F_ACTIVE) {
		if (is_loopback(remote) || remote == local)
			return 0;
		port_be = skc->skc_dport;
		peer = dialled_peer(bpf_map_lookup_elem(&sm_pol_pods, &remote), remote, bpf_ntohs(port_be), &is_pod, &proxy);
		if (proxy) {
			if (l7_allowed(me, IPPROTO_TCP, port_be))
				return 0;
			dir = SM_DIR_L7;
			peer = me->peer;
			goto destroy;
		}
		if (!(me->flags & SM_POL_F_EGRESS_ISOLATED))
			return 0;
		dir = SM_DIR_EGRESS;
	} else {
		if (!(me->flags & SM_POL_F_INGRESS_ISOLATED) || is_loopback(remote) || remote == local)
			return 0;
		from = (sp->flags & SM_SP_F_JUDGED) ? bpf_map_lookup_elem(&sm_pol_pods, &remote) : 0;
		if (from) {
			/* the kernel saw this pod connect: its class now (a policy change may have given it a new one) */
			peer = from->peer;
			is_pod = 1;
		} else if (sp->flags & SM_SP_F_JUDGED) {
			peer = sp->peer; /* the node proxy, or a pod gone since */
			is_pod = sp->flags & SM_SP_F_POD;
		} else {
			peer = source_peer(remote, &is_pod);
		}
		dir = SM_DIR_INGRESS;
		port_be = bpf_htons(skc->skc_num);
	}
	if (pol_allowed(me->subject, peer, is_pod, dir, IPPROTO_TCP, port_be))
		return 0;
destroy:
	subject = me->subject;
	if (bpf_sock_destroy(skc))
		return 0;
	count_add(SM_CTR_POL_CUT, 1);
	emit_pol_event(SM_PE_CUT, dir, bpf_get_socket_cookie(skc), dir == SM_DIR_INGRESS ? remote : local,
		       dir == SM_DIR_INGRESS ? local : remote, dir == SM_DIR_INGRESS ? bpf_ntohs(skc->skc_dport) : skc->skc_num,
		       bpf_ntohs(port_be), subject, peer, IPPROTO_TCP);
	return 0;
}

#define SM_TC_ACT_OK 0
#define SM_TC_ACT_SHOT 2
#define SM_ETH_P_ARP 0x0806

/* The guard on a pod's host-side veth (tc ingress: frames leaving the pod).
 * Whatever made the frame (a raw socket, AF_PACKET, a process outside the
 * pod's cgroup), IPv4 must carry the pod's own address, and ARP must claim
 * it, or the frame is dropped and reported. IPv6 passes: it never reaches an
 * isolated pod, and its neighbour discovery is needed. */
SEC("tc")
int sm_pol_guard(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
	struct sm_port *port = bpf_map_lookup_elem(&sm_ports, &ifindex);
	struct sm_ip4_head ip;
	__u32 claimed;

	if (!port)
		return SM_TC_ACT_OK;
	if (skb->protocol == bpf_htons(SM_ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, 14, &ip, sizeof(ip)))
			return SM_TC_ACT_SHOT;
		if (ip.saddr == port->ip4)
			return SM_TC_ACT_OK;
		claimed = ip.saddr;
	} else if (skb->protocol == bpf_htons(SM_ETH_P_ARP)) {
		/* Ethernet/IPv4 ARP: the sender's protocol address at 14 + 14 */
		if (bpf_skb_load_bytes(skb, 28, &claimed, sizeof(claimed)))
			return SM_TC_ACT_SHOT;
		if (claimed == port->ip4 || claimed == 0 /* an ARP probe */)
			return SM_TC_ACT_OK;
	} else {
		return SM_TC_ACT_OK;
	}
	count_add(SM_CTR_POL_GUARD_DROPPED, 1);
	report_spoof(skb, skb->protocol == bpf_htons(SM_ETH_P_IP) ? &ip : 0, 14, claimed, port->ip4, 0, 0);
	return SM_TC_ACT_SHOT;
}

/* The cut pass for UDP: a pod's connected UDP socket (its connect was
 * judged once, its sends are not) whose destination the pod's egress no
 * longer allows is destroyed: its next send or receive fails. Unconnected
 * sockets need nothing: every send is judged at sendmsg4, every datagram
 * to an isolated pod at its socket. */
SEC("iter/udp")
int sm_pol_cut_udp(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	struct sm_pol_subject *me;
	struct sm_sock_pol *sp;
	__u32 local, remote, peer;
	__u16 port_be;
	int is_pod, proxy;

	if (!sk)
		return 0;
	if (sk->__sk_common.skc_family != 2 /* AF_INET */ || sk->__sk_common.skc_state != 1 /* connected */)
		return 0;
	sp = bpf_sk_storage_get(&sm_sock_pol, sk, 0, 0);
	if (!sp || !(sp->flags & SM_SP_F_ACTIVE))
		return 0;
	local = sk->__sk_common.skc_rcv_saddr;
	remote = sk->__sk_common.skc_daddr;
	port_be = sk->__sk_common.skc_dport;
	me = bpf_map_lookup_elem(&sm_pol_pods, &local);
	if (!me || !(me->flags & SM_POL_F_EGRESS_ISOLATED) || is_loopback(remote) || remote == local)
		return 0;
	peer = dialled_peer(bpf_map_lookup_elem(&sm_pol_pods, &remote), remote, bpf_ntohs(port_be), &is_pod, &proxy);
	if (pol_allowed(me->subject, peer, is_pod, SM_DIR_EGRESS, IPPROTO_UDP, port_be))
		return 0;
	if (bpf_sock_destroy((struct sock_common *)sk))
		return 0;
	count_add(SM_CTR_POL_CUT, 1);
	emit_pol_event(SM_PE_CUT, SM_DIR_EGRESS, bpf_get_socket_cookie(sk), local, remote, sk->__sk_common.skc_num,
		       bpf_ntohs(port_be), me->subject, peer, IPPROTO_UDP);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
