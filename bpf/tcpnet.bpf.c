// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tcpnet: the network layer, the wire time of a target's TCP traffic.
 *
 * Metrics:
 *  1 inbound / 2 outbound: one-way time of each turn of a conversation, from the
 *    sender's send (tcp:tcp_sendmsg_locked, before the data is pushed) to the first
 *    data of it becoming ready on the receiver's socket (sock:sk_data_ready). The end
 *    of a send (sock:sock_send_length) would be too late: over a veth pair the
 *    receiver often has the data before the sender's send() returns. tcp:tcp_probe
 *    would miss data that arrives with the handshake's last ACK (a ClientHello), and
 *    the turn would then run on to the next one. It contains everything between the two
 *    sockets: queueing, qdiscs (netem), netfilter (NFQUEUE delays), the wire, and
 *    retransmission waits. A turn is timed from its first send, once: segments of
 *    the same flight that follow are not counted again. Inbound when the target
 *    receives, outbound when it sends (traffic between two targets counts for both).
 *  3 connect: a connect() from SYN_SENT to ESTABLISHED (sock:inet_sock_set_state),
 *    for the target on either end.
 *  4 retransmit: one event (value 0) per retransmitted segment of a target's socket
 *    (tcp:tcp_retransmit_skb); only its count means anything.
 *  6 to dependencies / 7 from dependencies / 8 connect to dependencies: the same, on a
 *    connection the target opened itself (its end is not on a port it listens on,
 *    `listening`): the time of its calls to other services, which sits inside its own
 *    handling of a request (chaoslab/analysis/attribution.py nests it so).
 * The layer as a whole is inbound + outbound + connect (chaoslab/probes/network.py).
 * The smoothed RTT is not used: on a request/response connection it mostly measures
 * the peer's delayed ACKs, not the network.
 *
 * Whose traffic: a socket belongs to the target that owns its local IPv4 address
 * (`addrs`: each target's addresses on the links the run created), whatever process
 * holds it, because the receive side runs in softirq context. A target that shares the
 * host's network namespace (an attached process) owns no address: its sockets are told by
 * its listening ports (`ports`). A dual-stack
 * listener (Go's default) accepts IPv4 clients on AF_INET6 sockets, whose addresses
 * are IPv4-mapped (::ffff:a.b.c.d): those count as their IPv4 address. Control traffic
 * (health checks from the reserved source-port block, admin ports) and the faults' own
 * round-trip checks (the next block, which faults do act on) are left out; all filled in by
 * chaoslab/probes/network.py from chaoslab/targets/health.py.
 *
 * Every send and every data-ready of the machine's TCP sockets runs these programs, almost
 * all of them another process's traffic. Bit arrays answer first, with inline array loads:
 * whether an address may be a target's (`addr_bits`, a bit per hash of the address), whether
 * a port is a host-namespace target's (`host_port_bits`) or a control port
 * (`control_port_bits`). A hash lookup follows only where a bit is set.
 *
 * Attach: the tracepoints above. The send and the receive are seen the best way the
 * running kernel offers: the raw tracepoints tcp_sendmsg_locked (Linux 6.13 on; 6.12 lacks
 * it) and sk_data_ready (6.3 on); else fentry on tcp_sendmsg_locked and
 * sock_def_readable (BPF trampolines, where the kernel allows them); else kprobes on the
 * same functions (distribution kernels have kprobes). Socket addresses are read with CO-RE.
 */
#include "chaoslab.bpf.h"
#include <asm/ptrace.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

struct in6_addr___cl {
	__u8 s6_addr[16];
};

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr___cl skc_v6_daddr;
	struct in6_addr___cl skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

#define AF_INET 2
#define AF_INET6 10
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7

enum {
	M_INBOUND = 1,
	M_OUTBOUND = 2,
	M_CONNECT = 3,
	M_RETRANSMIT = 4,
	M_FROM_TARGET = 5,
	M_DEP_OUT = 6, /* on a connection the target opened itself: a call to one of its dependencies */
	M_DEP_IN = 7,
	M_DEP_CONNECT = 8,
};

struct set_state_ctx {
	__u64 common;
	const void *skaddr;
	__s32 oldstate;
	__s32 newstate;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 protocol;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
};

struct retransmit_ctx {
	__u64 common;
	const void *skbaddr;
	const void *skaddr;
	__s32 state;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);   /* IPv4 address, network order */
	__type(value, __u32); /* target index */
} addrs SEC(".maps");

/* A bit per port (1024 words of 64): a control port (admin), not the target's traffic. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} control_port_bits SEC(".maps");

/* A bit per port: one a target in the host's network namespace listens on (`ports`). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} host_port_bits SEC(".maps");

/* A bit per hash of an IPv4 address (ADDR_HASH): set for every address in `addrs`. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} addr_bits SEC(".maps");

/* chaoslab/probes/network.py addr_hash computes the same */
#define ADDR_HASH(ip) (((ip) ^ ((ip) >> 16)) & 0xffff)

static __always_inline int bit_set(void *bits, __u32 n)
{
	__u32 word = (n >> 6) & 1023;
	__u64 *w = bpf_map_lookup_elem(bits, &word);

	return w && (*w >> (n & 63)) & 1;
}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);   /* port a target in the host's network namespace listens on */
	__type(value, __u32); /* target index */
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);   /* target index << 16 | a port it listens on */
	__type(value, __u32); /* 1 */
} listening SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	/* [0] first port of the health checks' source block, [1] the mask of a block, [2] first
	 * port of the faults' own checks (round trips that cross a fault on purpose) */
	__type(value, __u32);
} control_block SEC(".maps");

