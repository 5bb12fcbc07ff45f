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
 */
#ifndef BPF_RB_NO_WAKEUP
#define BPF_RB_NO_WAKEUP 1
#endif

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
