// SPDX-License-Identifier: GPL-2.0
/*
 * kmemtrace.bpf.c: slab and memcg events for `kmemtrace record`, compiled by BCC.
 *
 * Everything version-specific arrives as -D macros computed by kmemtrace/record/ from the
 * running kernel (BTF offsets, which probes exist, the filter mode), so this file never
 * dereferences a kernel struct through the (possibly mismatched) installed headers.
 *
 * Required macros: KMT_OFF_CACHE_{NAME,SIZE,FLAGS,OO,OBJECT_SIZE}, KMT_SLAB_ACCOUNT,
 * KMT_GFP_ACCOUNT, KMT_MEMCG_ROOT, KMT_RING_PAGES, KMT_SINGLES_PAGES, KMT_BATCH_AGE_NS,
 * KMT_CTL_PAGES, KMT_LIVE_MAX, KMT_MAX_CACHES,
 * KMT_OFF_TASK_TGID, KMT_OFF_CSS_CGROUP, KMT_OFF_CGROUP_KN, KMT_OFF_KN_ID,
 * KMT_OFF_CGROUP_{ROOT,LEVEL,SELF},
 * KMT_OFF_ROOT_HIERARCHY_ID, KMT_OFF_CSS_PARENT, and either KMT_CGROUP_V2 or
 * KMT_OFF_TASK_CGROUPS, KMT_OFF_CSSSET_SUBSYS, KMT_MEMORY_CGRP_ID.
 * Optional: KMT_TASK_BTF, KMT_ALL_OBJECTS, KMT_FILTER_CGROUP (with KMT_SUBTREE_MAX, KMT_FOLLOW_MAX),
 * KMT_FOLLOW_TASKS, KMT_MEMCG_FREE_PROBE, KMT_PERF, KMT_TP_<EVENT> per cgroup tracepoint,
 * the event-context reader (KMT_PCPU_PREEMPT_COUNT with KMT_PCPU_RUNQUEUES, KMT_OFF_TASK_CFS_RQ,
 * KMT_OFF_CFS_RQ_RQ, KMT_OFF_RQ_CPU), remote charging (KMT_OFF_TASK_ACTIVE_MEMCG,
 * KMT_PCPU_INT_ACTIVE_MEMCG, KMT_OFF_MEMCG_CSS), page-cache records (KMT_PAGE_CACHE with
 * KMT_PC_PAGES, KMT_PC_MAX, KMT_OFF_FOLIO_{FLAGS,MEMCG_DATA,NR_PAGES}, KMT_PG_HEAD,
 * KMT_MEMCG_DATA_{KMEM,FLAGS_MASK}, KMT_OFF_MEMCG_CSS),
 * and per lifecycle event (KMT_MEMCG_OFFLINE, KMT_MEMCG_FREE, KMT_CACHE_DESTROY, KMT_FREE_BULK)
 * a _TP (lab/patches tracepoint) or _FENTRY suffix: those handlers attach themselves when
 * BCC loads the program, so they exist only when the attach plan chose them. The kprobe and
 * raw-tracepoint handlers are plain functions, attached (or not) from user space.
 */
#include <uapi/linux/ptrace.h>
#include "kmemtrace.h"

#ifndef BPF_RB_NO_WAKEUP
#define BPF_RB_NO_WAKEUP 1
#endif
#ifndef EEXIST
#define EEXIST 17
#endif

#ifdef KMT_PERF
BPF_PERF_OUTPUT(events);
BPF_PERF_OUTPUT(ctl);
#else
/* Batches of slab events (struct kmt_batch), and the events that could not be staged. */
BPF_RINGBUF_OUTPUT(events, KMT_RING_PAGES);
BPF_RINGBUF_OUTPUT(singles, KMT_SINGLES_PAGES);
/* memcg life-cycle records: sized in user space for bursts of >= 10 000 memcg creations and
 * removals per second (several records each) while the drain loop is busy elsewhere. */
BPF_RINGBUF_OUTPUT(ctl, KMT_CTL_PAGES);
#endif

BPF_HASH(caches, u64, struct kmt_cache, KMT_MAX_CACHES);
/* The same entries by dense index, never deleted: `caches` forgets a cache at its destroy
 * (its address may be reused), and user space, reading this table later, must still name
 * the CACHE_CREATE and CACHE_DESTROY records of a cache that lived only briefly. */
BPF_ARRAY(cache_by_idx, struct kmt_cache, KMT_MAX_CACHES + 4);
/* Dense cache indices are claimed by an atomic BPF_NOEXIST insert into cache_slots:
 * BCC cannot use the return value of __sync_fetch_and_add (no BPF_FETCH with its -mcpu). */
BPF_HASH(cache_slots, u32, u64, KMT_MAX_CACHES);
BPF_ARRAY(cache_seq, u32, 1);
BPF_PERCPU_ARRAY(lost, u64, KMT_NR_LOST);
/* Twin programs of the free tracepoints (see KMT_TWIN): per CPU, tracepoint and context
 * level, the pointer the main program saw last; and how many events the twins took over. */
#define KMT_LEVELS 4 /* task, softirq, hardirq, NMI */
struct kmt_nest {
	u64 ptr[KMT_LEVELS];
};
BPF_PERCPU_ARRAY(seen, struct kmt_nest, KMT_NR_TWINS);
BPF_PERCPU_ARRAY(rescued, u64, KMT_NR_TWINS);
#ifndef KMT_ALL_OBJECTS
/* Live accounted objects: ptr -> cache_idx. Only frees of these are emitted. */
BPF_HASH(live, u64, u32, KMT_LIVE_MAX);
#endif
BPF_PERCPU_ARRAY(lc_lost, u64, KMT_NR_LC_LOST);
#ifdef KMT_FILTER_CGROUP
/* memcg ids whose tasks are recorded: user space puts in the initial subtree, the kernel adds
 * each child at its mkdir (and, with KMT_FOLLOW_TASKS, every memcg a followed task creates or
 * moves into) and removes a memcg at its last life-cycle event. */
BPF_HASH(subtree, u64, u8, KMT_SUBTREE_MAX);
/* thread ids whose cgroup mkdirs join the subtree: the recorder itself while it makes the
 * --in-memcg memcg and, with KMT_FOLLOW_TASKS, the workload's tasks and their descendants. */
BPF_HASH(followed, u32, u8, KMT_FOLLOW_MAX);
#endif

/* Stop the compiler from moving stores across a busy flag's set and clear. */
#define KMT_BARRIER() asm volatile("" ::: "memory")

static __always_inline void count_lost_n(int reason, u64 n)
{
	u64 *c = lost.lookup(&reason);
	if (c)
		*c += n;
}

static __always_inline void count_lost(int reason)
{
	count_lost_n(reason, 1);
}

static __always_inline u64 read_u64(u64 addr)
{
	u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (void *)addr);
	return v;
}

/* bpf_get_current_task_btf() (5.11+; BCC 0.26 does not declare it, so KMT_TASK_BTF is its
 * helper number, from the kernel's BTF): a task pointer the verifier knows the type of, so
 * a chain of pointers from it is plain loads checked against BTF, not one
 * bpf_probe_read_kernel() call each. */
