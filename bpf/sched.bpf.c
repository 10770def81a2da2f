// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sched: the cpu layer, time a target's threads could not run.
 *
 * Metrics:
 *  1 run-queue: from the moment a thread becomes runnable (sched_wakeup, or switched
 *    out while still runnable, i.e. preempted or yielding) until it is switched in.
 *    A thread of a CFS-throttled cgroup stays runnable while the group waits for its
 *    next period, so throttling shows here as run-queue time.
 *  2 frozen: a cgroup-freezer stop (v1: TASK_FROZEN; v2: asleep in the freezer's trap,
 *    JOBCTL_TRAP_FREEZE), counted once per freeze of the
 *    target (from its first thread frozen to its first thread thawed), not once per
 *    thread: a paused process is one stall, whatever its thread count. Each freeze
 *    is also kept in `stalls` (start, end), because a process-wide stall delays every
 *    request in flight at once: user space weighs it by the requests it overlapped.
 *
 *  stalled: the time during which the target had a thread waiting to run and none
 *    running (`stalled`, cumulative per target). This is when a target is starved
 *    of CPU as a whole, e.g. its cgroup throttled by a CFS quota: every request in
 *    flight waits, so user space samples it and weighs each slice by the requests in
 *    flight then, as it does with freezes.
 *
 * Attach: raw tracepoints sched_wakeup, sched_wakeup_new, sched_switch. The raw
 * tracepoint gives sched_switch's raw prev_state, where TASK_FROZEN is visible (the
 * formatted tracepoint reports a frozen task as runnable).
 */
#include "chaoslab.bpf.h"
#include "chaoslab_task.bpf.h"

enum { M_RUNQ = 1, M_FROZEN = 2 };

/* Plain hashes, not LRU: `waiting` and a freeze's `threads` count their entries, and an LRU
 * map may evict an entry (before it is full, on a machine with many CPUs: each CPU keeps
 * free nodes of its own), which would leave a count that never comes down. A full hash
 * refuses the new entry, and the count does not take it either. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);   /* tid */
	__type(value, __u64); /* runnable since, ns */
} queued SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);  /* tid */
	__type(value, __u8); /* frozen */
} frozen SEC(".maps");

struct freeze {
	__u64 since;
	__s64 threads;
	__u64 recorded;
};

/* Per target index, as `stalled`: arrays, each lookup an inline load (no hashing), as the
 * per-target state is read on every switch of a target's thread. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32); /* target index */
	__type(value, struct freeze);
} freezes SEC(".maps");

#define STALLS 64

struct stall {
	__u64 target; /* index + 1; 0: empty slot */
	__u64 start;
	__u64 end;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STALLS);
	__type(key, __u32);
	__type(value, struct stall);
} stalls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} stall_next SEC(".maps");

static __always_inline void stall_record(__u32 target, __u64 start, __u64 end)
{
	__u32 zero = 0, slot;
	__u64 *next = bpf_map_lookup_elem(&stall_next, &zero);
	struct stall s = { target + 1, start, end };

	if (!next)
		return;
	slot = (__u32)(__sync_fetch_and_add(next, 1) % STALLS);
	bpf_map_update_elem(&stalls, &slot, &s, BPF_ANY);
}

#define MAX_CPUS 256

struct cpu_state {
	__s64 waiting; /* threads in `queued` */
	__s64 running; /* CPUs whose `on_cpu` is this target */
	__u64 since;   /* stalled since (0: not stalled) */
	__u64 stalled; /* ns stalled before `since` */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32); /* target index */
	__type(value, struct cpu_state);
} stalled SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CPUS);
	__type(key, __u32);   /* cpu */
	__type(value, __u32); /* target index + 1 of the thread on it, 0: none */
} on_cpu SEC(".maps");

static __always_inline struct cpu_state *cpu_state(__u32 target)
{
	return bpf_map_lookup_elem(&stalled, &target);
}

/* Re-evaluate whether `target` is stalled: waiting threads, none on a CPU. */
static __always_inline void update_stall(__u32 target, __u64 now)
{
	struct cpu_state *st = cpu_state(target);
	int stall;

	if (!st)
		return;
	stall = st->waiting > 0 && st->running <= 0;
	if (stall && !st->since) {
		st->since = now;
	} else if (!stall && st->since) {
		st->stalled += now - st->since;
		st->since = 0;
	}
}

static __always_inline void enqueue(__u32 target, __u32 tid, __u64 now)
{
	struct cpu_state *st;

	if (bpf_map_update_elem(&queued, &tid, &now, BPF_NOEXIST) == 0) {
		st = cpu_state(target);
		if (st)
			__sync_fetch_and_add(&st->waiting, 1);
		return;
	}
	bpf_map_update_elem(&queued, &tid, &now, BPF_EXIST); /* queued again: from now */
}

