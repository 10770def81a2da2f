/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The few task_struct fields chaoslab's scheduler probes read, relocated by libbpf
 * against the running kernel's BTF (/sys/kernel/btf/vmlinux): CO-RE, so no kernel
 * headers are needed and one object runs on any kernel with BTF.
 */
#ifndef CHAOSLAB_TASK_BPF_H
#define CHAOSLAB_TASK_BPF_H

#include <bpf/bpf_core_read.h>

struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	unsigned long jobctl;
} __attribute__((preserve_access_index));

/* Raw task states (include/linux/sched.h), as sched_switch's raw tracepoint passes them. */
#define TASK_RUNNING 0x0000
#define TASK_INTERRUPTIBLE 0x0001
#define TASK_TRACED 0x0008
#define TASK_FROZEN 0x8000
/* task->jobctl (include/linux/sched/jobctl.h): the cgroup v2 freezer's trap. A thread of
 * a frozen v2 cgroup sleeps in do_freezer_trap() with this bit set, as TASK_INTERRUPTIBLE;
 * TASK_FROZEN is the v1 freezer's (and system suspend's) state. */
#define JOBCTL_TRAP_FREEZE (1UL << 23)

#endif
