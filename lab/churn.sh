#!/bin/bash
# A small memcg workload for the VM lab: create N files (each charges an inode and a
# dentry to the memcg), delete them all, then load and unload a module that owns a slab
# cache, so that kmem_cache_destroy runs (isofs: isofs_inode_cache).
set -eu
n=${1:-300}
d=$(mktemp -d /tmp/kmemtrace-churn.XXXXXX)
for i in $(seq 1 "$n"); do echo x > "$d/f$i"; done
rm -rf "$d"
modprobe isofs
rmmod isofs
