/* The few kernel types jobgov.bpf.c reads, declared by hand instead of a 3 MB bpftool dump of one machine's
 * vmlinux.h. preserve_access_index makes every field access a CO-RE relocation: libbpf finds each field in the
 * running kernel's BTF (/sys/kernel/btf/vmlinux) at load time, so one object works across kernel versions. */
#ifndef JOBGOV_KERNEL_TYPES_H
#define JOBGOV_KERNEL_TYPES_H

typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef int pid_t;
typedef unsigned int uid_t;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

enum bpf_map_type {
    BPF_MAP_TYPE_HASH = 1,
    BPF_MAP_TYPE_ARRAY = 2,
    BPF_MAP_TYPE_CGROUP_ARRAY = 8,
    BPF_MAP_TYPE_LRU_HASH = 9,
    BPF_MAP_TYPE_PERCPU_ARRAY = 6,
    BPF_MAP_TYPE_RINGBUF = 27,
};
enum { BPF_ANY = 0, BPF_NOEXIST = 1, BPF_EXIST = 2 };
enum { BPF_RB_NO_WAKEUP = 1, BPF_RB_FORCE_WAKEUP = 2 };
enum { BPF_RB_AVAIL_DATA = 0 };

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct kernfs_node { __u64 id; };
struct cgroup;
struct cgroup_subsys_state {
    struct cgroup *cgroup;
    struct cgroup_subsys_state *parent;
};
struct cgroup {
    struct cgroup_subsys_state self;
    struct kernfs_node *kn;
    int level;
    struct cgroup *ancestors[];
};
struct css_set { struct cgroup *dfl_cgrp; };

/* 6.2+: one percpu_counter per rss member; kmem:rss_stat passes (mm, member) and reports its count. */
struct percpu_counter { __s64 count; };
/* Up to 6.1: this type exists and kmem:rss_stat passes (mm, member, count). Used only as a CO-RE probe. */
struct mm_rss_stat { long count[4]; };

struct mm_struct {
    unsigned long arg_start;
    unsigned long arg_end;
    struct percpu_counter rss_stat[4];
};

struct signal_struct { unsigned long maxrss; };

struct task_struct {
    unsigned int __state;
    int pid;
    int tgid;
    char comm[16];
    struct task_struct *real_parent;
    struct mm_struct *mm;
    int exit_code;
    struct css_set *cgroups;
    struct signal_struct *signal;
};

struct linux_binprm { const char *filename; };
struct request;

/* 6.8+ added the victim's comm (and more) to oom:mark_victim and passes the task instead of the pid. */
struct trace_event_raw_mark_victim { int pid; __u32 __data_loc_comm; };

#pragma clang attribute pop

#endif
