// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * gofunc: duration of one Go function in a target, keyed by goroutine.
 *
 * Layers: tls (crypto/tls.(*Conn).serverHandshake) and entropy
 * (crypto/internal/sysrand.Read, which covers Go's vDSO getrandom path and the
 * getrandom syscall). One instance of this object is loaded per layer.
 *
 * Attach: `func_entry` as a uprobe on the function's first instruction, `func_ret`
 * as a uprobe on each of its RET instructions (found by disassembly). No uretprobe:
 * it rewrites the return address on the goroutine stack, which the Go runtime moves.
 *
 * Key: the goroutine (the g pointer, held in R14 by Go's amd64 register ABI), not
 * the thread, because a goroutine can move between threads inside the function.
 */
#include <asm/ptrace.h>
#include "chaoslab.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);   /* g pointer */
	__type(value, __u64); /* entry time, ns */
} starts SEC(".maps");

SEC("uprobe")
int func_entry(struct pt_regs *ctx)
{
	__u64 g = ctx->r14;
	__u64 now = bpf_ktime_get_ns();

	if (!current_target())
		return 0;
	bpf_map_update_elem(&starts, &g, &now, BPF_ANY);
	return 0;
}

SEC("uprobe")
int func_ret(struct pt_regs *ctx)
{
	__u64 g = ctx->r14;
	__u64 *start = bpf_map_lookup_elem(&starts, &g);
	__u32 *target;

	if (!start)
		return 0;
	target = current_target();
	if (target)
		hist_record(*target, bpf_ktime_get_ns() - *start);
	bpf_map_delete_elem(&starts, &g);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