#ifdef KMT_TASK_BTF
static u64 (*kmt_current_task_btf)(void) = (void *)KMT_TASK_BTF;
#define KMT_LOAD(p, off) (*(u64 *)((p) + (off)))
#endif

/* The current task, fetched once per event and handed to what reads it (its tgid, its
 * memcg, its remote-charging memcg): a BTF-typed pointer where the kernel has one, so that
 * the reads below are plain loads. */
#ifdef KMT_TASK_BTF
static __always_inline u64 kmt_task(void)
{
	return kmt_current_task_btf();
}
#else
static __always_inline u64 kmt_task(void)
{
	return bpf_get_current_task();
}
#endif

/* The tgid of `task` (= current): a BTF load where the task pointer has a type (cheaper than
 * the bpf_get_current_pid_tgid() call, which the JIT does not inline), else that helper. */
static __always_inline u32 task_tgid(u64 task)
{
#ifdef KMT_TASK_BTF
	return *(u32 *)((char *)task + KMT_OFF_TASK_TGID);
#else
	return bpf_get_current_pid_tgid() >> 32;
#endif
}

static __always_inline u32 current_tgid(void)
{
	return task_tgid(kmt_task());
}

/* The memcg `task` (= current) is in: its id is the memcg directory's inode number.
 * Measured with benchmarks/probe_floor.py (eventfd hammer, 6.18 VM): BTF loads instead of
 * five probe reads took kmemtrace's BPF time per event from 392 to 254 ns. */
static __always_inline u64 task_memcg_id(u64 task)
{
#ifdef KMT_CGROUP_V2
	return bpf_get_current_cgroup_id();
#elif defined(KMT_TASK_BTF)
	char *p = (char *)task;
	p = (char *)KMT_LOAD(p, KMT_OFF_TASK_CGROUPS);
	p = (char *)KMT_LOAD(p, KMT_OFF_CSSSET_SUBSYS + 8 * KMT_MEMORY_CGRP_ID);
	p = (char *)KMT_LOAD(p, KMT_OFF_CSS_CGROUP);
	p = (char *)KMT_LOAD(p, KMT_OFF_CGROUP_KN);
	return KMT_LOAD(p, KMT_OFF_KN_ID);
#else
	u64 p = read_u64(task + KMT_OFF_TASK_CGROUPS);
	p = read_u64(p + KMT_OFF_CSSSET_SUBSYS + 8 * KMT_MEMORY_CGRP_ID);
	p = read_u64(p + KMT_OFF_CSS_CGROUP);
	p = read_u64(p + KMT_OFF_CGROUP_KN);
	return read_u64(p + KMT_OFF_KN_ID);
#endif
}

static __always_inline u64 current_memcg_id(void)
{
	return task_memcg_id(kmt_task());
}

/* --- event context: which of task / softirq / hardirq / NMI the tracepoint fired in ---
 * The preempt count says it, but it is a per-CPU variable (__preempt_count, or
 * pcpu_hot.preempt_count on 6.2-6.14 x86) and data symbols are often absent from kallsyms.
 * BTF gives every per-CPU variable's offset in .data..percpu, so one reachable per-CPU
 * object locates them all: this CPU's runqueue, reached as current->se.cfs_rq->rq (and
 * checked by rq->cpu). Its address minus the runqueues offset is cached per CPU. */
#ifdef KMT_PCPU_PREEMPT_COUNT
/* include/linux/preempt.h: stable masks (NMI had 1 bit before 5.10, inside this mask) */
#define KMT_PC_SOFTIRQ_OFFSET 0x00000100u /* serving a softirq, not just BH-disabled */
#define KMT_PC_HARDIRQ_MASK 0x000f0000u
#define KMT_PC_NMI_MASK 0x00f00000u

BPF_PERCPU_ARRAY(pcpu_base, u64, 1);

static __always_inline u64 pcpu_area(void)
{
	int zero = 0;
	u64 *base = pcpu_base.lookup(&zero);
	if (!base)
		return 0;
	if (*base)
		return *base;
	u64 rq = read_u64(read_u64(bpf_get_current_task() + KMT_OFF_TASK_CFS_RQ) + KMT_OFF_CFS_RQ_RQ);
	u32 cpu = ~0u;
	bpf_probe_read_kernel(&cpu, sizeof(cpu), (void *)(rq + KMT_OFF_RQ_CPU));
	if (!rq || cpu != bpf_get_smp_processor_id())
		return 0;
	*base = rq - KMT_PCPU_RUNQUEUES;
	return *base;
}

static __always_inline u32 event_ctx(u64 area)
{
	u32 pc;
	if (!area || bpf_probe_read_kernel(&pc, sizeof(pc), (void *)(area + KMT_PCPU_PREEMPT_COUNT)))
		return KMT_CTX_UNKNOWN;
	if (pc & KMT_PC_NMI_MASK)
		return KMT_CTX_NMI;
	if (pc & KMT_PC_HARDIRQ_MASK)
		return KMT_CTX_HARDIRQ;
	return pc & KMT_PC_SOFTIRQ_OFFSET ? KMT_CTX_SOFTIRQ : KMT_CTX_TASK;
}
#else
static __always_inline u64 pcpu_area(void) { return 0; }
static __always_inline u32 event_ctx(u64 area) { return KMT_CTX_UNKNOWN; }
#endif

/* The memcg an allocation is charged to: the remote one set by set_active_memcg() if any
 * (current->active_memcg in a task, int_active_memcg in an interrupt), else the task's. An
 * interrupt-context allocation with no remote memcg is not charged at all: the trace keeps
 * the interrupted task's memcg and says ctx = softirq/hardirq, and replay decides. */
static __always_inline u64 charged_memcg_id(u64 area, u32 ectx, u64 task)
{
#if defined(KMT_OFF_TASK_ACTIVE_MEMCG) && defined(KMT_PCPU_PREEMPT_COUNT)
	u64 memcg = 0;
	if (ectx == KMT_CTX_TASK)
#ifdef KMT_TASK_BTF
		memcg = KMT_LOAD((char *)task, KMT_OFF_TASK_ACTIVE_MEMCG);
#else
		memcg = read_u64(task + KMT_OFF_TASK_ACTIVE_MEMCG);
#endif
	else if (ectx != KMT_CTX_UNKNOWN)
		memcg = read_u64(area + KMT_PCPU_INT_ACTIVE_MEMCG);
	if (memcg) {
		u64 kn = read_u64(read_u64(memcg + KMT_OFF_MEMCG_CSS + KMT_OFF_CSS_CGROUP) +
				  KMT_OFF_CGROUP_KN);
		return read_u64(kn + KMT_OFF_KN_ID);
	}
#endif
	return task_memcg_id(task);
}

/* A fresh dense index for cache `s`, or 0 if four candidates were all taken. */
static __always_inline u32 claim_cache_idx(u64 s)
{
	int zero = 0;
	u32 *seq = cache_seq.lookup(&zero);
	if (!seq)
		return 0;
	u32 cand = *seq + 1;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (cache_slots.insert(&cand, &s) == 0) {
			*seq = cand; /* a stale store only costs a later claimer a retry */
			return cand;
		}
		cand++;
	}
	return 0;
}

