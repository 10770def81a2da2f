/*
 * trapcost: calls an empty function in a loop, one round per line read on stdin, and
 * prints the nanoseconds per call of each round. chaoslab times a round without a
 * uprobe on chaoslab_tick and rounds with one: the difference is what one uprobe trap
 * costs the probed thread on this machine (the trap and the return to user space; the
 * BPF program's own run time is counted apart, by the kernel's BPF statistics).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) void chaoslab_tick(void)
{
	__asm__ volatile("" ::: "memory");
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
		double start = now_ns();

		for (long i = 0; i < n; i++)
			chaoslab_tick();
		printf("%.1f\n", (now_ns() - start) / (double)n);
	}
	return 0;
}
