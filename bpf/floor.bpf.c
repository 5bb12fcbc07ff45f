// SPDX-License-Identifier: GPL-2.0
/*
 * floor.bpf.c: the least a BPF recorder of the slab tracepoints can cost, for
 * benchmarks/probe_floor.py. Attached as raw tracepoints to kmem:kmem_cache_alloc, kmalloc,
 * kmem_cache_free and kfree, like kmemtrace.bpf.c, so that the difference between their
 * costs is what kmemtrace adds on top of the kernel's own work per event.
 *
 * floor_empty: returns at once (the tracepoint, the BPF dispatch, the recursion guard).
 * floor_ring: also reserves and submits one 40-byte record with a timestamp and the pointer
 *   (the ring buffer's spinlock, shared by all CPUs), without wakeups.
 * floor_batch: kmemtrace's transport and nothing else: each event fills a whole 40-byte
 *   struct kmt_event in a per-CPU staging buffer, and a full batch of KMT_BATCH goes to a
 *   ring of the recorder's size in one bpf_ringbuf_output(), as emit() in kmemtrace.bpf.c
 *   does (busy flag, age check, a ring of singles for an event that finds the buffer busy).
 *   No attribution (memcg, task, context level), no cache lookup, no live map, no twin.
 *   probe_floor.py runs it with nobody reading the ring (`floor_batch`: the ring fills and
 *   refuses, which is the cheapest case) and with a consumer that drains it the way
 *   kmemtrace's drain loop does and discards the records (`floor_drain`: the least a
 *   recorder that delivers every event to user space can cost).
 */
#include "kmemtrace.h"

#ifndef BPF_RB_NO_WAKEUP
#define BPF_RB_NO_WAKEUP 1
#endif
#define FLOOR_BARRIER() asm volatile("" ::: "memory")
#define FLOOR_BATCH_AGE_NS 20000000ull /* BATCH_AGE_NS in kmemtrace/record/recorder.py */

struct floor_rec {
	u64 ts_ns;
	u64 ptr;
	u64 pad[3];
};

BPF_RINGBUF_OUTPUT(floor_ring_buf, 8192);

int floor_empty(struct bpf_raw_tracepoint_args *ctx)
{
	return 0;
}

int floor_ring(struct bpf_raw_tracepoint_args *ctx)
{
	struct floor_rec *r = floor_ring_buf.ringbuf_reserve(sizeof(*r));
	if (!r)
		return 0;
	r->ts_ns = bpf_ktime_get_ns();
	r->ptr = ctx->args[1];
	floor_ring_buf.ringbuf_submit(r, BPF_RB_NO_WAKEUP);
	return 0;
}

/* The batch ring has the recorder's size (RING_PAGES, 32 MiB), its singles ring too
 * (SINGLES_PAGES: 4 MiB). [0]: events the rings refused, [1]: events sent as singles. */
BPF_RINGBUF_OUTPUT(floor_batches, 8192);
BPF_RINGBUF_OUTPUT(floor_singles, 1024);
BPF_PERCPU_ARRAY(floor_counts, u64, 2);

struct floor_stage {
	u32 busy;
	u32 pad;
	u64 first_ts;
	struct kmt_batch b;
};
BPF_PERCPU_ARRAY(floor_stage, struct floor_stage, 1);

static __always_inline void floor_count(u32 slot, u64 n)
{
	u64 *c = floor_counts.lookup(&slot);
	if (c)
		*c += n;
}

static __always_inline void floor_fill(struct kmt_event *e, u64 ts, u64 ptr)
{
	e->ts_ns = ts;
	e->ptr = ptr;
	e->memcg_id = 0;
	e->pid = 0;
	e->gfp = 0;
	e->size_kind = 0;
	e->cache_idx = 0;
	e->cpu = bpf_get_smp_processor_id();
}

int floor_batch(struct bpf_raw_tracepoint_args *ctx)
{
	u64 ts = bpf_ktime_get_ns();
	u32 zero = 0;
	struct floor_stage *st = floor_stage.lookup(&zero);
	if (!st || st->busy) {
		struct kmt_event *e = floor_singles.ringbuf_reserve(sizeof(*e));
		if (!e) {
			floor_count(0, 1);
			return 0;
		}
		floor_fill(e, ts, ctx->args[1]);
		floor_singles.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
		floor_count(1, 1);
		return 0;
	}
	st->busy = 1;
	FLOOR_BARRIER();
	u32 i = st->b.count & (KMT_BATCH - 1);
	if (i == 0)
		st->first_ts = ts;
	floor_fill(&st->b.ev[i], ts, ctx->args[1]);
	st->b.count = i + 1;
	if (i + 1 == KMT_BATCH || ts - st->first_ts >= FLOOR_BATCH_AGE_NS) {
		if (floor_batches.ringbuf_output(&st->b, sizeof(st->b), BPF_RB_NO_WAKEUP))
			floor_count(0, i + 1);
		st->b.count = 0;
	}
	FLOOR_BARRIER();
	st->busy = 0;
	return 0;
}
