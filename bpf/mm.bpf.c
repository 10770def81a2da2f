// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * mm: the memory layer, time a target's threads spend reclaiming memory before they can
 * go on allocating.
 *
 * Metrics:
 *  1 memcg reclaim: the thread's cgroup is at its memory limit; the kernel reclaims the
 *    cgroup's pages (its page cache, or swap) in the allocating thread before it charges
 *    the new page (mm_vmscan_memcg_reclaim_begin/end).
 *  2 direct reclaim: the machine (or a NUMA node) is short of free memory and the
 *    allocating thread reclaims for it (mm_vmscan_direct_reclaim_begin/end).
 *
 * Both run in the context of the thread that allocates, so a target's reclaim is the
 * time of its own requests that a memory fault took (a page fault in the handler, a
 * socket buffer in a write). A thread is timed from begin to end; the begin is kept per
 * thread id in an LRU hash (reclaim is rare next to syscalls: a hash is cheap here).
 *
 * Attach: raw tracepoints, filtered by the tgid's bit.
 */
#include "chaoslab.bpf.h"

enum { M_MEMCG = 1, M_DIRECT = 2 };

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);   /* tid */
	__type(value, __u64); /* reclaim began, ns */
} began SEC(".maps");

static __always_inline int begin(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	__u64 now;

	if (!current_target())
		return 0;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&began, &tid, &now, BPF_ANY);
	return 0;
}

static __always_inline int end(__u32 metric)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid, *target;
	__u64 *start;

	if (!maybe_target(pid_tgid >> 32))
		return 0;
	start = bpf_map_lookup_elem(&began, &tid);
	if (!start)
		return 0;
	target = current_target();
	if (target)
		hist_record_metric(*target, metric, bpf_ktime_get_ns() - *start);
	bpf_map_delete_elem(&began, &tid);
	return 0;
}

SEC("raw_tp/mm_vmscan_memcg_reclaim_begin")
int memcg_begin(void *ctx)
{
	return begin();
}

SEC("raw_tp/mm_vmscan_memcg_reclaim_end")
int memcg_end(void *ctx)
{
	return end(M_MEMCG);
}

SEC("raw_tp/mm_vmscan_direct_reclaim_begin")
int direct_begin(void *ctx)
{
	return begin();
}

SEC("raw_tp/mm_vmscan_direct_reclaim_end")
int direct_end(void *ctx)
{
	return end(M_DIRECT);
}