struct flow {
	__u32 src; /* IPv4, network order */
	__u32 dst;
	__u16 sport; /* host order */
	__u16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct flow); /* as the sender sees it */
	__type(value, __u64);     /* first send of the turn not yet received, ns */
} pending SEC(".maps");

struct connecting {
	__u64 start;
	struct flow flow;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* struct sock * */
	__type(value, struct connecting);
} connects SEC(".maps");

static __always_inline int control(__u16 sport, __u16 dport)
{
	__u32 s = sport, d = dport, zero = 0, one = 1, two = 2;
	__u32 *first = bpf_map_lookup_elem(&control_block, &zero);
	__u32 *mask = bpf_map_lookup_elem(&control_block, &one);
	__u32 *check = bpf_map_lookup_elem(&control_block, &two);

	if (first && mask && *mask && ((s & *mask) == *first || (d & *mask) == *first))
		return 1;
	if (check && mask && *check && ((s & *mask) == *check || (d & *mask) == *check))
		return 1;
	return bit_set(&control_port_bits, s) || bit_set(&control_port_bits, d);
}

/* The IPv4 address of an address of `family` (0 when it is IPv6 and not IPv4-mapped). */
static __always_inline __u32 ipv4_of(__u16 family, const __u8 *v4, const __u8 *v6)
{
	__u64 head;
	__u32 mid, ip = 0;

	if (family == AF_INET) {
		__builtin_memcpy(&ip, v4, 4);
		return ip;
	}
	if (family != AF_INET6)
		return 0;
	__builtin_memcpy(&head, v6, 8);
	__builtin_memcpy(&mid, v6 + 8, 4);
	if (head != 0 || mid != 0xffff0000 /* bytes 00 00 ff ff */)
		return 0;
	__builtin_memcpy(&ip, v6 + 12, 4);
	return ip;
}

/* The target an end of a connection belongs to: by its address, or, for a target that
 * shares the host's network namespace (an attached process), by its own listening port. */
static __always_inline __u32 *owner(__u32 ip, __u16 port)
{
	__u32 *t = ip && bit_set(&addr_bits, ADDR_HASH(ip)) ? bpf_map_lookup_elem(&addrs, &ip) : 0;
	__u32 p = port;

	if (t || !bit_set(&host_port_bits, p))
		return t;
	return bpf_map_lookup_elem(&ports, &p);
}

static __always_inline __u32 *socket_owner(__u16 family, const __u8 *v4, const __u8 *v6, __u16 port)
{
	return owner(ipv4_of(family, v4, v6), port);
}

