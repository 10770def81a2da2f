// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * gofunc: duration of one Go function in a target, keyed by goroutine.
 *
 * Layers: tls (crypto/tls.(*Conn).serverHandshake), entropy
 * (crypto/internal/sysrand.Read, which covers Go's vDSO getrandom path and the
 * getrandom syscall), app (net/http.serverHandler.ServeHTTP) and gc (mark assist,
 * stop-the-world). One instance of this object is loaded per layer.
 *
 * Attach: `func_entry` as a uprobe on an instruction of the prologue the kernel emulates
 * (the stack check's jump: one trap, no single step), `func_ret`
 * as a uprobe on each of its RET instructions (found by disassembly). No uretprobe:
 * it rewrites the return address on the goroutine stack, which the Go runtime moves.
 * A RET is single-stepped out of line after its trap; where every caller of the function
 * runs a known function next on the same goroutine (net/http's handler call, followed by
 * finishRequest), `func_end` on that function's emulated entry ends the call instead, one
 * trap (chaoslab/probes/gofunc.py ENDS).
 * The attach cookie is the metric the duration is recorded under.
 *
 * Key: the goroutine (the g pointer, held in R14 by Go's amd64 register ABI, with the
 * process), not the thread, because a goroutine can move between threads inside the function.
 *
 * `span_begin`/`span_end` time a span that is one per process, from the entry of
 * one function to a RET of another (stop-the-world: runtime.stopTheWorldWithSema
 * to the return of runtime.startTheWorldWithSema); keyed by the process.
 *
 * `gstatus` is the Go scheduler layer: a uprobe on runtime.casgstatus(gp, oldval, newval),
 * which every change of a goroutine's state goes through but one (exitsyscall's fast path,
 * syscall to running, which never waits). A goroutine made runnable (woken, created,
 * preempted, back from a syscall without a P) is stamped; when it is switched to running
 * (runtime.execute), its wait for a P is recorded, under the state it came from. Arguments
 * in AX, BX, CX (Go's amd64 register ABI); keyed by process and g (g pointers of two Go
 * processes can be equal).
 *
 * Every program counts its hits in `hits` first thing, whatever it goes on to do: each hit
 * is a trap of a target's thread, the bulk of a uprobe's cost, and the kernel's run-time
 * statistics that would count them run only part of the time (chaoslab/probes/stats.py).
 */
#include <asm/ptrace.h>
#include "chaoslab.bpf.h"

struct start {
	__u64 ns;
	__u64 metric;
};

/* A goroutine of a process: g pointers are addresses in their own process's space. */
struct gkey {
	__u64 g;
	__u64 tgid;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct gkey);
	__type(value, struct start);
} starts SEC(".maps");

/* Goroutines made runnable, since when and from which state (the gstatus metric). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct gkey);
	__type(value, struct start);
} runnable SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32); /* tgid */
	__type(value, struct start);
} spans SEC(".maps");

/* Hits of each program (chaoslab/probes/cost.py HIT_PROGRAMS): per CPU, no atomic add. */
enum { H_ENTRY, H_RET, H_END, H_SPAN_BEGIN, H_SPAN_END, H_GSTATUS, H_PROGRAMS };
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, H_PROGRAMS);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void hit(__u32 program)
{
	percpu_inc(&hits, program);
}

SEC("uprobe")
int func_entry(struct pt_regs *ctx)
{
	struct gkey g = { ctx->r14, bpf_get_current_pid_tgid() >> 32 };
	struct start s = { bpf_ktime_get_ns(), bpf_get_attach_cookie(ctx) };

	hit(H_ENTRY);
	if (!current_target())
		return 0;
	bpf_map_update_elem(&starts, &g, &s, BPF_ANY);
	return 0;
}

static __always_inline int func_done(struct pt_regs *ctx)
{
	struct gkey g = { ctx->r14, bpf_get_current_pid_tgid() >> 32 };
	struct start *start = bpf_map_lookup_elem(&starts, &g);
	__u32 *target;

	if (!start)
		return 0;
	target = current_target();
	if (target)
		hist_record_metric(*target, (__u32)start->metric, bpf_ktime_get_ns() - start->ns);
	bpf_map_delete_elem(&starts, &g);
	return 0;
}

SEC("uprobe")
int func_ret(struct pt_regs *ctx)
{
	hit(H_RET);
	return func_done(ctx);
}

SEC("uprobe")
int func_end(struct pt_regs *ctx)
{
	hit(H_END);
	return func_done(ctx);
}

SEC("uprobe")
int span_begin(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct start s = { bpf_ktime_get_ns(), bpf_get_attach_cookie(ctx) };

	hit(H_SPAN_BEGIN);
	if (!target_of(tgid))
		return 0;
	remember(&spans, &tgid, &s, BPF_ANY);
	return 0;
}

SEC("uprobe")
int span_end(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct start *start;
	__u32 *target;

	hit(H_SPAN_END);
	start = bpf_map_lookup_elem(&spans, &tgid);
	target = target_of(tgid);
	if (!start || !target)
		return 0;
	hist_record_metric(*target, (__u32)start->metric, bpf_ktime_get_ns() - start->ns);
	bpf_map_delete_elem(&spans, &tgid);
	return 0;
}

/* runtime/runtime2.go: the states a goroutine comes from into _Grunnable, and the metrics */
enum { G_IDLE = 0, G_RUNNABLE = 1, G_RUNNING = 2, G_SYSCALL = 3, G_WAITING = 4, G_DEAD = 6 };
enum { W_WOKEN = 1, W_NEW = 2, W_PREEMPTED = 3, W_SYSCALL = 4 };

SEC("uprobe")
int gstatus(struct pt_regs *ctx)
{
	__u32 from = (__u32)ctx->rbx, to = (__u32)ctx->rcx, *target;
	struct gkey g = { ctx->rax, bpf_get_current_pid_tgid() >> 32 };
	struct start s, *since;

	hit(H_GSTATUS);
	if (to == G_RUNNABLE) {
		if (!current_target())
			return 0;
		s.ns = bpf_ktime_get_ns();
		s.metric = from == G_IDLE || from == G_DEAD ? W_NEW
			   : from == G_RUNNING		    ? W_PREEMPTED
			   : from == G_SYSCALL		    ? W_SYSCALL
							    : W_WOKEN;
		bpf_map_update_elem(&runnable, &g, &s, BPF_ANY);
		return 0;
	}
	if (from != G_RUNNABLE || to != G_RUNNING)
		return 0;
	since = bpf_map_lookup_elem(&runnable, &g);
	if (!since)
		return 0;
	target = current_target();
	if (target)
		hist_record_metric(*target, (__u32)since->metric, bpf_ktime_get_ns() - since->ns);
	bpf_map_delete_elem(&runnable, &g);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
