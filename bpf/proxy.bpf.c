// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * proxy: a proxy's request time on its downstream connections, from syscalls.
 *
 * A downstream connection is a socket the target got from accept4() or accept(). A request
 * starts when a read (recvfrom, read, readv) on it returns data while no request
 * is open on it, and ends at the next write (sendto, write, writev) on it: the
 * proxy's whole handling of the request, its upstream time included. Envoy uses
 * recvfrom/sendto for TCP; the others cover proxies that do not.
 *
 * Attach: syscall tracepoints; events of processes not in `targets` are dropped
 * after one map lookup.
 */
#include "chaoslab.bpf.h"

struct sys_enter_ctx {
	__u64 common;
	__s32 nr;
	__s32 pad;
	__u64 args[6];
};

struct sys_exit_ctx {
	__u64 common;
	__s32 nr;
	__s32 pad;
	__s64 ret;
};

struct conn_key {
	__u32 tgid;
	__u32 fd;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, __u64); /* 0: idle downstream connection, else request start ns */
} downstream SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);   /* pid_tgid of a thread inside a read */
	__type(value, __u32); /* its fd */
} reading SEC(".maps");

static __always_inline int accepted(struct sys_exit_ctx *ctx)
{
	struct conn_key key;
	__u64 idle = 0;

	if (ctx->ret < 0 || !current_target())
		return 0;
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	key.fd = (__u32)ctx->ret;
	bpf_map_update_elem(&downstream, &key, &idle, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int accept4_exit(struct sys_exit_ctx *ctx) { return accepted(ctx); }
/* plain accept(): glibc's accept() on x86-64 and a server that never asks for accept4's flags */
SEC("tracepoint/syscalls/sys_exit_accept")
int accept_exit(struct sys_exit_ctx *ctx) { return accepted(ctx); }

SEC("tracepoint/syscalls/sys_enter_close")
int close_enter(struct sys_enter_ctx *ctx)
{
	struct conn_key key;

	if (!current_target())
		return 0;
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	key.fd = (__u32)ctx->args[0];
	bpf_map_delete_elem(&downstream, &key);
	return 0;
}

static __always_inline int read_enter(struct sys_enter_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 fd = (__u32)ctx->args[0];

	if (!current_target())
		return 0;
	bpf_map_update_elem(&reading, &id, &fd, BPF_ANY);
	return 0;
}

static __always_inline int read_exit(struct sys_exit_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 *fd = bpf_map_lookup_elem(&reading, &id);
	struct conn_key key;
	__u64 *start;

	if (!fd)
		return 0;
	key.tgid = id >> 32;
	key.fd = *fd;
	bpf_map_delete_elem(&reading, &id);
	if (ctx->ret <= 0)
		return 0;
	start = bpf_map_lookup_elem(&downstream, &key);
	if (start && *start == 0)
		*start = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int write_enter(struct sys_enter_ctx *ctx)
{
	struct conn_key key;
	__u64 *start;
	__u32 *target = current_target();

	if (!target)
		return 0;
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	key.fd = (__u32)ctx->args[0];
	start = bpf_map_lookup_elem(&downstream, &key);
	if (!start || *start == 0)
		return 0;
	hist_record(*target, bpf_ktime_get_ns() - *start);
	*start = 0;
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int recvfrom_enter(struct sys_enter_ctx *ctx) { return read_enter(ctx); }
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int recvfrom_exit(struct sys_exit_ctx *ctx) { return read_exit(ctx); }
SEC("tracepoint/syscalls/sys_enter_read")
int read_enter_tp(struct sys_enter_ctx *ctx) { return read_enter(ctx); }
SEC("tracepoint/syscalls/sys_exit_read")
int read_exit_tp(struct sys_exit_ctx *ctx) { return read_exit(ctx); }
SEC("tracepoint/syscalls/sys_enter_readv")
int readv_enter(struct sys_enter_ctx *ctx) { return read_enter(ctx); }
SEC("tracepoint/syscalls/sys_exit_readv")
int readv_exit(struct sys_exit_ctx *ctx) { return read_exit(ctx); }
SEC("tracepoint/syscalls/sys_enter_sendto")
int sendto_enter(struct sys_enter_ctx *ctx) { return write_enter(ctx); }
SEC("tracepoint/syscalls/sys_enter_write")
int write_enter_tp(struct sys_enter_ctx *ctx) { return write_enter(ctx); }
SEC("tracepoint/syscalls/sys_enter_writev")
int writev_enter(struct sys_enter_ctx *ctx) { return write_enter(ctx); }

char LICENSE[] SEC("license") = "Dual BSD/GPL";