/* Cache info by kmem_cache pointer, registered (with a dense index) on first sight. */
static __always_inline struct kmt_cache *cache_info(u64 s)
{
	struct kmt_cache *c = caches.lookup(&s);
	if (c)
		return c;
	struct kmt_cache fresh = {};
	fresh.idx = claim_cache_idx(s);
	if (!fresh.idx)
		return 0;
	bpf_probe_read_kernel(&fresh.size, sizeof(fresh.size), (void *)(s + KMT_OFF_CACHE_SIZE));
	bpf_probe_read_kernel(&fresh.flags, sizeof(fresh.flags), (void *)(s + KMT_OFF_CACHE_FLAGS));
	bpf_probe_read_kernel(&fresh.oo, sizeof(fresh.oo), (void *)(s + KMT_OFF_CACHE_OO));
	bpf_probe_read_kernel(&fresh.object_size, sizeof(fresh.object_size),
			      (void *)(s + KMT_OFF_CACHE_OBJECT_SIZE));
	bpf_probe_read_kernel_str(fresh.name, sizeof(fresh.name),
				  (void *)read_u64(s + KMT_OFF_CACHE_NAME));
	cache_by_idx.update(&fresh.idx, &fresh);
	caches.insert(&s, &fresh); /* a racing CPU may win: use whatever is stored */
	return caches.lookup(&s);
}

/* Per-CPU memo of cache_info(): every alloc (and, recording everything, every free) needs
 * its cache's index, size and flags, and a hash lookup of `caches` was one of the larger
 * costs of the hot path (benchmarks/probe_floor.py, docs/recording.md). A small direct-mapped
 * table per CPU answers most events with a few loads. What has to hold:
 * (a) Programs nest on a CPU (a softirq free inside a task-level alloc program), so an entry
 *     could be rewritten between a reader's check and its use: the table has a busy flag,
 *     and whoever finds it set takes the hash lookup instead (nesting is last-in first-out,
 *     so test-then-set suffices, as for the staging buffers).
 * (b) A destroyed cache's address can be reused by a new cache: cache_destroy() bumps
 *     `cache_gen`, and an entry of an older generation is a miss. */
#define KMT_MEMO_BITS 6
#define KMT_MEMO (1 << KMT_MEMO_BITS)
struct kmt_memo_ent {
	u64 s;
	u32 gen;
	u32 idx;
	u32 size;
	u32 flags;
};
struct kmt_memo {
	u32 busy;
	u32 pad;
	struct kmt_memo_ent e[KMT_MEMO];
};
BPF_PERCPU_ARRAY(cache_memo, struct kmt_memo, 1);
BPF_ARRAY(cache_gen, u32, 1);

/* What the hot path needs of a cache: filled from the memo, else from cache_info(). */
struct kmt_cache_ref {
	u32 idx;
	u32 size;
	u32 flags;
};

/* The memo slot of cache `s`: Fibonacci hashing, the top bits of s * 2^64/phi, which depend
 * on every bit of the address. The shift-xor hash before it, ((s >> 6) ^ (s >> 14)) % 64,
 * put the second- and seventh-busiest caches of slab_hammer mix in one slot: they evicted
 * each other, and up to ~8 % of the cache events paid a `caches` hash lookup; this one
 * leaves up to 0.4 % (events of the caches that lose a shared slot, counted per kmem_cache
 * pointer by a raw-tracepoint program, 6.18 VM). */
static __always_inline u32 memo_slot(u64 s)
{
	return (s * 0x9E3779B97F4A7C15ull) >> (64 - KMT_MEMO_BITS);
}

/* 1 and *ref filled if cache `s` is known (or was just registered), else 0. */
static __always_inline int cache_ref(u64 s, struct kmt_cache_ref *ref)
{
	int zero = 0;
	struct kmt_memo *t = cache_memo.lookup(&zero);
	u32 *gen = cache_gen.lookup(&zero);
	if (!t || !gen || t->busy) {
		struct kmt_cache *c = cache_info(s);
		if (!c)
			return 0;
		ref->idx = c->idx;
		ref->size = c->size;
		ref->flags = c->flags;
		return 1;
	}
	t->busy = 1;
	KMT_BARRIER();
	u32 g = *gen;
	struct kmt_memo_ent *m = &t->e[memo_slot(s)];
	int found = 1;
	if (m->s == s && m->gen == g) {
		ref->idx = m->idx;
		ref->size = m->size;
		ref->flags = m->flags;
	} else {
		struct kmt_cache *c = cache_info(s);
		if (c) {
			ref->idx = m->idx = c->idx;
			ref->size = m->size = c->size;
			ref->flags = m->flags = c->flags;
			m->gen = g;
			m->s = s;
		} else {
			found = 0;
		}
	}
	KMT_BARRIER();
	t->busy = 0;
	return found;
}

static __always_inline void fill(struct kmt_event *e, u64 ts, u64 ptr, u64 memcg, u32 pid,
				 u32 gfp, u32 size, u32 kind, u32 cache_idx, u32 ectx)
{
	e->ts_ns = ts;
	e->ptr = ptr;
	e->memcg_id = memcg;
	e->pid = pid;
	e->gfp = gfp;
	e->size_kind = (size > KMT_SIZE_MASK ? KMT_SIZE_MASK : size) | kind << KMT_KIND_SHIFT |
		       ectx << KMT_CTX_SHIFT;
	e->cache_idx = cache_idx;
	e->cpu = bpf_get_smp_processor_id();
}

#ifdef KMT_PERF
/* The perf-buffer fallback (kernels before 5.8): one record per event, as it always was. */
static __always_inline int emit(void *ctx, u64 ptr, u64 memcg, u32 pid, u32 gfp, u32 size,
				u32 kind, u32 cache_idx, u32 ectx)
{
	struct kmt_event ev = {};
	fill(&ev, bpf_ktime_get_ns(), ptr, memcg, pid, gfp, size, kind, cache_idx, ectx);
	if (events.perf_submit(ctx, &ev, sizeof(ev)))
		count_lost(KMT_LOST_RINGBUF);
	return 0;
}
#else
/* --- Per-CPU batches ---
 * One ring record per event costs every event a reservation under the ring's spinlock,
 * which both CPUs contend for, and a commit. Instead each event is written into a per-CPU
 * staging buffer and a whole batch of KMT_BATCH events goes to the ring in one
 * bpf_ringbuf_output(). What has to hold:
 * (a) Programs of different tracepoints nest on one CPU (a softirq free inside a task-level
 *     kmalloc program), so there is one staging buffer per context level (task, softirq,
 *     hardirq, NMI: event_ctx()); events of one level never nest, and tracepoint programs run
 *     with preemption off, so a level's buffer has one writer at a time. The `busy` flag
 *     guards what the levels cannot: the flush program (below) runs in an IPI and may
 *     interrupt a writer, and without the context reader every event is "level 0". Whoever
 *     finds a buffer busy emits its event alone to the `singles` ring instead: nothing waits
 *     and nothing is dropped. (Nesting is strictly last-in first-out on a CPU, so a plain
 *     test-then-set is enough: an interrupt between the two runs to completion first.)
 * (b) A batch never sits for long: it is handed over when full, or by the event that finds
 *     the batch's first event older than KMT_BATCH_AGE_NS (its own timestamp says so). An
 *     idle CPU has no such event, so user space runs kmt_flush on every CPU periodically and
 *     at stop (BPF_PROG_TEST_RUN with BPF_F_TEST_RUN_ON_CPU), which hands over every batch
 *     older than the age it is given and skips busy buffers (it returns how many it skipped).
 * (c) Loss stays exact: a batch the ring refuses counts all of its events as RINGBUF lost.
 * (d) The ring holds only whole struct kmt_batch records (count in use), all of one size, so
 *     user space views a ring span as one numpy array (kmemtrace/record/ring.py).
 * (e) The twins stage like the main programs, at their own (higher) level; rare paths that
 *     would rather not (free_bulk's loop) write to `singles` directly. */
