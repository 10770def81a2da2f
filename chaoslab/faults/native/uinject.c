/*
 * uinject - ptrace delay injector (part of chaoslab).
 *
 *   uinject --pid PID --addr 0xHEX --delay-us N [--every K]      breakpoint mode
 *   uinject --pid PID --mode signal --delay-us N [--errno E]      signal mode
 *
 * Signal mode (the syscall fault): no breakpoint.  A BPF program at the exit
 * of the named syscalls (fexit on their kernel functions, or their sys_exit
 * tracepoints) or at a uprobe on their Go wrappers sends SIGURG to the thread of
 * each selected call; its signal-delivery stop (si_code SI_KERNEL, unlike Go's own
 * tgkill'd SIGURGs) is a hit: the return value becomes -E if --errno is given,
 * the thread is held for the delay, and the SIGURG is suppressed.  Untargeted
 * syscalls never stop; only signals pass through the tracer.
 *
 * Breakpoint mode (the entropy fault):
 * Delays every K-th execution (counted over all threads) of the instruction at
 * ADDR in a running multithreaded process by N us, holding only the thread that
 * hit it.  ADDR's first byte becomes int3 (0xCC); every thread is PTRACE_SEIZEd
 * (PTRACE_O_TRACECLONE attaches new ones); memory goes through /proc/PID/mem,
 * which works while threads run.  Only the byte at ADDR is ever written.
 *
 * Per-thread state machine:
 *   RUNNING  --kernel SIGTRAP with rip == ADDR+1 (a hit)-->  HELD if this hit
 *            is delayed (left stopped until its deadline), else "stepped over":
 *   HELD     --deadline-->  stepped over, i.e. one of
 *     a) ADDR holds a conditional jump (Go prologues: `jbe morestack`): it is
 *        emulated from the saved flags (rip set at the hit), PTRACE_CONT.  The
 *        int3 never leaves, so no other thread can slip past undelayed.
 *     b) otherwise rip = ADDR, the original byte is put back while nstep (the
 *        number of STEPPING threads) > 0, PTRACE_SINGLESTEP -> STEPPING
 *   STEPPING --the step's SIGTRAP-->  RUNNING: int3 re-inserted when nstep
 *            drops to 0, PTRACE_CONT delivering the signals queued meanwhile.
 * Other signal-delivery stops are passed through for RUNNING threads and queued
 * (re-delivered after the step) for STEPPING ones, so a signal (Go's SIGURG
 * preemption, typically) is neither lost nor lets the step land in a handler.
 * HELD threads sit in a ptrace stop: signals stay pending in the kernel.
 * Group-stops are PTRACE_LISTENed.
 *
 * Revert (SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2, incl. the parent-death
 * SIGTERM; read from a signalfd so it runs in the main loop): restore the byte,
 * detach HELD threads (their rip already points at the instruction to run),
 * PTRACE_INTERRUPT running/LISTENing ones and detach each at its next stop,
 * detach STEPPING ones when their step completes.  A thread must never be
 * detached with one of our SIGTRAPs pending (the kernel would kill the target):
 * one interrupted at ADDR+1 with SIGTRAP pending is resumed once so the trap is
 * dequeued, reported as a hit and suppressed.  The revert is bounded to 5 s.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>

#define NS 1000000000ull
#define MAXQ 8

enum { RUNNING, HELD, STEPPING };
struct thr {
	pid_t tid;
	int st, listening, drained; /* drained: revert resumed it once to dequeue SIGTRAP */
	uint64_t deadline;          /* HELD: release time, CLOCK_MONOTONIC ns */
	int nq;                     /* signals queued while STEPPING */
	siginfo_t q[MAXQ];
};

static struct thr *thr;
static int nthr, cap, nstep, reverting, poke_ok = 1, ndetached;
static pid_t pid;
static unsigned long addr;
static uint8_t insn[16];     /* original bytes at addr (insn[0] is the one we replace) */
static int jcc = -1, jlen;   /* condition code / length when insn is an emulable Jcc */
static long jdisp;
static int memfd = -1;
static unsigned long long delay_ns, every = 1, hits, delayed, passed;
static int sigmode;          /* --mode signal: hits are kernel-sent SIGURGs, not a breakpoint */
static long inj_errno;       /* signal mode: the selected call returns -inj_errno */
static const char *reason = "signal";

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

__attribute__((format(printf, 1, 2))) static void emit(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	if (fflush(stdout))  /* reader gone: carry on (SIGPIPE is ignored) */
		clearerr(stdout);
}

