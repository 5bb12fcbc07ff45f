/* SPDX-License-Identifier: GPL-2.0 */
/*
 * slab_hammer: churns accounted slab objects as fast as one CPU can, for the recorder's
 * overhead benchmark (benchmarks/record_overhead.py) and its robustness tests
 * (tests/test_record_robust.py).
 *
 *   slab_hammer SECONDS [STOP_FILE|-] [wait|-] [mix|eventfd]
 *
 * Stops after SECONDS, or earlier once STOP_FILE exists; with "wait" it first reads one byte
 * from stdin (so that several copies start together). Prints "iterations N" and
 * "stall_ns N", the longest time between two iterations: the workload's own pauses, which
 * a test must not blame on the recorder.
 *
 * Modes: "mix" (the default) creates, writes and unlinks a tmpfs file, then makes and
 * closes a UNIX socketpair and a pipe: ~16 slab events in ~15-30 us, varied caches.
 * "eventfd" only makes and closes an eventfd: 9 slab events (file, dentry, inode security
 * blob, eventfd context, their frees) in ~2.5 us, ~3.5 M events/s per CPU untraced (perf
 * stat on this 6.18 VM): the cheapest slab events found per system call, so that a recorder
 * is offered more than it can take. Measured per mode with perf stat on kmem:*: stat() 2
 * events/2.7 us, open+close 6/6.7 us, anonymous mmap+munmap 7/5.1 us, pipe 17/6.2 us,
 * socketpair 22/10.9 us.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* One iteration of "mix": 0 on success. */
static int churn_mix(const char *path)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	if (fd < 0 || write(fd, "x", 1) != 1)
		return 1;
	close(fd);
	unlink(path);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		return 1;
	close(sv[0]);
	close(sv[1]);
	int p[2];
	if (pipe(p))
		return 1;
	close(p[0]);
	close(p[1]);
	return 0;
}

/* One iteration of "eventfd": 0 on success. */
static int churn_eventfd(const char *path)
{
	(void)path;
	int fd = eventfd(0, 0);
	if (fd < 0)
		return 1;
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	double secs = atof(argv[1]);
	const char *stop = argc > 2 && strcmp(argv[2], "-") ? argv[2] : NULL;
	char path[256], go;
	int (*churn)(const char *) = churn_mix;
	if (argc > 4 && !strcmp(argv[4], "eventfd"))
		churn = churn_eventfd;
	else if (argc > 4 && strcmp(argv[4], "mix"))
		return 2;
	if (argc > 3 && !strcmp(argv[3], "wait") && read(0, &go, 1) != 1)
		return 1;
	snprintf(path, sizeof(path), "/dev/shm/kmt-hammer-%d", getpid());
	long long start = now_ns(), prev = start, stall = 0;
	long n = 0;
	for (;; n++) {
		long long now = now_ns();
		if (now - prev > stall)
			stall = now - prev;
		prev = now;
		if ((n & 63) == 0 && (now - start >= secs * 1e9 || (stop && access(stop, F_OK) == 0)))
			break;
		if (churn(path))
			return 1;
	}
	printf("iterations %ld\nstall_ns %lld\n", n, stall);
	return 0;
}
