/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kmemtrace.h: the one definition of the records the BPF side hands to user space.
 *
 * kmemtrace/record/events.py mirrors these structs as numpy dtypes; a test compiles this
 * header with gcc and checks that sizes and offsets agree, so edit both together.
 *
 * struct kmt_event is the hot record (slab allocs and frees): fixed size, 40 bytes, so that
 * user space can view a whole ring-buffer span as one numpy array. struct kmt_cg_event is
 * the rare cgroup record and carries the cgroup's path.
 */
#ifndef KMEMTRACE_H
#define KMEMTRACE_H

/* kmt_event.kind (bits 24..27 of size_kind) */
#define KMT_K_ALLOC 1          /* kmem_cache_alloc: cache_idx set, bytes = s->size */
#define KMT_K_FREE 2           /* kmem_cache_free / kfree / kmem_cache_free_bulk */
#define KMT_K_KMALLOC 3        /* kmalloc: no cache pointer, bytes = bytes_alloc */
#define KMT_K_CACHE_CREATE 4   /* cache-creation kretprobe: ptr = kmem_cache * */
#define KMT_K_CACHE_DESTROY 5  /* kmem_cache_destroy kprobe: ptr = kmem_cache * */

/* kmt_cg_event.kind */
#define KMT_CG_MKDIR 1
#define KMT_CG_RMDIR 2
#define KMT_CG_RELEASE 3
#define KMT_CG_ATTACH 4
#define KMT_CG_OFFLINE 5       /* mem_cgroup_css_offline: patched tracepoint, fentry, kprobe */
#define KMT_CG_FREE 6          /* mem_cgroup_css_free: patched tracepoint, fentry, kprobe */
#define KMT_CG_PRESSURE 7      /* a vmscan tracepoint fired: level = PressureKind, id = memcg */

/* kmt_cg_event.level of KMT_CG_PRESSURE (= PressureKind in schema.py) */
#define KMT_PR_KSWAPD_WAKE 0
#define KMT_PR_DIRECT_RECLAIM 1
#define KMT_PR_MEMCG_RECLAIM 2
#define KMT_PR_SHRINK_SLAB 4   /* a shrinker ran: reclaim or drop_caches */
#define KMT_NR_PRESSURE 5

/* kmt_event context (bits 28..31 of size_kind) = EventContext in schema.py */
#define KMT_CTX_UNKNOWN 0      /* the kernel gave no way to read the preempt count */
#define KMT_CTX_TASK 1
#define KMT_CTX_SOFTIRQ 2      /* serving a softirq (RCU callbacks included) */
#define KMT_CTX_HARDIRQ 3
#define KMT_CTX_NMI 4

/* Per-CPU loss counters: index into the `lost` array (= LostReason in schema.py). */
#define KMT_LOST_RINGBUF 0
#define KMT_LOST_LIVE_MAP 1
#define KMT_LOST_FREE_UNSEEN 8 /* an ALLOC found its address still live: its FREE never came */
#define KMT_NR_LOST 9

/* Slab tracepoints whose frees a twin program catches when they nest (kmemtrace.bpf.c):
 * index into the per-CPU `running` and `rescued` arrays. */
#define KMT_TP_CACHE_FREE 0
#define KMT_TP_KFREE 1
#define KMT_NR_TWINS 2

/* Per-CPU life-cycle loss counters: index into the `lc_lost` array. User space maps them to
 * LostReason LIFECYCLE_RING and LIFECYCLE_MAP (kept apart from `lost`, the hot path's). */
#define KMT_LC_LOST_RING 0     /* a cgroup record the ctl ring (or perf buffer) refused */
#define KMT_LC_LOST_MAP 1      /* the subtree or followed-task map was full */
#define KMT_LC_LOST_PAGE_CACHE 2 /* a page-cache record: its ring or its folio map was full */
#define KMT_NR_LC_LOST 3

#define KMT_SIZE_MASK 0x00ffffffu /* KMALLOC_MAX_SIZE is 4 MiB on x86: 24 bits suffice */
#define KMT_KIND_SHIFT 24
#define KMT_KIND_MASK 0xfu
#define KMT_CTX_SHIFT 28
#define KMT_CG_PATH_LEN 256
#define KMT_CACHE_NAME_LEN 32

struct kmt_event {
	__u64 ts_ns;      /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 ptr;        /* object, or kmem_cache * for cache events */
	__u64 memcg_id;   /* allocating task's memcg (kernfs id = directory inode); 0 on frees */
	__u32 pid;        /* tgid of the current task */
	__u32 gfp;        /* gfp flags; __GFP_ACCOUNT also set when the cache is SLAB_ACCOUNT */
	__u32 size_kind;  /* bytes (low 24 bits) | kind << 24 | context << 28 */
	__u16 cache_idx;  /* 1 + index in the `caches` map; 0 = unknown (kmalloc, kfree) */
	__u16 cpu;
};

/* The slab ring (`events`) holds only batches: each CPU stages its events per context level
 * and hands over KMT_BATCH slots at once (bpf/kmemtrace.bpf.c, "Per-CPU batches"). The
 * record is always the whole array, `count` of it in use, so that every ring record has
 * the same size and user space views a ring span as one numpy array. Events that cannot be
 * staged go one by one to the `singles` ring as bare kmt_events. */
#define KMT_BATCH 64

struct kmt_batch {
	__u32 count;      /* events in use: ev[0..count) */
	__u32 pad;
	struct kmt_event ev[KMT_BATCH];
};

struct kmt_cg_event {
	__u64 ts_ns;
	__u64 id;         /* cgroup id (kernfs id) */
	__u64 parent;     /* MKDIR: the parent cgroup's id, read in the kernel */
	__u32 pid;        /* ATTACH: the task moved */
	__s32 level;
	__u16 cpu;
	__u8 kind;
	__u8 pad[5];
	char path[KMT_CG_PATH_LEN];
};

/* A folio entered (pages > 0) or left (pages < 0) the page cache, charged to memcg_id. A
 * charged folio holds its memcg's css until it is uncharged, so these records say what pins
 * an offline memcg besides slab (kmemtrace.bpf.c, KMT_PAGE_CACHE). Fixed size: bulk-drained
 * like kmt_event. */
struct kmt_pc_event {
	__u64 ts_ns;
	__u64 folio;      /* struct folio * inserted: a removal names its insertion's */
	__u64 memcg_id;   /* folio->memcg_data's memcg (kernfs id = directory inode) */
	__s32 pages;      /* +folio_nr_pages at insertion, -folio_nr_pages at removal */
	__u16 cpu;
	__u16 pad;
};

/* Value of the `caches` map, keyed by struct kmem_cache *, and of `cache_by_idx`, keyed by
 * idx: filled on first sight. The geometry fields let user space describe a cache that is
 * already gone from /sys/kernel/slab when it first learns of it. */
struct kmt_cache {
	__u32 idx;        /* dense index, 1-based, as stored in kmt_event.cache_idx */
	__u32 size;       /* s->size: bytes per object slot */
	__u32 flags;      /* s->flags (slab_flags_t) */
	__u32 oo;         /* s->oo.x: slab order << 16 | objects per slab */
	char name[KMT_CACHE_NAME_LEN];
	__u32 object_size; /* s->object_size */
	__u32 pad;
};

#endif /* KMEMTRACE_H */
