/*
 * trapcost: calls a function in a loop, one round per line read on stdin ("0" or "1":
 * which function), and prints the nanoseconds per call of each round. chaoslab times
 * rounds without and with a uprobe on the function's first instruction: the difference
 * is what one uprobe hit costs the probed thread on this machine, the BPF program's own
 * run time aside (the kernel's BPF statistics count that).
 *
 * Two kinds of hit: on an instruction the kernel emulates (chaoslab_tick_emulated starts
 * with a jump), one trap; on any other (chaoslab_tick_stepped starts with its `ret`), the
 * trap and a single step of the instruction out of line, a second trap. x86-64 only, as
 * the Go probes are.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__attribute__((naked, noinline)) void chaoslab_tick_stepped(void)
{
	__asm__ volatile("ret");
}

__attribute__((naked, noinline)) void chaoslab_tick_emulated(void)
{
	__asm__ volatile("jmp 1f\n1: ret");
}

static double now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 5000;
	char line[64];

	if (n <= 0)
		n = 5000;
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof line, stdin)) {
		void (*tick)(void) = line[0] == '1' ? chaoslab_tick_emulated : chaoslab_tick_stepped;
		double start = now_ns();

		for (long i = 0; i < n; i++)
			tick();
		printf("%.1f\n", (now_ns() - start) / (double)n);
	}
	return 0;
}
