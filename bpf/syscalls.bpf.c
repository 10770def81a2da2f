// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * syscalls: the syscall layer, each syscall's latency as the calling thread lives it.
 *
 * Metric nr+1 holds syscall nr (x86-64 numbering). A syscall's time runs from
 * sys_enter to sys_exit, plus any tracer stop glued to it:
 *  - a stop that ends at most HOLD_WINDOW_NS before the thread's next sys_enter is
 *    added to that syscall (a hold at entry: strace/ChaosBlade delay_enter, or a
 *    thread held at the syscall wrapper's entry);
 *  - a stop that starts at most HOLD_WINDOW_NS after the thread's last sys_exit is
 *    added to that syscall (a hold at return: delay_exit).
 * Those stops happen outside the sys_enter/sys_exit pair (the kernel reports ptrace
 * syscall stops before sys_enter and after sys_exit), so a tracepoint-only latency
 * would never see an injected syscall delay. A stop for a breakpoint (SIGTRAP that is
 * not a syscall stop) belongs to the code at the breakpoint, not to a syscall, and is
 * never counted here.
 *
 * rt_sigreturn never takes a hold: it is the end of a signal handler that ran between
 * the hold and the call it was for (e.g. the target's own signal, queued while held).
 *
 * A syscall is recorded when the thread's next event arrives (its next syscall, or
 * the end of a stop that is not glued to it), so its exit-side hold can still join it.
 *
 * Threads: one slot each in an array, at the thread id's low bits, tagged with the id. An
 * array lookup is a bounds check and an address the JIT computes inline, where a hash
 * lookup (the LRU hash this used to be) hashes the key and walks a bucket: twice per
 * syscall of a target, the most frequent event any probe sees. Two live target threads
 * whose ids share the low bits take the slot in turn: the open syscall of the one that
 * loses it is not recorded (its finished one is, before the slot changes hands); if both
 * run at once on two CPUs, one's exit can land in the other's state, a wrong figure for one
 * syscall. Thread ids are handed out in turn, so that takes two live target threads created
 * a multiple of 16384 ids apart.
 *
 * Attach: the raw tracepoints sys_enter/sys_exit (filtered by the tgid's bit, then
 * per thread) and sched_switch (stops: raw state TASK_TRACED). Raw, not raw_syscalls:sys_enter as a
 * tracepoint: every syscall of the machine passes these, and a raw tracepoint hands the
 * program the registers as they are, where a tracepoint first copies the call's number
 * and six arguments into a perf record for each of them.
 */
#include "chaoslab.bpf.h"
#include "chaoslab_task.bpf.h"

#define HOLD_WINDOW_NS 50000ULL
#define M_HOLD 1100 /* a hold that joined no syscall of the layer (syscall metrics: nr + 1) */
#define SIGTRAP 5
#define SYSCALL_STOP (SIGTRAP | 0x80)
#define NR_RT_SIGRETURN 15
#define NR_EXIT 60
#define NR_EXIT_GROUP 231

struct thread {
	__u32 tid;        /* the slot's thread (0: free) */
	__u32 pad;
	__u64 enter;      /* start of the open syscall (0: none) */
	__u64 last_exit;  /* end of the last syscall, or of a stop glued to it */
	__u64 hold;       /* stop time waiting to join the next syscall */
	__u64 hold_end;
	__u64 stop;       /* start of the current stop (0: running) */
	__u64 done;       /* latency of the last syscall, not yet recorded */
	__s32 nr;         /* open syscall */
	__s32 done_nr;    /* -1: nothing waiting */
	__u32 target;
	__u32 tgid;       /* the process the thread was seen in */
	__u32 counted;    /* the current stop may be a syscall hold */
};

#define THREAD_SLOTS 16384 /* a power of two */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, THREAD_SLOTS);
	__type(key, __u32); /* tid % THREAD_SLOTS */
	__type(value, struct thread);
} threads SEC(".maps");

/* The slot of a thread, whoever holds it (NULL: none). */
static __always_inline struct thread *slot_of(__u32 tid)
{
	__u32 slot = tid & (THREAD_SLOTS - 1);

	return bpf_map_lookup_elem(&threads, &slot);
}

/* The thread's own slot, or NULL if the slot is another thread's or free. */
static __always_inline struct thread *thread_of(__u32 tid)
{
	struct thread *th = slot_of(tid);

	return th && th->tid == tid ? th : 0;
}

