// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sched: the cpu layer, time a target's threads could not run.
 *
 * Metrics:
 *  1 run-queue: from the moment a thread becomes runnable (sched_wakeup, or switched
 *    out while still runnable, i.e. preempted or yielding) until it is switched in.
 *    A thread of a CFS-throttled cgroup stays runnable while the group waits for its
 *    next period, so throttling shows here as run-queue time.
 *  2 frozen: a cgroup-freezer stop (TASK_FROZEN), counted once per freeze of the
 *    target (from its first thread frozen to its first thread thawed), not once per
 *    thread: a paused process is one stall, whatever its thread count. Each freeze
 *    is also kept in `stalls` (start, end), because a process-wide stall delays every
 *    request in flight at once: user space weighs it by the requests it overlapped.
 *
 * Attach: raw tracepoints sched_wakeup, sched_wakeup_new, sched_switch. The raw
 * tracepoint gives sched_switch's raw prev_state, where TASK_FROZEN is visible (the
 * formatted tracepoint reports a frozen task as runnable).
 */
#include "chaoslab.bpf.h"
#include "chaoslab_task.bpf.h"

enum { M_RUNQ = 1, M_FROZEN = 2 };

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);   /* tid */
	__type(value, __u64); /* runnable since, ns */
} queued SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);  /* tid */
	__type(value, __u8); /* frozen */
} frozen SEC(".maps");

struct freeze {
	__u64 since;
	__s64 threads;
	__u64 recorded;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
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

static __always_inline int runnable(struct task_struct *p)
{
	__u32 tid = BPF_CORE_READ(p, pid);
	__u64 now = bpf_ktime_get_ns();

	if (!target_of(BPF_CORE_READ(p, tgid)))
		return 0;
	bpf_map_update_elem(&queued, &tid, &now, BPF_ANY);
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
	struct freeze fresh = { .since = now, .threads = 1 };
	struct freeze *f = bpf_map_lookup_elem(&freezes, &target);
	__u8 one = 1;

	bpf_map_update_elem(&frozen, &tid, &one, BPF_ANY);
	if (!f || f->threads <= 0) {
		bpf_map_update_elem(&freezes, &target, &fresh, BPF_ANY);
		return;
	}
	__sync_fetch_and_add(&f->threads, 1);
}

static __always_inline void freeze_end(__u32 target, __u32 tid, __u64 now)
{
	struct freeze *f = bpf_map_lookup_elem(&freezes, &target);

	bpf_map_delete_elem(&frozen, &tid);
	if (!f)
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
	__u64 now = bpf_ktime_get_ns();
	__u32 *target, tid;
	__u64 *since;

	target = target_of(BPF_CORE_READ(prev, tgid));
	if (target) {
		tid = BPF_CORE_READ(prev, pid);
		if (preempt || state == TASK_RUNNING)
			bpf_map_update_elem(&queued, &tid, &now, BPF_ANY);
		else if (state & TASK_FROZEN)
			freeze_begin(*target, tid, now);
	}
	target = target_of(BPF_CORE_READ(next, tgid));
	if (!target)
		return 0;
	tid = BPF_CORE_READ(next, pid);
	since = bpf_map_lookup_elem(&queued, &tid);
	if (since) {
		hist_record_metric(*target, M_RUNQ, now - *since);
		bpf_map_delete_elem(&queued, &tid);
	}
	if (bpf_map_lookup_elem(&frozen, &tid))
		freeze_end(*target, tid, now);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