struct kmt_stage {
	u32 busy;
	u32 pad;
	u64 first_ts;        /* ts_ns of ev[0] */
	struct kmt_batch b;
};
BPF_PERCPU_ARRAY(stage, struct kmt_stage, KMT_LEVELS);


static __always_inline void stage_flush(struct kmt_stage *st)
{
	u32 n = st->b.count;
	if (events.ringbuf_output(&st->b, sizeof(st->b), BPF_RB_NO_WAKEUP))
		count_lost_n(KMT_LOST_RINGBUF, n);
	st->b.count = 0;
}

static __always_inline int emit_single(u64 ts, u64 ptr, u64 memcg, u32 pid, u32 gfp, u32 size,
				       u32 kind, u32 cache_idx, u32 ectx)
{
	struct kmt_event *e = singles.ringbuf_reserve(sizeof(struct kmt_event));
	if (!e) {
		count_lost(KMT_LOST_RINGBUF);
		return 0;
	}
	fill(e, ts, ptr, memcg, pid, gfp, size, kind, cache_idx, ectx);
	singles.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

static __always_inline int emit(void *ctx, u64 ptr, u64 memcg, u32 pid, u32 gfp, u32 size,
				u32 kind, u32 cache_idx, u32 ectx)
{
	u64 ts = bpf_ktime_get_ns();
	u32 level = ectx ? ectx - 1 : 0;
	struct kmt_stage *st = stage.lookup(&level);
	if (!st || st->busy)
		return emit_single(ts, ptr, memcg, pid, gfp, size, kind, cache_idx, ectx);
	st->busy = 1;
	KMT_BARRIER();
	u32 i = st->b.count & (KMT_BATCH - 1); /* always < KMT_BATCH: a full batch is gone */
	if (i == 0)
		st->first_ts = ts;
	fill(&st->b.ev[i], ts, ptr, memcg, pid, gfp, size, kind, cache_idx, ectx);
	st->b.count = i + 1;
	if (i + 1 == KMT_BATCH || ts - st->first_ts >= KMT_BATCH_AGE_NS)
		stage_flush(st);
	KMT_BARRIER();
	st->busy = 0;
	return 0;
}

/* Run by user space on one CPU through BPF_PROG_TEST_RUN (never attached): hand over this
 * CPU's batches whose first event is at least args[0] ns old (0: all). Returns the number
 * of non-empty buffers it had to skip because a program was writing them. */
int kmt_flush(struct bpf_raw_tracepoint_args *ctx)
{
	u64 min_age = ctx->args[0];
	u64 now = bpf_ktime_get_ns();
	int skipped = 0;
#pragma unroll
	for (u32 l = 0; l < KMT_LEVELS; l++) {
		u32 level = l;
		struct kmt_stage *st = stage.lookup(&level);
		if (!st || !st->b.count || now - st->first_ts < min_age)
			continue;
		if (st->busy) {
			skipped++;
			continue;
		}
		st->busy = 1;
		KMT_BARRIER();
		stage_flush(st);
		KMT_BARRIER();
		st->busy = 0;
	}
	return skipped;
}
#endif

/* Rare events (cache creation and destruction) skip the batches: their probes stay attached
 * after the slab tracepoints are detached and the batches flushed for the last time. */
static __always_inline int emit_rare(void *ctx, u64 ptr, u64 memcg, u32 size, u32 kind,
				     u32 cache_idx, u32 ectx)
{
#ifdef KMT_PERF
	return emit(ctx, ptr, memcg, current_tgid(), 0, size, kind, cache_idx, ectx);
#else
	return emit_single(bpf_ktime_get_ns(), ptr, memcg, current_tgid(), 0, size, kind,
			   cache_idx, ectx);
#endif
}

/* An allocation passed the accounting filter: filter by subtree, remember it, emit it. */
static __always_inline int on_alloc(void *ctx, u64 ptr, u32 gfp, u32 size, u32 kind,
				    u32 cache_idx)
{
	u64 area = pcpu_area();
	u32 ectx = event_ctx(area);
	u64 task = kmt_task();
	u64 memcg = charged_memcg_id(area, ectx, task);
#ifdef KMT_FILTER_CGROUP
	if (!subtree.lookup(&memcg))
		return 0;
#endif
#ifndef KMT_ALL_OBJECTS
	/* The kernel never hands out a live object: if the address is still in `live`, a FREE
	 * of it reached no program of ours (the twins cover recursion; the residue has no
	 * counter in the kernel). Count it, so that the loss is never silent. */
	long rc = live.insert(&ptr, &cache_idx);
	if (rc == -EEXIST) {
		count_lost(KMT_LOST_FREE_UNSEEN);
		rc = live.update(&ptr, &cache_idx);
	}
	if (rc)
		count_lost(KMT_LOST_LIVE_MAP);
#endif
	return emit(ctx, ptr, memcg, task_tgid(task), gfp, size, kind, cache_idx, ectx);
}

/* A free: emitted when recording everything, else only for a live accounted object. */
static __always_inline int on_free(void *ctx, u64 ptr, u32 cache_idx, u32 ectx)
{
	if (ptr < 4096) /* NULL and ZERO_SIZE_PTR */
		return 0;
#ifndef KMT_ALL_OBJECTS
	u32 *known = live.lookup(&ptr);
	if (!known)
		return 0;
	if (!cache_idx)
		cache_idx = *known;
	live.delete(&ptr);
#endif
	return emit(ctx, ptr, 0, current_tgid(), 0, 0, KMT_K_FREE, cache_idx, ectx);
}

/* kmem:kmem_cache_alloc, TP_PROTO(call_site, ptr, struct kmem_cache *s, gfp, node) */
int kmt_cache_alloc(struct bpf_raw_tracepoint_args *ctx)
{
	u64 ptr = ctx->args[1];
	u32 gfp = ctx->args[3];
	if (!ptr)
		return 0;
	struct kmt_cache_ref c;
	if (!cache_ref(ctx->args[2], &c))
		return 0;
	if (c.flags & KMT_SLAB_ACCOUNT)
		gfp |= KMT_GFP_ACCOUNT;
#ifndef KMT_ALL_OBJECTS
	if (!(gfp & KMT_GFP_ACCOUNT))
		return 0;
#endif
	return on_alloc(ctx, ptr, gfp, c.size, KMT_K_ALLOC, c.idx);
}

/* Nested frees. The kernel runs a raw-tracepoint program at most once per CPU at a time
 * (__bpf_trace_run): a free by an RCU callback or softirq that interrupts kmt_cache_free is
 * skipped and only counted in the program's recursion_misses (8-23 % of sock_inode_cache
 * frees under socket churn). So each free tracepoint has two programs, run one after the
 * other for every event. The main one notes the pointer under its context level (task,
 * softirq, hardirq, NMI: events of one level never nest on a CPU); its twin looks for that
 * note: the pointer is there, the main program saw the event, and the twin clears the
 * note; it is not, the kernel skipped the main program because it was running at a lower
 * level, and the twin handles the event and counts it in `rescued`.
 * Notes of higher levels are cleared by the main program, since no event of a higher level
 * can be in progress when it starts: a note left by a twin that was itself skipped cannot
 * outlive the next free. One level of nesting is covered (task > softirq > hardirq skips
 * both); user space reports the rest as LOST NESTED = main's recursion_misses - rescued.
 * It needs the context reader: without it, no twins, and every miss is reported. */
#ifdef KMT_PCPU_PREEMPT_COUNT
static __always_inline void nest_note(int slot, u64 ptr, u32 ectx)
{
	struct kmt_nest *st = seen.lookup(&slot);
	if (!st)
		return;
	u32 level = ectx ? ectx - 1 : 0;
#pragma unroll
	for (int l = 0; l < KMT_LEVELS; l++) {
		if (l == level)
			st->ptr[l] = ptr;
		else if (l > level)
			st->ptr[l] = 0;
	}
}

/* The twin's test: 1 if the main program missed this event (then it is counted rescued).
 * The note is looked for at every level, so that the common case (found) costs no read of
 * the preempt count: a note of this pointer at another level would be a stale one, from a
 * previous life of the object, and that the main program clears at its next run below. */
static __always_inline int nest_missed(int slot, u64 ptr)
{
	struct kmt_nest *st = seen.lookup(&slot);
	if (!st)
		return 0;
#pragma unroll
	for (int l = 0; l < KMT_LEVELS; l++) {
		if (st->ptr[l] == ptr) {
			st->ptr[l] = 0;
			return 0;
		}
	}
	u64 *n = rescued.lookup(&slot);
	if (n)
		(*n)++;
	return 1;
}

/* (BCC rewrites map calls only outside macros: the helpers above hold them.) */
#define KMT_TWIN(name, slot, handle)                                        \
	int name(struct bpf_raw_tracepoint_args *ctx)                       \
	{                                                                   \
		u32 ectx = event_ctx(pcpu_area());                          \
		nest_note(slot, ctx->args[1], ectx);                        \
		handle(ctx, ectx);                                          \
		return 0;                                                   \
	}                                                                   \
	int name##_nested(struct bpf_raw_tracepoint_args *ctx)              \
	{                                                                   \
		if (nest_missed(slot, ctx->args[1]))                        \
			handle(ctx, event_ctx(pcpu_area()));                \
		return 0;                                                   \
	}
#else
#define KMT_TWIN(name, slot, handle)                                        \
	int name(struct bpf_raw_tracepoint_args *ctx)                       \
	{                                                                   \
		handle(ctx, KMT_CTX_UNKNOWN);                               \
		return 0;                                                   \
	}
#endif

/* kmem:kmem_cache_free, TP_PROTO(call_site, ptr, const struct kmem_cache *s).
 * Recording everything, the cache is registered here too, not only at its first
 * allocation: a cache that only frees while recording (TIME_WAIT sockets of earlier
 * connections expiring: tw_sock_TCP went from 263 slabs to 17 in one run) otherwise gave
 * frees of unknown cache, which no allocation's slab page could name, and the replay kept
 * those objects alive. Recording accounted objects only, the `live` map already holds the
 * cache of the few frees that are emitted, so no cache lookup is paid on every free of the
 * system. */
static __always_inline void on_cache_free(struct bpf_raw_tracepoint_args *ctx, u32 ectx)
{
#ifdef KMT_ALL_OBJECTS
	struct kmt_cache_ref c = {};
	cache_ref(ctx->args[2], &c);
	on_free(ctx, ctx->args[1], c.idx, ectx);
#else
	on_free(ctx, ctx->args[1], 0, ectx);
#endif
}
KMT_TWIN(kmt_cache_free, KMT_TP_CACHE_FREE, on_cache_free)

/* kmem:kmalloc, TP_PROTO(call_site, ptr, bytes_req, bytes_alloc, gfp[, node]) */
int kmt_kmalloc(struct bpf_raw_tracepoint_args *ctx)
{
	u64 ptr = ctx->args[1];
	u32 gfp = ctx->args[4];
	if (!ptr)
		return 0;
#ifndef KMT_ALL_OBJECTS
	if (!(gfp & KMT_GFP_ACCOUNT))
		return 0;
#endif
	return on_alloc(ctx, ptr, gfp, ctx->args[3], KMT_K_KMALLOC, 0);
}

/* kmem:kfree, TP_PROTO(call_site, ptr) */
static __always_inline void on_kfree(struct bpf_raw_tracepoint_args *ctx, u32 ectx)
{
	on_free(ctx, ctx->args[1], 0, ectx);
}
KMT_TWIN(kmt_kfree, KMT_TP_KFREE, on_kfree)

/* --- lifecycle events: one body each, entered from a kprobe, fentry or raw tracepoint ---
 * fentry handlers declare pointer arguments as u64: offsets come from BTF (-D macros), not
 * from the headers, exactly as for the kprobes. */

/* kmem_cache_free_bulk(s, size, void **p): frees that no tracepoint reports. kfree_rcu
 * batches arrive here (s = NULL: cache unknown, as for kfree). The 6.1 verifier cannot prune
 * inside a loop it is still exploring, so a branch in a loop body multiplies its work: an
 * unrolled walk calling on_free() fails ("sequence of 8193 jumps is too complex"), and so do
 * a bounded loop with early exit (each exit re-explores what follows: E2BIG) and bpf_loop()
 * (BCC cannot pass it a callback). Hence two loops: the first has no branch at all (it
 * walks all KMT_BULK_MAX slots, masking those past n, and keeps the pointers that were
 * live), the second's only branch leaves it. Objects past KMT_BULK_MAX go unseen. */
#define KMT_BULK_MAX 128 /* a power of two: indices are masked, not checked */

struct kmt_bulk {
	u64 ptrs[KMT_BULK_MAX];
};
BPF_PERCPU_ARRAY(bulk_scratch, struct kmt_bulk, 1);

static __always_inline int free_bulk(void *ctx, u64 s, u64 n, u64 p)
{
	int zero = 0;
	struct kmt_bulk *buf = bulk_scratch.lookup(&zero);
	if (!buf)
		return 0;
	struct kmt_cache *c = caches.lookup(&s);
	struct kmt_event ev = {.size_kind = KMT_K_FREE << KMT_KIND_SHIFT |
					    event_ctx(pcpu_area()) << KMT_CTX_SHIFT,
			       .cache_idx = c ? c->idx : 0};
	ev.pid = bpf_get_current_pid_tgid() >> 32;
	ev.cpu = bpf_get_smp_processor_id();
	u64 kept = 0, failed = 0;
#pragma clang loop unroll(disable)
	for (u64 i = 0; i < KMT_BULK_MAX; i++) {
		u64 valid = (i - n) >> 63; /* 1 while i < n: arithmetic, not a branch */
		u64 ptr = read_u64(p + 8 * i) & -valid;
		buf->ptrs[kept & (KMT_BULK_MAX - 1)] = ptr;
#ifdef KMT_ALL_OBJECTS
		kept += valid;
#else
		long gone = live.delete(&ptr); /* 0 if it was live (never for ptr 0), else < 0 */
		kept += 1 + (gone >> 63);
#endif
	}
	/* volatile: else clang turns this into a countdown from `kept` with a moving pointer,
	 * whose bound the verifier cannot see ("invalid access to map value, off=2048") */
	volatile u64 limit = kept;
#pragma clang loop unroll(disable)
	for (int i = 0; i < KMT_BULK_MAX; i++) {
		if (i >= limit)
			break;
		ev.ptr = buf->ptrs[i & (KMT_BULK_MAX - 1)];
		ev.ts_ns = bpf_ktime_get_ns();
#ifdef KMT_PERF
		long rc = events.perf_submit(ctx, &ev, sizeof(ev));
#else
		long rc = singles.ringbuf_output(&ev, sizeof(ev), BPF_RB_NO_WAKEUP);
#endif
		failed += (u64)rc >> 63;
	}
	if (failed) {
		int reason = KMT_LOST_RINGBUF;
		u64 *lost_n = lost.lookup(&reason);
		if (lost_n)
			*lost_n += failed;
	}
	return 0;
}

int kmt_free_bulk(struct pt_regs *ctx)
{
	return free_bulk(ctx, PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx));
}