/* Syscalls in which a thread waits for work (filled in by chaoslab): outside the layer. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} waits SEC(".maps");

static __always_inline void flush(struct thread *th)
{
	if (th->done_nr >= 0)
		hist_record_metric(th->target, th->done_nr + 1, th->done);
	th->done_nr = -1;
}

SEC("raw_tp/sys_enter")
int sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__s64 id = (__s64)ctx->args[1]; /* sys_enter(struct pt_regs *regs, long id) */
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid, tgid = pid_tgid >> 32, *target;
	struct thread *th;
	__u64 now;

	if (!maybe_target(tgid) || id < 0 || id > 1023)
		return 0;
	th = slot_of(tid);
	if (!th)
		return 0;
	if (th->tid != tid || th->tgid != tgid) {
		/* a thread not seen yet, its tid now another process's, or a slot taken over */
		target = target_of(tgid);
		if (!target)
			return 0;
		if (th->tid)
			flush(th); /* the last syscall of the thread that had the slot */
		th->tid = tid;
		th->tgid = tgid;
		th->target = *target;
		th->enter = th->last_exit = th->hold = th->hold_end = th->stop = 0;
		th->done_nr = -1;
		th->counted = 0;
	}
	count_run(th->target);
	now = bpf_ktime_get_ns();
	flush(th);
	if (id == NR_EXIT || id == NR_EXIT_GROUP) {
		/* the thread ends in this call: a new thread given its id must not close it */
		th->tid = 0;
		th->enter = 0;
		return 0;
	}
	th->enter = now;
	th->nr = (__s32)id;
	if (id == NR_RT_SIGRETURN)
		return 0; /* the hold waits for the call after the handler */
	if (th->hold) {
		__u32 nr = (__u32)id;

		if (now - th->hold_end <= HOLD_WINDOW_NS && !bpf_map_lookup_elem(&waits, &nr))
			th->enter = now - th->hold;
		else /* the held goroutine was preempted, or the next call is a wait: keep the hold */
			hist_record_metric(th->target, M_HOLD, th->hold);
	}
	th->hold = 0;
	return 0;
}

SEC("raw_tp/sys_exit")
int sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct thread *th;
	__u64 now;

	if (!maybe_target(pid_tgid >> 32))
		return 0;
	th = thread_of(tid);
	if (!th || !th->enter || th->tgid != pid_tgid >> 32)
		return 0; /* not in a call, or the id of a thread gone with its process */
	count_run(th->target);
	now = bpf_ktime_get_ns();
	th->done = now - th->enter;
	th->done_nr = th->nr;
	th->last_exit = now;
	th->enter = 0;
	return 0;
}

SEC("raw_tp/sched_switch")
int stops(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *prev = (struct task_struct *)ctx->args[1];
	struct task_struct *next = (struct task_struct *)ctx->args[2];
	unsigned int state = (unsigned int)ctx->args[3];
	__u64 now = bpf_ktime_get_ns(), stopped;
	struct thread *th;
	__u32 tid;
	int code;

	if ((state & TASK_TRACED) && maybe_target(BPF_CORE_READ(prev, tgid))) {
		tid = BPF_CORE_READ(prev, pid);
		th = thread_of(tid);
		if (th && !th->enter) {
			code = BPF_CORE_READ(prev, exit_code);
			th->stop = now;
			th->counted = !((code & 0x7f) == SIGTRAP && code != SYSCALL_STOP);
		}
	}
	if (!maybe_target(BPF_CORE_READ(next, tgid)))
		return 0;
	tid = BPF_CORE_READ(next, pid);
	th = thread_of(tid);
	if (!th || !th->stop)
		return 0;
	count_run(th->target);
	stopped = now - th->stop;
	if (!th->counted) {
		th->stop = 0;
		return 0;
	}
	if (th->done_nr >= 0 && th->stop - th->last_exit <= HOLD_WINDOW_NS) {
		th->done += stopped; /* held on the way out of the last syscall */
		th->last_exit = now;
	} else {
		flush(th);
		if (th->hold && th->stop - th->hold_end > HOLD_WINDOW_NS) {
			/* an earlier stop too far from this one (the thread ran in between, e.g. to a
			 * signal handler on a slow machine): not one hold; it joined no syscall */
			hist_record_metric(th->target, M_HOLD, th->hold);
			th->hold = 0;
		}
		th->hold += stopped;
		th->hold_end = now;
	}
	th->stop = 0;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
