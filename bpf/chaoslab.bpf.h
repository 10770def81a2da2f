/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Shared by every chaoslab probe: the target table and the one histogram scheme.
 *
 * Histogram: log-linear buckets over nanoseconds, 8 sub-buckets per power of two
 * (a bucket is at most 12.5% wide), keyed by (target, bucket). Each bucket holds its
 * count and the sum of its values in ns, so means and per-request shares are exact:
 * one map lookup per record. Per CPU: a record adds to this CPU's counters, a cache
 * line no other CPU writes, instead of one that every CPU's records fight over (user
 * space sums the CPUs as it reads). The adds stay atomic: a softirq's program (a
 * socket's data ready) can interrupt a program of the same object on the same CPU.
 * chaoslab/hist.py decodes buckets with the same rule; change both together.
 *
 * Metrics: a probe can split its layer into metrics (a syscall number, "connect",
 * "stop-the-world"...). The key's target field is then `index | metric << 8`; metric 0
 * is the layer as a whole. chaoslab/probes/base.py decodes it.
 *
 * Targets: user space fills `targets` with tgid -> target index before attaching,
 * and sets the tgid's bit in `target_bits`; events of any other process are ignored.
 * The bit is the fast test: the tracepoint probes run on every syscall and context
 * switch of the machine, almost all of them another process's, and an array lookup
 * is a bounds check and a load where a hash lookup hashes the key and walks a bucket.
 * The hash stays the authority (a set bit with no entry: not a target); the syscall
 * layer keeps a thread's target index once it has looked its process up.
 */
#ifndef CHAOSLAB_BPF_H
#define CHAOSLAB_BPF_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define HIST_SUB_BITS 3

struct hist_key {
	__u32 target;
	__u32 bucket;
};

struct hist_val {
	__u64 count;
	__u64 sum_ns;
};

/* Not preallocated: a per-CPU entry is 16 bytes per CPU, and 32768 of them reserved up
 * front would be 32 MiB per object on a 64-CPU host; a run fills a few thousand. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 32768);
	__type(key, struct hist_key);
	__type(value, struct hist_val);
} hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);   /* tgid */
	__type(value, __u32); /* target index */
} targets SEC(".maps");

/* One bit per tgid, below the kernel's highest pid_max (PID_MAX_LIMIT, 4194304). */
#define TARGET_WORDS 65536
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TARGET_WORDS);
	__type(key, __u32);   /* tgid / 64 */
	__type(value, __u64); /* bit tgid % 64 */
} target_bits SEC(".maps");

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

/* Add one to a counter of a per-CPU array of u64: this CPU's own, no atomic operation. */
static __always_inline void percpu_inc(void *counters, __u32 key)
{
	__u64 *n = bpf_map_lookup_elem(counters, &key);

	if (n)
		(*n)++;
}

/*
 * What a map refused, per CPU: records whose histogram bucket had no room (DROP_HIST),
 * events whose in-flight entry had none (DROP_INFLIGHT). A hash map answers -E2BIG when
 * it holds max_entries (-ENOMEM when an entry cannot be allocated; -EEXIST is no loss);
 * the LRU maps evict instead and never refuse. User space reports
 * both counts (chaoslab/probes/cost.py) rather than losing the events silently.
 */
#define CHAOSLAB_E2BIG 7
#define CHAOSLAB_EEXIST 17
enum { DROP_HIST, DROP_INFLIGHT, DROP_KINDS };
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_KINDS);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline void count_drop(__u32 kind)
{
	percpu_inc(&drops, kind);
}

/* An in-flight entry stored, or its loss counted (a full map, or no memory for it). */
static __always_inline void remember(void *map, const void *key, const void *val, __u64 flags)
{
	long err = bpf_map_update_elem(map, key, val, flags);

	if (err && err != -CHAOSLAB_EEXIST)
		count_drop(DROP_INFLIGHT);
}

/* Record one duration (ns) for a target, under one of the probe's metrics. */
static __always_inline void hist_record_metric(__u32 target, __u32 metric, __u64 ns)
{
	struct hist_key key = { .target = (target & 0xff) | (metric << 8), .bucket = hist_bucket(ns) };
	struct hist_val *val = bpf_map_lookup_elem(&hist, &key), fresh = { 1, ns };
	long err;

	if (!val) {
		/* A new key: this CPU's counters start at (1, ns), the others' at 0. Another
		 * program may have created it meanwhile: then add to this CPU's of that entry. */
		err = bpf_map_update_elem(&hist, &key, &fresh, BPF_NOEXIST);
		if (err == 0)
			return;
		if (err != -CHAOSLAB_EEXIST) { /* full (E2BIG), or no memory for the entry */
			count_drop(DROP_HIST);
			return;
		}
		val = bpf_map_lookup_elem(&hist, &key);
		if (!val)
			return;
	}
	__sync_fetch_and_add(&val->count, 1);
	__sync_fetch_and_add(&val->sum_ns, ns);
}

/* Record one duration (ns) for a target, for its layer as a whole. */
static __always_inline void hist_record(__u32 target, __u64 ns)
{
	hist_record_metric(target, 0, ns);
}

/* Whether a process may be a target: its bit only (see target_bits). */
static __always_inline int maybe_target(__u32 tgid)
{
	__u32 word = tgid >> 6;
	__u64 *bits = bpf_map_lookup_elem(&target_bits, &word);

	return bits && (*bits & (1ULL << (tgid & 63)));
}

/* The target index of a process, or NULL if it is not a target. */
static __always_inline __u32 *target_of(__u32 tgid)
{
	if (!maybe_target(tgid))
		return 0;
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
	percpu_inc(&target_runs, target);
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