#ifdef KMT_FREE_BULK_FENTRY
KFUNC_PROBE(kmem_cache_free_bulk, u64 s, u64 n, u64 p)
{
	return free_bulk(ctx, s, n, p);
}
#endif

/* kmem_cache_destroy(s): kmem_cache_destroy(NULL) is legal and common (error paths). */
static __always_inline int cache_destroy(void *ctx, u64 s)
{
	if (!s)
		return 0;
	struct kmt_cache *c = caches.lookup(&s);
	emit_rare(ctx, s, 0, 0, KMT_K_CACHE_DESTROY, c ? c->idx : 0, event_ctx(pcpu_area()));
	caches.delete(&s); /* the address may be reused by a later cache */
	int zero = 0;
	u32 *gen = cache_gen.lookup(&zero);
	if (gen)
		__sync_fetch_and_add(gen, 1); /* every CPU's memo forgets it (cache_ref) */
	return 0;
}

int kmt_cache_destroy(struct pt_regs *ctx)
{
	return cache_destroy(ctx, PT_REGS_PARM1(ctx));
}

/* kmem:kmem_cache_destroy (lab/patches), TP_PROTO(const struct kmem_cache *s) */
int kmt_cache_destroy_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return cache_destroy(ctx, ctx->args[0]);
}

