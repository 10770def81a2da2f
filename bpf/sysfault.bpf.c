// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sysfault: pick the calls of named syscalls that a syscall fault acts on.
 *
 * Two places, chosen by user space per fault:
 * - enter: a uprobe on the function that issues the syscall (a Go target's
 *   syscall.write, ...): the signal arrives before the call is made, so a delay
 *   holds the call itself (strace's delay_enter);
 * - exit: fexit on the syscall's kernel function (sys_fexit<i>), or where that cannot
 *   attach, syscalls/sys_exit_<name>; for each named syscall only (no other syscall
 *   runs this program), for completed calls (not ones about to be restarted): the
 *   signal arrives as the call returns, where its result can be rewritten.
 * For a call of a process in `targets`, the selectors in `cfg` decide; a selected
 * call gets SIGURG sent to its own thread. chaoslab's injector, ptrace-attached to the target, takes that signal stop
 * (si_code SI_KERNEL tells it from Go's own preemption SIGURGs, sent with tgkill),
 * holds the thread for the delay or rewrites the return value to -errno, and
 * suppresses the signal. If the injector is gone, a stray SIGURG is harmless: Go
 * treats it as a spurious preemption request, and its default action is to ignore it.
 */
#include "chaoslab.bpf.h"

#define SIGURG 23

struct sys_exit_ctx {
	__u64 common;
	__s32 nr;
	__s32 pad;
	__s64 ret;
};

struct cfg {
	__u64 first;    /* act only on calls 1..first (0: no limit) */
	__u64 every;    /* act on every n-th call (1: each) */
	__u32 prob_ppm; /* then with this probability, parts per million */
	__u32 pad;
};

enum { STAT_CALLS, STAT_SELECTED, STAT_SEND_FAILED, STAT_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cfg);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void bump(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &which);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline int pick(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32, zero = 0, calls = STAT_CALLS;
	if (!target_of(tgid))
		return 0;
	struct cfg *c = bpf_map_lookup_elem(&config, &zero);
	__u64 *n = bpf_map_lookup_elem(&stats, &calls);
	if (!c || !n)
		return 0;
	__u64 nth = __sync_fetch_and_add(n, 1) + 1;
	if (c->first && nth > c->first)
		return 0;
	if (c->every > 1 && nth % c->every)
		return 0;
	if (c->prob_ppm < 1000000 && bpf_get_prandom_u32() % 1000000 >= c->prob_ppm)
		return 0;
	bump(bpf_send_signal_thread(SIGURG) ? STAT_SEND_FAILED : STAT_SELECTED);
	return 0;
}

SEC("tracepoint")
int sys_exit(struct sys_exit_ctx *ctx)
{
	if (ctx->ret <= -512 && ctx->ret >= -516) /* ERESTART*: the call is not over yet */
		return 0;
	return pick();
}

/* The same at the exit of the syscall's own kernel function (__x64_sys_<name>), through a
 * BPF trampoline: one program per named syscall (user space sets each one's function before
 * loading and leaves the unused ones unloaded). Only that syscall's calls run it; a syscall
 * tracepoint, once any is enabled, sends every syscall of every process down the kernel's
 * slow path (the syscall-work flag is set on all tasks), which costs the calls a fault does
 * not act on too. ctx[0] is the function's one argument (struct pt_regs *), ctx[1] its result. */
#define SYS_FEXIT(i)                                                       \
	SEC("fexit")                                                       \
	int sys_fexit##i(__u64 *ctx)                                       \
	{                                                                  \
		__s64 ret = (__s64)ctx[1];                                 \
		if (ret <= -512 && ret >= -516)                            \
			return 0;                                          \
		return pick();                                             \
	}
SYS_FEXIT(0)
SYS_FEXIT(1)
SYS_FEXIT(2)
SYS_FEXIT(3)
SYS_FEXIT(4)
SYS_FEXIT(5)
SYS_FEXIT(6)
SYS_FEXIT(7)

SEC("uprobe")
int func_entry(void *ctx)
{
	return pick();
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