/* Fatal error before the target's memory is touched (exiting auto-detaches). */
__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("uinject: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static int poke(uint8_t b) { return pwrite(memfd, &b, 1, (off_t)addr) == 1 ? 0 : -1; }

/* Numeric field KEY of /proc/PID/task/TID/status, or -1. */
static long long status_field(pid_t tid, const char *key, int base)
{
	char path[64], line[256];
	long long v = -1;
	size_t kl = strlen(key);
	snprintf(path, sizeof path, "/proc/%d/task/%d/status", pid, tid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			v = (long long)strtoull(line + kl + 1, NULL, base);
			break;
		}
	fclose(f);
	return v;
}

static struct thr *find(pid_t tid)
{
	for (int i = 0; i < nthr; i++)
		if (thr[i].tid == tid)
			return &thr[i];
	return NULL;
}

/* May move the table: callers must re-find() pointers they hold. */
static void add(pid_t tid)
{
	if (find(tid))
		return;
	if (nthr == cap && !(thr = realloc(thr, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *thr)))
		abort();
	memset(&thr[nthr], 0, sizeof *thr);
	thr[nthr++].tid = tid;
}

static void step_done(struct thr *t)
{
	t->st = RUNNING;
	if (--nstep == 0 && !reverting)
		poke(0xCC);  /* fails only once the process is gone */
}

/* Forget t (exited or detached); t then refers to another entry. */
static void drop(struct thr *t)
{
	if (t->st == STEPPING)
		step_done(t);
	*t = thr[--nthr];
}

static void queue_sig(struct thr *t, const siginfo_t *si)
{
	int i = 0;
	while (i < t->nq && t->q[i].si_signo != si->si_signo)  /* coalesce, as the kernel does */
		i++;
	if (i < MAXQ)
		t->q[i] = *si;
	if (i == t->nq && i < MAXQ)
		t->nq++;
}

/*
 * Resume t with PTRACE_CONT or PTRACE_DETACH.  sig: the current stop's signal
 * to deliver (0 = suppress); sigstop: the stop is a signal-delivery stop (only
 * those can inject a signal).  The first queued signal keeps its siginfo via
 * PTRACE_SETSIGINFO; the others are re-raised with tgkill.
 */
static void release(struct thr *t, enum __ptrace_request req, int sig, int sigstop)
{
	int i = 0;
	if (sigstop && !sig && t->nq && !ptrace(PTRACE_SETSIGINFO, t->tid, 0, &t->q[0])) {
		sig = t->q[0].si_signo;
		i = 1;
	}
	for (; i < t->nq; i++)
		if (t->q[i].si_signo != sig)
			syscall(SYS_tgkill, pid, t->tid, t->q[i].si_signo);
	t->nq = 0;
	ptrace(req, t->tid, 0, (void *)(long)(sigstop ? sig : 0));  /* ESRCH: dying */
	if (req == PTRACE_DETACH) {
		ndetached++;
		drop(t);
	}
}

/* Let a thread stopped on our int3 run the original instruction. */
static void step_over(struct thr *t)
{
	if (jcc >= 0 || sigmode) {  /* emulated at the hit, or nothing to step over */
		t->st = RUNNING;
		ptrace(PTRACE_CONT, t->tid, 0, 0);
		return;
	}
	if (nstep++ == 0)
		poke(insn[0]);
	t->st = STEPPING;
	ptrace(PTRACE_SINGLESTEP, t->tid, 0, 0);
}

/* Where a Jcc at addr goes given flags (cc: low nibble of its opcode). */
static unsigned long jcc_target(unsigned long fl)
{
	int cf = fl & 1, pf = fl >> 2 & 1, zf = fl >> 6 & 1, sf = fl >> 7 & 1, of = fl >> 11 & 1;
	int c[8] = { of, cf, zf, cf | zf, sf, pf, sf != of, zf | (sf != of) };
	return addr + (unsigned long)jlen + ((c[jcc >> 1] ^ (jcc & 1)) ? (unsigned long)jdisp : 0);
}

/* t stopped on our int3; r holds its registers (rip == addr + 1). */
static void on_hit(struct thr *t, struct user_regs_struct *r)
{
	r->rip = jcc >= 0 ? jcc_target(r->eflags) : addr;
	if (ptrace(PTRACE_SETREGS, t->tid, 0, r))
		return;  /* killed meanwhile */
	hits++;
	if (reverting) {  /* the byte is already restored */
		release(t, PTRACE_DETACH, 0, 1);
		return;
	}
	int chosen = hits % every == 0;
	delayed += chosen;
	if (chosen && delay_ns) {
		t->st = HELD;
		t->deadline = now_ns() + delay_ns;
	} else {
		step_over(t);
	}
}

/* Signal mode: t stopped on the SIGURG the BPF program sent as its selected syscall returned. */
static void on_sighit(struct thr *t)
{
	struct user_regs_struct r;
	hits++;
	if (reverting) {
		release(t, PTRACE_DETACH, 0, 1);  /* suppressed: the call returns untouched */
		return;
	}
	if (inj_errno && !ptrace(PTRACE_GETREGS, t->tid, 0, &r)) {
		r.rax = (unsigned long long)-inj_errno;
		ptrace(PTRACE_SETREGS, t->tid, 0, &r);
	}
	delayed++;
	if (delay_ns) {
		t->st = HELD;
		t->deadline = now_ns() + delay_ns;
	} else {
		step_over(t);
	}
}

/* Resume t from a ptrace-event stop (clone, interrupt, new thread, group-stop end). */
static void resume_event(struct thr *t)
{
	struct user_regs_struct r;
	if (t->st == STEPPING) {
		ptrace(PTRACE_SINGLESTEP, t->tid, 0, 0);  /* finish the step first */
	} else if (!reverting) {
		ptrace(PTRACE_CONT, t->tid, 0, 0);
	} else if (!t->drained && !ptrace(PTRACE_GETREGS, t->tid, 0, &r) && r.rip == addr + 1 &&
		   (status_field(t->tid, "SigPnd", 16) >> (SIGTRAP - 1) & 1)) {
		t->drained = 1;  /* executed our int3, its SIGTRAP still pending */
		ptrace(PTRACE_CONT, t->tid, 0, 0);
	} else {
		release(t, PTRACE_DETACH, 0, 0);
	}
}

static void handle(pid_t tid, int status)
{
	struct thr *t = find(tid);
	if (!WIFSTOPPED(status)) {  /* exited or killed */
		if (t)
			drop(t);
		return;
	}
	if (!t) {  /* a new thread whose first stop beat its parent's clone event */
		add(tid);
		t = find(tid);
	}
	t->listening = 0;
	int sig = WSTOPSIG(status), ev = status >> 16;
	unsigned long msg;
	if (ev == PTRACE_EVENT_CLONE) {
		if (!ptrace(PTRACE_GETEVENTMSG, tid, 0, &msg))
			add((pid_t)msg);  /* continued at its own first stop */
		resume_event(find(tid));
	} else if (ev == PTRACE_EVENT_EXEC) {  /* new image: breakpoint and threads gone */
		release(t, PTRACE_DETACH, 0, 0);
		nthr = 0;
	} else if (ev == PTRACE_EVENT_STOP && !reverting &&
		   (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)) {
		t->listening = !ptrace(PTRACE_LISTEN, tid, 0, 0);  /* group-stop */
	} else if (ev) {
		resume_event(t);
	} else {  /* signal-delivery stop */
		siginfo_t si;
		struct user_regs_struct r;
		enum __ptrace_request req = reverting ? PTRACE_DETACH : PTRACE_CONT;
		if (ptrace(PTRACE_GETSIGINFO, tid, 0, &si))
			return;  /* killed meanwhile */
		int ktrap = sig == SIGTRAP && si.si_code > 0;  /* made by the kernel, not kill() */
		int fault = (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE) &&
			    si.si_code > 0;
		if (t->st == STEPPING && (ktrap || fault)) {  /* stepped (or the insn faulted) */
			step_done(t);
			release(t, req, fault ? sig : 0, 1);
		} else if (t->st == STEPPING) {
			queue_sig(t, &si);
			ptrace(PTRACE_SINGLESTEP, tid, 0, 0);
		} else if (ktrap && !ptrace(PTRACE_GETREGS, tid, 0, &r) && r.rip == addr + 1) {
			on_hit(t, &r);
		} else if (sigmode && sig == SIGURG && si.si_code == SI_KERNEL) {
			on_sighit(t);
		} else {  /* not ours: pass it through */
			passed++;
			release(t, req, sig, 1);
		}
	}
}

static void begin_revert(const char *why)
{
	reverting = 1;
	reason = why;
	poke_ok = sigmode || !poke(insn[0]);
	for (int i = nthr - 1; i >= 0; i--) {  /* backwards: drop() moves the last entry */
		if (thr[i].st == HELD)
			release(&thr[i], PTRACE_DETACH, 0, 1);  /* rip already set at the hit */
		else if (thr[i].st == RUNNING || thr[i].listening)
			ptrace(PTRACE_INTERRUPT, thr[i].tid, 0, 0);
	}
}

/* One pass over /proc/PID/task seizing unknown tids; returns how many were added. */
static int seize_pass(void)
{
	char path[64];
	int added = 0;
	snprintf(path, sizeof path, "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		die("pid %d: cannot list threads: %s", pid, strerror(errno));
	for (struct dirent *de; (de = readdir(d));) {
		pid_t tid = (pid_t)atoi(de->d_name);
		if (tid <= 0 || find(tid))
			continue;
		if (!ptrace(PTRACE_SEIZE, tid, 0, (void *)(long)(PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC)) ||
		    (errno == EPERM && status_field(tid, "TracerPid", 10) == getpid())) {
			add(tid);  /* seized now, or already auto-attached as a clone */
			added++;
		} else if (errno != ESRCH) {  /* ESRCH: the thread vanished, fine */
			int e = errno;
			die("ptrace(PTRACE_SEIZE, %d) refused: %s%s", tid, strerror(e),
			    status_field(tid, "TracerPid", 10) > 0 ? " (already traced by another process)" : "");
		}
	}
	closedir(d);
	return added;
}

static void check_target(void)
{
	char path[64], line[512], perms[8];
	unsigned long lo, hi;
	int ok = 0;
	long long tgid = status_field(pid, "Tgid", 10);
	if (tgid != pid)
		die(tgid < 0 ? "pid %d: no such process" : "pid %d is a thread of process %lld, not a process",
		    pid, tgid);
	if (sigmode)
		return;
	snprintf(path, sizeof path, "/proc/%d/maps", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		die("pid %d: cannot read %s: %s", pid, path, strerror(errno));
	while (!ok && fgets(line, sizeof line, f))
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && addr >= lo && addr < hi)
			ok = perms[2] == 'x' && perms[3] == 'p';
	fclose(f);
	if (!ok)
		die("address 0x%lx is not in a private executable mapping of pid %d", addr, pid);
}

/* Breakpoint mode: save the instruction at addr, decode a Jcc there, write int3. */
static void install_breakpoint(void)
{
	ssize_t n = pread(memfd, insn, sizeof insn, (off_t)addr);
	if (n < 1)
		die("read 0x%lx in pid %d: %s", addr, pid, n ? strerror(errno) : "end of memory");
	if (insn[0] == 0xCC)
		die("0x%lx already holds int3 (another breakpoint, or left by a killed injector)", addr);
	int32_t d32;
	memcpy(&d32, insn + 2, 4);
	if (n >= 2 && (insn[0] & 0xF0) == 0x70)  /* Jcc rel8 */
		jcc = insn[0] & 15, jlen = 2, jdisp = (int8_t)insn[1];
	else if (n >= 6 && insn[0] == 0x0F && (insn[1] & 0xF0) == 0x80)  /* Jcc rel32 */
		jcc = insn[1] & 15, jlen = 6, jdisp = d32;
	if (poke(0xCC))
		die("write int3 at 0x%lx in pid %d: %s", addr, pid, strerror(errno));
	emit("{\"event\":\"ready\",\"pid\":%d,\"addr\":\"0x%lx\",\"orig_byte\":\"0x%02x\"}", pid, addr, insn[0]);
}

static unsigned long long num_arg(const char *opt, const char *s, int base, unsigned long long lo,
				  unsigned long long hi)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (!*s || *end || errno || *s == '-' || v < lo || v > hi)
		die("invalid %s '%s' (allowed: %llu..%llu)", opt, s, lo, hi);
	return v;
}

int main(int argc, char **argv)
{
	const char *usage = "usage: uinject --pid PID --addr 0xHEX --delay-us N [--every K]\n"
			    "       uinject --pid PID --mode signal --delay-us N [--errno E]";
	int have = 0;
	for (int i = 1; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			die("%s", usage);
		else if (!strcmp(a, "--pid"))
			pid = (pid_t)num_arg(a, v, 10, 1, 4194304), have |= 1;
		else if (!strcmp(a, "--addr"))
			addr = (unsigned long)num_arg(a, v, 16, 1, 0x7fffffffffffull), have |= 2;
		else if (!strcmp(a, "--delay-us"))
			delay_ns = num_arg(a, v, 10, 0, 3600000000ull) * 1000, have |= 4;
		else if (!strcmp(a, "--mode") && !strcmp(v, "signal"))
			sigmode = 1, have |= 2;
		else if (!strcmp(a, "--errno"))
			inj_errno = (long)num_arg(a, v, 10, 1, 4095);
		else if (!strcmp(a, "--every"))
			every = num_arg(a, v, 10, 1, 1ull << 62);
		else
			die("unknown argument '%s'\n%s", a, usage);
	}
	if (have != 7)
		die("%s", usage);

	/* Termination signals and SIGCHLD are only ever read through the signalfd. */
	sigset_t set;
	sigemptyset(&set);
	int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 };
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
		sigaddset(&set, sigs[i]);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	pid_t ppid = getppid();
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) || getppid() != ppid)
		die("parent already exited, not touching pid %d", pid);
	int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0)
		die("signalfd: %s", strerror(errno));

	check_target();
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/mem", pid);
	if (!sigmode && (memfd = open(path, O_RDWR | O_CLOEXEC)) < 0)
		die("open %s: %s", path, strerror(errno));
	/* Attach until /proc/PID/task is stable; the 2 ms pause before the final
	 * pass catches a clone that was in flight while its parent was seized. */
	for (int quiet = 0; quiet < 2;)
		if (seize_pass())
			quiet = 0;
		else if (++quiet == 1)
			usleep(2000);
	if (sigmode)
		emit("{\"event\":\"ready\",\"pid\":%d,\"mode\":\"signal\",\"threads\":%d}", pid, nthr);
	else
		install_breakpoint();

	uint64_t next_stats = now_ns() + NS / 4, revert_deadline = 0;
	for (;;) {
		uint64_t now = now_ns(), wake = reverting ? revert_deadline : next_stats;
		for (int i = 0; i < nthr; i++)
			if (thr[i].st == HELD && thr[i].deadline < wake)
				wake = thr[i].deadline;
		uint64_t d = wake > now ? wake - now : 0;
		struct timespec ts = { (time_t)(d / NS), (long)(d % NS) };
		struct pollfd pfd = { .fd = sfd, .events = POLLIN };
		ppoll(&pfd, 1, &ts, NULL);

		/* Drain the signalfd before waitpid so no SIGCHLD wakeup is lost. */
		struct signalfd_siginfo ssi;
		const char *why = NULL;
		while (read(sfd, &ssi, sizeof ssi) == (ssize_t)sizeof ssi)
			if (ssi.ssi_signo != SIGCHLD)
				why = "signal";
		int status;
		pid_t tid;
		while ((tid = waitpid(-1, &status, __WALL | WNOHANG)) > 0)
			handle(tid, status);
		if (tid < 0 && errno == ECHILD) {
			nthr = 0;  /* no tracee left at all */
		} else if (tid < 0 && errno != EINTR) {
			fprintf(stderr, "uinject: waitpid: %s\n", strerror(errno));
			why = "error";
		}
		if (why && !reverting) {
			begin_revert(why);
			revert_deadline = now_ns() + 5 * NS;
		}

		now = now_ns();
		for (int i = 0; i < nthr && !reverting; i++)
			if (thr[i].st == HELD && thr[i].deadline <= now)
				step_over(&thr[i]);
		int done = nthr == 0, timeout = reverting && now >= revert_deadline;
		if (done || timeout) {
			if (!reverting)
				reason = "target-exited";
			if (!done)
				fprintf(stderr, "uinject: revert timed out, %d thread(s) still attached\n", nthr);
			/* Nothing is left behind once the byte is back, or if every
			 * thread exited instead of being detached. */
			int restored = done && (poke_ok || ndetached == 0);
			emit("{\"event\":\"exit\",\"reason\":\"%s\",\"hits\":%llu,\"delayed\":%llu,\"passed\":%llu,"
			     "\"restored\":%s}", reason, hits, delayed, passed, restored ? "true" : "false");
			return restored && strcmp(reason, "error") ? 0 : 1;
		}
		if (now >= next_stats) {
			emit("{\"event\":\"stats\",\"hits\":%llu,\"delayed\":%llu,\"passed\":%llu,\"threads\":%d}",
			     hits, delayed, passed, nthr);
			next_stats = now + NS / 4;
		}
	}
}