#ifdef KMT_CACHE_DESTROY_FENTRY
KFUNC_PROBE(kmem_cache_destroy, u64 s)
{
	return cache_destroy(ctx, s);
}
#endif

/* return of the era's cache-creation function: the new struct kmem_cache * */
int kmt_cache_create_ret(struct pt_regs *ctx)
{
	u64 s = PT_REGS_RC(ctx);
	if (!s)
		return 0;
	struct kmt_cache *c = cache_info(s);
	return emit_rare(ctx, s, current_memcg_id(), c ? c->size : 0, KMT_K_CACHE_CREATE,
			 c ? c->idx : 0, event_ctx(pcpu_area()));
}

/* --- cgroup events, memory hierarchy only --- */

static __always_inline void lc_count_lost(int reason)
{
	u64 *n = lc_lost.lookup(&reason);
	if (n)
		(*n)++;
}

/* A failed output is counted, never ignored: LOST reason LIFECYCLE_RING. */
static __always_inline void cg_emit(void *ctx, struct kmt_cg_event *ev)
{
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cpu = bpf_get_smp_processor_id();
#ifdef KMT_PERF
	if (ctl.perf_submit(ctx, ev, sizeof(*ev)))
		lc_count_lost(KMT_LC_LOST_RING);
#else
	if (ctl.ringbuf_output(ev, sizeof(*ev), 0))
		lc_count_lost(KMT_LC_LOST_RING);
#endif
}

/* Is memcg `id` recorded? Always, in whole-system mode. */
static __always_inline int recorded(u64 id)
{
#ifdef KMT_FILTER_CGROUP
	return subtree.lookup(&id) != 0;
#else
	return 1;
#endif
}

#ifdef KMT_FILTER_CGROUP
static __always_inline void join_subtree(u64 id)
{
	u8 one = 1;
	if (subtree.update(&id, &one))
		lc_count_lost(KMT_LC_LOST_MAP);
}

static __always_inline void follow(u32 tid)
{
	u8 one = 1;
	if (followed.update(&tid, &one))
		lc_count_lost(KMT_LC_LOST_MAP);
}

static __always_inline int is_followed(u32 tid)
{
	return followed.lookup(&tid) != 0;
}
#endif

/* The last life-cycle event of memcg `id`: it leaves the subtree (ids are never reused). */
static __always_inline void leave_subtree(u64 id)
{
#ifdef KMT_FILTER_CGROUP
	subtree.delete(&id);
#endif
}

/* cgrp->kn->id: the cgroup directory's inode number, which is the memcg id in the trace. */
static __always_inline u64 cgroup_id_of(u64 cgrp)
{
	return read_u64(read_u64(cgrp + KMT_OFF_CGROUP_KN) + KMT_OFF_KN_ID);
}

/* A memcg lifecycle record; id = css->cgroup->kn->id, the memcg directory's inode. */
static __always_inline int memcg_event(void *ctx, u64 css, u8 kind)
{
	struct kmt_cg_event ev = {.kind = kind};
	ev.id = cgroup_id_of(read_u64(css + KMT_OFF_CSS_CGROUP));
	if (!recorded(ev.id))
		return 0;
	if (kind == KMT_CG_FREE)
		leave_subtree(ev.id);
	cg_emit(ctx, &ev);
	return 0;
}

/* mem_cgroup_css_offline(struct cgroup_subsys_state *css), and _free alike */
int kmt_memcg_offline(struct pt_regs *ctx)
{
	return memcg_event(ctx, PT_REGS_PARM1(ctx), KMT_CG_OFFLINE);
}

int kmt_memcg_free(struct pt_regs *ctx)
{
	return memcg_event(ctx, PT_REGS_PARM1(ctx), KMT_CG_FREE);
}