/* Whether `port` is one the target listens on (it serves there); else the target's end of
 * the connection is a client's: it called one of its dependencies. */
static __always_inline int serves(__u32 target, __u16 port)
{
	__u32 key = target << 16 | port;

	return bpf_map_lookup_elem(&listening, &key) != 0;
}

/* The metric of a target's end: on a connection it opened (to a dependency), its own kind. */
static __always_inline __u32 end_metric(__u32 target, __u16 port, __u32 metric)
{
	if (serves(target, port))
		return metric;
	return metric == M_OUTBOUND ? M_DEP_OUT : metric == M_INBOUND ? M_DEP_IN : M_DEP_CONNECT;
}

/* Record a duration for whichever ends of `f` are targets. A turn between two targets
 * belongs to its sender; the receiver keeps it as `from a target`, outside its layer's
 * time, so a delay on the link between them is counted once and not at both ends. */
static __always_inline void record_owned(struct flow *f, __u32 *src, __u32 *dst, __u32 src_metric,
					 __u32 dst_metric, __u64 ns)
{
	if (src)
		count_run(*src);
	else if (dst)
		count_run(*dst);
	if (src)
		hist_record_metric(*src, end_metric(*src, f->sport, src_metric), ns);
	if (dst)
		hist_record_metric(*dst, src ? M_FROM_TARGET : end_metric(*dst, f->dport, dst_metric), ns);
}

static __always_inline void record_ends(struct flow *f, __u32 src_metric, __u32 dst_metric, __u64 ns)
{
	record_owned(f, owner(f->src, f->sport), owner(f->dst, f->dport), src_metric, dst_metric, ns);
}

/* The flow of a socket as (local, remote); 0 when it is neither IPv4 nor v4-mapped. */
static __always_inline int sock_flow(struct sock *sk, struct flow *f)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	struct in6_addr___cl v6;

	if (family == AF_INET) {
		f->src = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		f->dst = BPF_CORE_READ(sk, __sk_common.skc_daddr);
	} else if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&v6, sk, __sk_common.skc_v6_rcv_saddr);
		f->src = ipv4_of(family, 0, v6.s6_addr);
		BPF_CORE_READ_INTO(&v6, sk, __sk_common.skc_v6_daddr);
		f->dst = ipv4_of(family, 0, v6.s6_addr);
	} else {
		return 0;
	}
	f->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	f->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	return f->src && f->dst;
}

/* The sender's send: a turn is timed from its first send. */
static __always_inline int on_send(struct sock *sk)
{
	struct flow f = {};
	__u32 *src, *dst;
	__u64 now;

	if (!sock_flow(sk, &f))
		return 0;
	src = owner(f.src, f.sport);
	dst = owner(f.dst, f.dport);
	/* each pointer tested on its own: the verifier refuses an OR of two maybe-NULL pointers */
	if (src)
		count_run(*src);
	else if (dst)
		count_run(*dst);
	else
		return 0;
	if (control(f.sport, f.dport))
		return 0;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&pending, &f, &now, BPF_NOEXIST); /* a turn is timed from its first send */
	return 0;
}

/* Data became ready at the receiver's socket: the turn it belongs to ends. */
static __always_inline int on_receive(struct sock *sk)
{
	struct flow local = {}, f;
	__u32 *src, *dst;
	__u64 *since;

	if (!sock_flow(sk, &local))
		return 0;
	/* the receiver's local end is the sender's destination */
	f.src = local.dst;
	f.dst = local.src;
	f.sport = local.dport;
	f.dport = local.sport;
	src = owner(f.src, f.sport);
	dst = owner(f.dst, f.dport);
	barrier_var(src); /* tested one at a time: the verifier refuses an OR of two maybe-NULL pointers */
	if (!src) {
		barrier_var(dst);
		if (!dst)
			return 0; /* no target's: never pending */
	}
	since = bpf_map_lookup_elem(&pending, &f);
	if (!since)
		return 0;
	record_owned(&f, src, dst, M_OUTBOUND, M_INBOUND, bpf_ktime_get_ns() - *since);
	bpf_map_delete_elem(&pending, &f);
	return 0;
}

