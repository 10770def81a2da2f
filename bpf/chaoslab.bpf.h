/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Shared by every chaoslab probe: the target table and the one histogram scheme.
 *
 * Histogram: log-linear buckets over nanoseconds, 8 sub-buckets per power of two
 * (a bucket is at most 12.5% wide), keyed by (target, bucket). Bucket HIST_SUM holds
 * the sum of all values in ns, so means and per-request shares are exact.
 * chaoslab/hist.py decodes buckets with the same rule; change both together.
 *
 * Metrics: a probe can split its layer into metrics (a syscall number, "connect",
 * "stop-the-world"...). The key's target field is then `index | metric << 8`; metric 0
 * is the layer as a whole. chaoslab/probes/base.py decodes it.
 *
 * Targets: user space fills `targets` with tgid -> target index before attaching;
 * events of any other process are ignored.
 */
#ifndef CHAOSLAB_BPF_H
#define CHAOSLAB_BPF_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define HIST_SUB_BITS 3
#define HIST_SUM 0xffffffffu

struct hist_key {
	__u32 target;
	__u32 bucket;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, struct hist_key);
	__type(value, __u64);
} hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);   /* tgid */
	__type(value, __u32); /* target index */
} targets SEC(".maps");

static __always_inline __u32 hist_bucket(__u64 v)
{
	__u32 e = 0;
	__u64 x = v;

	if (v < (1 << HIST_SUB_BITS))
		return (__u32)v;
	if (x >> 32) { e += 32; x >>= 32; }
	if (x >> 16) { e += 16; x >>= 16; }
	if (x >> 8)  { e += 8;  x >>= 8; }
	if (x >> 4)  { e += 4;  x >>= 4; }
	if (x >> 2)  { e += 2;  x >>= 2; }
	if (x >> 1)  { e += 1; }
	/* e = index of the highest set bit, >= HIST_SUB_BITS here */
	return ((e - HIST_SUB_BITS + 1) << HIST_SUB_BITS) |
	       (__u32)((v >> (e - HIST_SUB_BITS)) & ((1 << HIST_SUB_BITS) - 1));
}

static __always_inline void hist_add(__u32 target, __u32 bucket, __u64 inc)
{
	struct hist_key key = { .target = target, .bucket = bucket };
	__u64 *val = bpf_map_lookup_elem(&hist, &key);

	if (val) {
		__sync_fetch_and_add(val, inc);
	} else {
		bpf_map_update_elem(&hist, &key, &inc, BPF_NOEXIST);
		/* lost a race with another CPU creating the entry: add to it */
		val = bpf_map_lookup_elem(&hist, &key);
		if (val && *val != inc)
			__sync_fetch_and_add(val, inc);
	}
}

/* Record one duration (ns) for a target, under one of the probe's metrics. */
static __always_inline void hist_record_metric(__u32 target, __u32 metric, __u64 ns)
{
	__u32 key = (target & 0xff) | (metric << 8);

	hist_add(key, hist_bucket(ns), 1);
	hist_add(key, HIST_SUM, ns);
}

/* Record one duration (ns) for a target, for its layer as a whole. */
static __always_inline void hist_record(__u32 target, __u64 ns)
{
	hist_record_metric(target, 0, ns);
}

/* The target index of a process, or NULL if it is not a target. */
static __always_inline __u32 *target_of(__u32 tgid)
{
	return bpf_map_lookup_elem(&targets, &tgid);
}

/*
 * Runs of the object's programs that concern a target (in its own threads, or on its
 * sockets or its threads' scheduling), per target index: the share of the programs' run
 * time (kernel BPF statistics) each target is charged with. Per CPU: no atomic operation
 * on the hot path.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} target_runs SEC(".maps");

/* Count one run of a program for a target (see target_runs). */
static __always_inline void count_run(__u32 target)
{
	__u64 *runs = bpf_map_lookup_elem(&target_runs, &target);

	if (runs)
		(*runs)++;
}

/* The target index of the current process, or NULL if it is not a target. */
static __always_inline __u32 *current_target(void)
{
	__u32 *target = target_of(bpf_get_current_pid_tgid() >> 32);

	if (target)
		count_run(*target);
	return target;
}

#endif