#ifdef KMT_MEMCG_OFFLINE_FENTRY
KFUNC_PROBE(mem_cgroup_css_offline, u64 css)
{
	return memcg_event(ctx, css, KMT_CG_OFFLINE);
}
#endif

#ifdef KMT_MEMCG_FREE_FENTRY
KFUNC_PROBE(mem_cgroup_css_free, u64 css)
{
	return memcg_event(ctx, css, KMT_CG_FREE);
}
#endif

/* memcg:mem_cgroup_css_offline / _free (lab/patches): fields id (= cgroup_id), level */
#define MEMCG_TP(event, KIND)                                               \
	TRACEPOINT_PROBE(memcg, event)                                      \
	{                                                                   \
		struct kmt_cg_event ev = {.kind = KIND};                    \
		ev.id = args->id;                                           \
		if (!recorded(ev.id))                                       \
			return 0;                                           \
		if (KIND == KMT_CG_FREE)                                    \
			leave_subtree(ev.id);                               \
		ev.level = args->level;                                     \
		cg_emit(args, &ev);                                         \
		return 0;                                                   \
	}

#ifdef KMT_MEMCG_OFFLINE_TP
MEMCG_TP(mem_cgroup_css_offline, KMT_CG_OFFLINE)
#endif
#ifdef KMT_MEMCG_FREE_TP
MEMCG_TP(mem_cgroup_css_free, KMT_CG_FREE)
#endif

/* cgroup:cgroup_mkdir as a raw tracepoint, TP_PROTO(struct cgroup *cgrp, const char *path):
 * the cgroup itself gives the parent's id, which decides subtree membership right here, before
 * the first task can enter the new memcg (user space would learn of it too late). */
int kmt_cgroup_mkdir(struct bpf_raw_tracepoint_args *ctx)
{
	u64 cgrp = ctx->args[0];
	int hierarchy = -1;
	bpf_probe_read_kernel(&hierarchy, sizeof(hierarchy),
			      (void *)(read_u64(cgrp + KMT_OFF_CGROUP_ROOT) + KMT_OFF_ROOT_HIERARCHY_ID));
	if (hierarchy != KMT_MEMCG_ROOT)
		return 0;
	struct kmt_cg_event ev = {.kind = KMT_CG_MKDIR};
	ev.id = cgroup_id_of(cgrp);
	u64 parent_css = read_u64(cgrp + KMT_OFF_CGROUP_SELF + KMT_OFF_CSS_PARENT);
	if (parent_css)
		ev.parent = cgroup_id_of(read_u64(parent_css + KMT_OFF_CSS_CGROUP));
#ifdef KMT_FILTER_CGROUP
	if (!recorded(ev.parent) && !is_followed((u32)bpf_get_current_pid_tgid()))
		return 0;
	join_subtree(ev.id);
#endif
	bpf_probe_read_kernel(&ev.level, sizeof(ev.level), (void *)(cgrp + KMT_OFF_CGROUP_LEVEL));
	ev.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_probe_read_kernel_str(ev.path, sizeof(ev.path), (void *)ctx->args[1]);
	cg_emit(ctx, &ev);
	return 0;
}

#define CG_PROBE(event, KIND)                                               \
	TRACEPOINT_PROBE(cgroup, event)                                     \
	{                                                                   \
		if (args->root != KMT_MEMCG_ROOT)                           \
			return 0;                                           \
		struct kmt_cg_event ev = {.kind = KIND};                    \
		ev.id = args->id;                                           \
		if (!recorded(ev.id))                                       \
			return 0;                                           \
		ev.level = args->level;                                     \
		TP_DATA_LOC_READ_STR(ev.path, path, sizeof(ev.path));       \
		cg_emit(args, &ev);                                         \
		return 0;                                                   \
	}

#ifdef KMT_TP_CGROUP_RMDIR
CG_PROBE(cgroup_rmdir, KMT_CG_RMDIR)
#endif

#ifdef KMT_TP_CGROUP_RELEASE
/* the memcg's last event unless a mem_cgroup_css_free probe follows it */
TRACEPOINT_PROBE(cgroup, cgroup_release)
{
	if (args->root != KMT_MEMCG_ROOT)
		return 0;
	struct kmt_cg_event ev = {.kind = KMT_CG_RELEASE};
	ev.id = args->id;
	if (!recorded(ev.id))
		return 0;
#ifndef KMT_MEMCG_FREE_PROBE
	leave_subtree(ev.id);
#endif
	ev.level = args->level;
	TP_DATA_LOC_READ_STR(ev.path, path, sizeof(ev.path));
	cg_emit(args, &ev);
	return 0;
}
#endif

#ifdef KMT_TP_CGROUP_ATTACH_TASK
/* A task moved (one record per thread). With KMT_FOLLOW_TASKS a followed task takes the
 * subtree along into any non-root memcg, and a task entering the subtree becomes followed. */
TRACEPOINT_PROBE(cgroup, cgroup_attach_task)
{
	if (args->dst_root != KMT_MEMCG_ROOT)
		return 0;
	struct kmt_cg_event ev = {.kind = KMT_CG_ATTACH};
	ev.id = args->dst_id;
	ev.pid = args->pid;
	int member = recorded(ev.id);
#ifdef KMT_FOLLOW_TASKS
	if (is_followed(ev.pid)) {
		if (!member && args->dst_level > 0) {
			join_subtree(ev.id);
			member = 1;
		}
	} else if (member) {
		follow(ev.pid);
	}
#endif
	if (!member)
		return 0;
	ev.level = args->dst_level;
	TP_DATA_LOC_READ_STR(ev.path, dst_path, sizeof(ev.path));
	cg_emit(args, &ev);
	return 0;
}
#endif

#ifdef KMT_FOLLOW_TASKS
/* Children of followed tasks (threads included) are followed; exits end it. */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u32 parent = args->parent_pid;
	if (is_followed(parent))
		follow(args->child_pid);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u32 tid = args->pid;
	followed.delete(&tid);
	return 0;
}
#endif

#ifdef KMT_TP_VMSCAN
/* Memory pressure, for Way #2's "reap on pressure" and to show when the kernel shrank slabs:
 * kswapd wake-ups, direct and memcg reclaim, and shrinker runs (the only trace drop_caches
 * leaves). Reclaim fires these in bursts (mm_shrink_slab_start once per shrinker per memcg
 * per pass), so each kind is emitted at most once per KMT_PRESSURE_GAP_NS per CPU: the
 * replay needs when pressure happened, not how many shrinkers it ran. */
BPF_PERCPU_ARRAY(pressure_last, u64, KMT_NR_PRESSURE);

static __always_inline int pressure(void *ctx, u32 kind)
{
	u64 *last = pressure_last.lookup(&kind);
	u64 now = bpf_ktime_get_ns();
	if (!last || (*last && now - *last < KMT_PRESSURE_GAP_NS))
		return 0;
	*last = now;
	struct kmt_cg_event ev = {.kind = KMT_CG_PRESSURE};
	ev.id = current_memcg_id();
	ev.level = kind;
	ev.pid = bpf_get_current_pid_tgid() >> 32;
	cg_emit(ctx, &ev);
	return 0;
}

