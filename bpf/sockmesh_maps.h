/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/* The datapath's maps, one line each: key -> value, who writes, why that size.
 * Included by sockmesh.bpf.c (and by the test object that must fail to load,
 * so it carries exactly these maps). */
#ifndef SOCKMESH_MAPS_H
#define SOCKMESH_MAPS_H

/* pod IPv4 (network order) -> sm_endpoint; agent writes; 64k pods per node is beyond any real node */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct sm_endpoint);
} sm_endpoints SEC(".maps");

/* sm_sock_key (own view) -> socket; sockops inserts, the kernel removes on close; 2 per local connection */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 131072);
	__type(key, struct sm_sock_key);
	__type(value, __u64);
} sm_sock_hash SEC(".maps");

/* socket -> sm_sock_state (socket local storage); sk_msg writes on a miss; freed with the socket, never evicted */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sm_sock_state);
} sm_sock_state SEC(".maps");

/* enum sm_counter -> count, per CPU; programs write, the agent sums */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SM_CTR_MAX);
	__type(key, enum sm_counter);
	__type(value, __u64);
} sm_counters SEC(".maps");

/* sm_svc_key -> sm_svc; agent writes; one per service port, 64k is far beyond a cluster's services */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sm_svc_key);
	__type(value, struct sm_svc);
} sm_services SEC(".maps");

/* sm_backend_key -> sm_backend; agent writes; backends of every service port, two generations during a change */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct sm_backend_key);
	__type(value, struct sm_backend);
} sm_backends SEC(".maps");

/* cgroup id -> sm_cgroup; agent writes; one per local pod, sized like sm_endpoints */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sm_cgroup);
} sm_cgroups SEC(".maps");

/* socket -> sm_sock_svc (socket local storage); connect4 writes when it translates, getpeername4 reads */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sm_sock_svc);
} sm_sock_svc SEC(".maps");

/* socket -> sm_sock_flow (socket local storage); sockops creates it for tracked connections, sk_msg adds redirected bytes; freed with the socket */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sm_sock_flow);
} sm_sock_flow SEC(".maps");

/* struct sm_flow_event records; sockops writes, the agent reads; 1 MiB is ~11900 records (80 + 8 header bytes): 119k connection events a second at the agent's 100 ms poll */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} sm_flow_events SEC(".maps");

/* cgroup id -> sm_pol_subject; agent writes; every local pod (enrolled or not) and the node proxy */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sm_pol_subject);
} sm_pol_cgroups SEC(".maps");

/* pod IPv4 (network order) -> sm_pol_subject; agent writes; local pods, for the destination's ingress at connect */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct sm_pol_subject);
} sm_pol_pods SEC(".maps");

/* sm_ipcache_key -> sm_ipcache_val; agent writes; a /32 per pod of the cluster, a prefix per ipBlock cidr/except, 0/0 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct sm_ipcache_key);
	__type(value, struct sm_ipcache_val);
} sm_ipcache SEC(".maps");

/* sm_policy_key -> sm_policy_val; agent writes; allow entries, memory used only as filled; two generations during a change */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct sm_policy_key);
	__type(value, struct sm_policy_val);
} sm_policy SEC(".maps");

/* sm_ticket_key -> sm_ticket; sockops writes at a TCP client's SYN (deleted when the server side is established), cgroup_skb/egress at each UDP send to an ingress-isolated local pod; LRU bounds leftovers */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sm_ticket_key);
	__type(value, struct sm_ticket);
} sm_tickets SEC(".maps");

/* node proxy listener port (host order) -> 1; agent writes; the ports of the proxy's address that are L7 services */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} sm_l7_ports SEC(".maps");

/* sm_ticket_key (a pod's UDP send, as sent) -> last send, ns; cgroup_skb/egress writes; answers to unconnected sockets pass for 30 s */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sm_ticket_key);
	__type(value, __u64);
} sm_udp_peers SEC(".maps");

/* socket -> sm_sock_pol (socket local storage); connect4 and sockops write; the cut pass reads */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sm_sock_pol);
} sm_sock_pol SEC(".maps");

/* struct sm_pol_event records; programs write, the agent reads; 256 KiB is ~4000 records, apart from flows so a scan cannot starve them */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} sm_pol_events SEC(".maps");

/* sm_pol_seen_key -> sm_pol_seen; programs write; one denial record per key and second, so a flood cannot fill the ring (LRU: the quiet keys go) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sm_pol_seen_key);
	__type(value, struct sm_pol_seen);
} sm_pol_seen SEC(".maps");

/* host-side veth ifindex -> sm_port; the agent writes when it attaches the guard; 4096 pods per node */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct sm_port);
} sm_ports SEC(".maps");

const struct sm_pol_event *sm_pol_event_btf __attribute__((unused));
const enum sm_peer_class *sm_peer_class_btf __attribute__((unused));

/* Not a map: the agent decodes struct sm_flow_event by this object's BTF, and
 * clang emits BTF only for types something outside a function names. This
 * pointer does (it lands in .bss, which no program uses). */
const struct sm_flow_event *sm_flow_event_btf __attribute__((unused));

#endif /* SOCKMESH_MAPS_H */