static __always_inline void dequeue(__u32 target, __u32 tid)
{
	struct cpu_state *st;

	if (bpf_map_delete_elem(&queued, &tid) == 0 && (st = cpu_state(target)))
		__sync_fetch_and_add(&st->waiting, -1);
}

static __always_inline int runnable(struct task_struct *p)
{
	__u32 tid = BPF_CORE_READ(p, pid);
	__u64 now = bpf_ktime_get_ns();
	__u32 *target = target_of(BPF_CORE_READ(p, tgid));

	if (!target)
		return 0;
	count_run(*target);
	enqueue(*target, tid, now);
	update_stall(*target, now);
	return 0;
}

SEC("raw_tp/sched_wakeup")
int wakeup(struct bpf_raw_tracepoint_args *ctx)
{
	return runnable((struct task_struct *)ctx->args[0]);
}

SEC("raw_tp/sched_wakeup_new")
int wakeup_new(struct bpf_raw_tracepoint_args *ctx)
{
	return runnable((struct task_struct *)ctx->args[0]);
}

static __always_inline void freeze_begin(__u32 target, __u32 tid, __u64 now)
{
	struct freeze *f = bpf_map_lookup_elem(&freezes, &target);
	__u8 one = 1;

	/* counted once per thread, and only if kept: freeze_end uncounts what it finds */
	if (bpf_map_update_elem(&frozen, &tid, &one, BPF_NOEXIST) != 0 || !f)
		return;
	if (f->threads <= 0) { /* the target's first thread frozen: a new freeze */
		f->since = now;
		f->recorded = 0;
		f->threads = 1;
		return;
	}
	__sync_fetch_and_add(&f->threads, 1);
}

static __always_inline void freeze_end(__u32 target, __u32 tid, __u64 now)
{
	struct freeze *f = bpf_map_lookup_elem(&freezes, &target);

	bpf_map_delete_elem(&frozen, &tid);
	if (!f || !f->since)
		return;
	if (!f->recorded) {
		f->recorded = 1;
		hist_record_metric(target, M_FROZEN, now - f->since);
		stall_record(target, f->since, now);
	}
	__sync_fetch_and_add(&f->threads, -1);
}

SEC("raw_tp/sched_switch")
int switch_(struct bpf_raw_tracepoint_args *ctx)
{
	int preempt = (int)ctx->args[0];
	struct task_struct *prev = (struct task_struct *)ctx->args[1];
	struct task_struct *next = (struct task_struct *)ctx->args[2];
	unsigned int state = (unsigned int)ctx->args[3];
	__u32 cpu = bpf_get_smp_processor_id(), mark;
	__u32 *prev_target, *target, *old, tid;
	struct cpu_state *st;
	__u64 *since, now = 0;

	prev_target = target_of(BPF_CORE_READ(prev, tgid));
	target = target_of(BPF_CORE_READ(next, tgid));
	mark = target ? *target + 1 : 0;
	if (prev_target)
		count_run(*prev_target);
	else if (target)
		count_run(*target);
	if (prev_target || target) /* the clock only where a target's thread comes or goes */
		now = bpf_ktime_get_ns();
	old = bpf_map_lookup_elem(&on_cpu, &cpu);
	if (old && *old != mark) {
		/* running counts only what `on_cpu` saw, so it never goes below zero */
		if (*old && (st = cpu_state(*old - 1)))
			__sync_fetch_and_add(&st->running, -1);
		if (mark && (st = cpu_state(mark - 1)))
			__sync_fetch_and_add(&st->running, 1);
		*old = mark;
	}
	if (prev_target) {
		tid = BPF_CORE_READ(prev, pid);
		if (preempt || state == TASK_RUNNING) {
			enqueue(*prev_target, tid, now);
		} else {
			/* going to sleep: not waiting for a CPU, whatever a wakeup said while it
			 * still ran (sched_wakeup fires for a thread woken before it got off its
			 * CPU, ttwu_runnable); left queued, it would count as waiting until it
			 * next ran, and its target as starved whenever none of its threads ran */
			dequeue(*prev_target, tid);
			if ((state & TASK_FROZEN) ||
			    ((state & TASK_INTERRUPTIBLE) && (BPF_CORE_READ(prev, jobctl) & JOBCTL_TRAP_FREEZE)))
				freeze_begin(*prev_target, tid, now);
		}
		update_stall(*prev_target, now);
	}
	if (!target)
		return 0;
	tid = BPF_CORE_READ(next, pid);
	since = bpf_map_lookup_elem(&queued, &tid);
	if (since) {
		hist_record_metric(*target, M_RUNQ, now - *since);
		dequeue(*target, tid);
	}
	if (bpf_map_lookup_elem(&frozen, &tid))
		freeze_end(*target, tid, now);
	update_stall(*target, now);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