/* Each hook has three ways in, best first; user space loads the first that attaches on the
 * running kernel (chaoslab/probes/network.py) and leaves the others unloaded. */
SEC("raw_tp/tcp_sendmsg_locked")
int send_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return on_send((struct sock *)ctx->args[0]);
}

SEC("fentry/tcp_sendmsg_locked")
int BPF_PROG(send_fentry, struct sock *sk)
{
	return on_send(sk);
}

SEC("kprobe/tcp_sendmsg_locked")
int BPF_KPROBE(send_kprobe, struct sock *sk)
{
	return on_send(sk);
}

/* sk_data_ready's tracepoint fires in sock_def_readable, a TCP socket's data-ready callback
 * unless something replaced it (kTLS, sockmap): the fallbacks hook that function. */
SEC("raw_tp/sk_data_ready")
int receive_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return on_receive((struct sock *)ctx->args[0]);
}

SEC("fentry/sock_def_readable")
int BPF_PROG(receive_fentry, struct sock *sk)
{
	return on_receive(sk);
}

SEC("kprobe/sock_def_readable")
int BPF_KPROBE(receive_kprobe, struct sock *sk)
{
	return on_receive(sk);
}

SEC("tracepoint/sock/inet_sock_set_state")
int set_state(struct set_state_ctx *ctx)
{
	__u64 sk = (__u64)ctx->skaddr;
	struct connecting *c, fresh = {};
	__u8 s4[4], d4[4], s6[16], d6[16];

	struct flow back;

	if (ctx->protocol != 6 /* IPPROTO_TCP */)
		return 0;
	if (ctx->newstate == TCP_SYN_SENT || ctx->newstate == TCP_CLOSE) {
		bpf_probe_read_kernel(s4, 4, ctx->saddr);
		bpf_probe_read_kernel(d4, 4, ctx->daddr);
		bpf_probe_read_kernel(s6, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(d6, 16, ctx->daddr_v6);
		fresh.flow.src = ipv4_of(ctx->family, s4, s6);
		fresh.flow.dst = ipv4_of(ctx->family, d4, d6);
		fresh.flow.sport = ctx->sport;
		fresh.flow.dport = ctx->dport;
	}
	if (ctx->newstate == TCP_CLOSE) {
		/* a turn whose data was never read (e.g. sent as the peer closed) ends here, so
		 * a later connection on the same ports cannot inherit it */
		back.src = fresh.flow.dst;
		back.dst = fresh.flow.src;
		back.sport = fresh.flow.dport;
		back.dport = fresh.flow.sport;
		bpf_map_delete_elem(&pending, &fresh.flow);
		bpf_map_delete_elem(&pending, &back);
	}
	if (ctx->newstate == TCP_SYN_SENT) {
		if ((!owner(fresh.flow.src, fresh.flow.sport) && !owner(fresh.flow.dst, fresh.flow.dport)) ||
		    control(ctx->sport, ctx->dport))
			return 0;
		fresh.start = bpf_ktime_get_ns();
		bpf_map_update_elem(&connects, &sk, &fresh, BPF_ANY);
		return 0;
	}
	if (ctx->oldstate != TCP_SYN_SENT)
		return 0;
	c = bpf_map_lookup_elem(&connects, &sk);
	if (!c)
		return 0;
	if (ctx->newstate == TCP_ESTABLISHED)
		record_ends(&c->flow, M_CONNECT, M_CONNECT, bpf_ktime_get_ns() - c->start);
	bpf_map_delete_elem(&connects, &sk);
	return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int retransmit(struct retransmit_ctx *ctx)
{
	__u8 s4[4], s6[16];
	__u32 *target;

	if (control(ctx->sport, ctx->dport))
		return 0;
	bpf_probe_read_kernel(s4, 4, ctx->saddr);
	bpf_probe_read_kernel(s6, 16, ctx->saddr_v6);
	target = socket_owner(ctx->family, s4, s6, ctx->sport);
	if (target)
		hist_record_metric(*target, M_RETRANSMIT, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