TRACEPOINT_PROBE(vmscan, mm_vmscan_kswapd_wake) { return pressure(args, KMT_PR_KSWAPD_WAKE); }
TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_begin)
{
	return pressure(args, KMT_PR_DIRECT_RECLAIM);
}
TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_begin)
{
	return pressure(args, KMT_PR_MEMCG_RECLAIM);
}
TRACEPOINT_PROBE(vmscan, mm_shrink_slab_start) { return pressure(args, KMT_PR_SHRINK_SLAB); }
#endif

#ifdef KMT_PAGE_CACHE
/* --- page cache: what holds an offline memcg on 6.x besides slab ---
 * A folio charged to a memcg holds a reference on the memcg's css from commit_charge() until
 * it is uncharged at its last put (uncharge_folio() in mm/memcontrol.c), and 6.1-6.18 do not
 * move LRU folios to the parent at offline (only objcgs, hence slab, are reparented). So a
 * removed memcg with file pages left in the cache stays dying until the last one goes.
 *
 * Insertion: filemap:mm_filemap_add_to_page_cache fires at the end of __filemap_add_folio(),
 * after filemap_add_folio() charged the folio, so folio->memcg_data names the memcg charged
 * (exact, not the current task's). Removal: filemap:mm_filemap_delete_from_page_cache fires in
 * __filemap_remove_folio() and delete_from_page_cache_batch(); the uncharge follows at the
 * folio's last put, at once for truncation, reclaim and drop_caches, later only if someone
 * still holds the folio (a mapping, a pipe).
 *
 * Only folios whose insertion was seen are followed (pc_live), so every removal in the trace
 * pairs with an insertion: folios cached before the recording, and shmem/tmpfs folios (added
 * by shmem_add_to_page_cache(), which has no tracepoint), are not seen at all. The removal
 * carries the memcg and page count of the insertion, so a folio split while cached cannot
 * leave the count unbalanced. Root-memcg folios are skipped: the root never goes offline.
 *
 * A cached folio is followed by its place in the cache, (mapping, index), not by its struct
 * folio: compaction and NUMA migration replace a cached folio by a copy with no tracepoint
 * (__folio_migrate_mapping() stores the new folio in the xarray, mem_cgroup_migrate() moves
 * the charge and the css reference to it) and the copy keeps mapping and index. Keyed by the
 * folio pointer, the copy's removal paired with nothing and was dropped; measured on 6.18,
 * three `compact_memory` runs left 3 817 of a memcg's 4 180 cached pages with no removal row
 * while the kernel had uncached them all. */
#ifdef KMT_PERF
BPF_PERF_OUTPUT(pcache);
#else
BPF_RINGBUF_OUTPUT(pcache, KMT_PC_PAGES);
#endif

struct kmt_pc_live {
	u64 memcg;
	s64 pages;
	u64 folio; /* the folio inserted: a removal row names it, whichever copy is removed */
};
struct kmt_pc_key {
	u64 mapping; /* struct address_space * */
	u64 index;   /* page offset in the file, kept by migration */
};
BPF_HASH(pc_live, struct kmt_pc_key, struct kmt_pc_live, KMT_PC_MAX);

static __always_inline struct kmt_pc_key pc_key(u64 folio)
{
	struct kmt_pc_key key = {
		.mapping = read_u64(folio + KMT_OFF_FOLIO_MAPPING),
		.index = read_u64(folio + KMT_OFF_FOLIO_INDEX),
	};
	return key;
}

static __always_inline s64 folio_pages(u64 folio)
{
	if (!(read_u64(folio + KMT_OFF_FOLIO_FLAGS) & (1ull << KMT_PG_HEAD)))
		return 1;
	u32 nr = 1;
	bpf_probe_read_kernel(&nr, sizeof(nr), (void *)(folio + KMT_OFF_FOLIO_NR_PAGES));
	return nr;
}

static __always_inline void pc_emit(void *ctx, u64 folio, u64 memcg, s64 pages)
{
#ifdef KMT_PERF
	struct kmt_pc_event ev = {};
	struct kmt_pc_event *e = &ev;
#else
	struct kmt_pc_event *e = pcache.ringbuf_reserve(sizeof(struct kmt_pc_event));
	if (!e) {
		lc_count_lost(KMT_LC_LOST_PAGE_CACHE);
		return;
	}
#endif
	e->ts_ns = bpf_ktime_get_ns();
	e->folio = folio;
	e->memcg_id = memcg;
	e->pages = pages;
	e->cpu = bpf_get_smp_processor_id();
	e->pad = 0;
#ifdef KMT_PERF
	if (pcache.perf_submit(ctx, e, sizeof(*e)))
		lc_count_lost(KMT_LC_LOST_PAGE_CACHE);
#else
	pcache.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
#endif
}

/* filemap:mm_filemap_add_to_page_cache, TP_PROTO(struct folio *folio) */
int kmt_pc_add(struct bpf_raw_tracepoint_args *ctx)
{
	u64 folio = ctx->args[0];
	u64 data = read_u64(folio + KMT_OFF_FOLIO_MEMCG_DATA);
	if (!data || (data & KMT_MEMCG_DATA_KMEM))
		return 0; /* uncharged, or a kmem page (objcg): not page cache */
	u64 memcg = data & ~(u64)KMT_MEMCG_DATA_FLAGS_MASK;
	struct kmt_pc_live live_pc = {};
	live_pc.memcg = cgroup_id_of(read_u64(memcg + KMT_OFF_MEMCG_CSS + KMT_OFF_CSS_CGROUP));
	if (live_pc.memcg <= 1 || !recorded(live_pc.memcg))
		return 0;
	live_pc.pages = folio_pages(folio);
	live_pc.folio = folio;
	struct kmt_pc_key key = pc_key(folio);
	/* Still followed: its last removal reached no probe (a path that uncaches a folio with
	 * no tracepoint, or a mapping freed and reused for another file). End that life here,
	 * late rather than never. */
	struct kmt_pc_live *stale = pc_live.lookup(&key);
	if (stale)
		pc_emit(ctx, stale->folio, stale->memcg, -stale->pages);
	if (pc_live.update(&key, &live_pc)) {
		lc_count_lost(KMT_LC_LOST_PAGE_CACHE);
		return 0;
	}
	pc_emit(ctx, folio, live_pc.memcg, live_pc.pages);
	return 0;
}

/* filemap:mm_filemap_delete_from_page_cache, TP_PROTO(struct folio *folio) */
int kmt_pc_delete(struct bpf_raw_tracepoint_args *ctx)
{
	u64 folio = ctx->args[0];
	struct kmt_pc_key key = pc_key(folio);
	struct kmt_pc_live *seen_pc = pc_live.lookup(&key);
	if (!seen_pc)
		return 0;
	u64 memcg = seen_pc->memcg;
	s64 pages = seen_pc->pages;
	u64 inserted = seen_pc->folio;
	pc_live.delete(&key);
	pc_emit(ctx, inserted, memcg, -pages);
	return 0;
}
#endif
