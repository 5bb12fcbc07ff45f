// SPDX-License-Identifier: GPL-2.0
/*
 * fentry_check.bpf.c: loaded (never kept) by kmemtrace/record/probes.py to learn whether
 * this kernel can really attach fentry programs. Symbols and configs can claim support that
 * the running system refuses (this host: the load fails with EPERM), so we try.
 */
KFUNC_PROBE(kmem_cache_destroy, void *s)
{
	return 0;
}
