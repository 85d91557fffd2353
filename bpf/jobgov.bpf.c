// SPDX-License-Identifier: GPL-2.0
/* jobgov's observers and in-kernel actuators. Programs on hot tracepoints (kmem:rss_stat, the scheduler, process
 * lifecycle) are BTF-typed raw tracepoints (tp_btf): their arguments are kernel pointers the program reads with
 * plain loads, where a plain raw tracepoint pays a bpf_probe_read_kernel call (about 45 ns here) per field. The
 * rarely firing ones (reclaim, OOM, block I/O) stay plain raw tracepoints. Neither needs tracefs; fentry and
 * kprobes do not load on the project's machines. Work is filtered to the build's cgroup v2 subtree first thing.
 * Layouts and constants: jobgov_probes.h. Costs and how they were measured: README.md. */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "jobgov_probes.h"

#define SIGSTOP 19
/* TASK_RUNNING: a task switched out while still runnable was preempted and waits on the run queue. */
#define TASK_RUNNING 0

char LICENSE[] SEC("license") = "GPL";

/* Set by user space before load (see struct jg_load_settings); zero here only until then. */
const volatile struct jg_load_settings jg_load = {};

/* Read by no program: it puts struct jg_event into the object's BTF (records are built in ring buffer memory, which
 * BTF does not describe), so that user space can check its own layout of the records against it. */
const struct jg_event jg_event_layout __attribute__((used)) = {};

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, JG_RINGBUF_BYTES);
} jg_events SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct jg_config);
} jg_config SEC(".maps");

/* Index 0: the build's cgroup v2 directory, for bpf_current_task_under_cgroup. */
struct {
    __uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} jg_cgroup SEC(".maps");

/* tgid → memory and stall; LRU so that ended processes nobody asked about cannot fill it. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, JG_MAX_PROCS);
    __type(key, __u32);
    __type(value, struct jg_proc);
} jg_procs SEC(".maps");

/* thread id → reclaim start (ns) | kind in the low bit. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, __u64);
} jg_reclaim SEC(".maps");

/* tgid → when and in which job, for processes the exec gate stopped and user space has not let go. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, struct jg_gated);
} jg_gated SEC(".maps");

/* Jobs the exec gate admitted (the tgid of the job's root), until their root ends: their programs pass. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, __u8);
} jg_admitted SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, NR_JG_HIST * JG_HIST_SLOTS);
    __type(key, __u32);
    __type(value, __u64);
} jg_hist SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, NR_JG_CNT);
    __type(key, __u32);
    __type(value, __u64);
} jg_counters SEC(".maps");

/* struct request * → issue time */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 8192);
    __type(key, __u64);
    __type(value, __u64);
} jg_rq_start SEC(".maps");

/* thread id → time it became runnable, 0 while it runs (build tasks only). An entry lives as long as its task:
 * written in place (no bucket lock, no allocation) at each wakeup and switch-in, removed when the task ends; LRU
 * so that tasks that left the build and ended elsewhere cannot fill it. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u32);
    __type(value, __u64);
} jg_runnable SEC(".maps");

/* The build cgroup's depth as the kernel counts it, +1 (0: not learned yet). User space computes the depth from
 * the mount, which is wrong inside a cgroup namespace (a container's /sys/fs/cgroup starts below the real root);
 * the first build process seen learns the kernel's own figure here. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} jg_level SEC(".maps");

/* Bumped by every fork, exec and exit in the build. Each can create or free an address space, and a freed one's
 * address can come back for a new one, so kmem:rss_stat's per-CPU cache checks an entry again once it is older. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} jg_gen SEC(".maps");

static __always_inline struct jg_config *config(void)
{
    __u32 zero = 0;
    return bpf_map_lookup_elem(&jg_config, &zero);
}

static __always_inline void bump_generation(void)
{
    __u32 zero = 0;
    __u64 *g = bpf_map_lookup_elem(&jg_gen, &zero);
    if (g)
        __sync_fetch_and_add(g, 1);
}

/* The current task is in the build's cgroup or below it (one helper call). */
static __always_inline bool current_in_build(void)
{
    return bpf_current_task_under_cgroup(&jg_cgroup, 0) == 1;
}

/* The build's depth: learned from the kernel (jg_level), else what user space computed. */
static __always_inline __u32 build_level(void)
{
    __u32 zero = 0;
    __u32 *learned = bpf_map_lookup_elem(&jg_level, &zero);
    return learned && *learned ? *learned - 1 : jg_load.build_level;
}

/* How far below the build a task's cgroup is walked up with plain loads; deeper ones take one probe read. */
#define JG_WALK_LEVELS 6

/* Any task (a BTF pointer: tp_btf arguments, bpf_get_current_task_btf) is in the build's cgroup or below: its v2
 * cgroup's ancestor at the build's level is the build. Plain loads only, and tasks in shallower cgroups (on most
 * machines: everything else) are out after three; cgroup->ancestors[] cannot be indexed by a variable with plain
 * loads, so the walk goes up through the parents. */
static __always_inline bool task_in_build(struct task_struct *t)
{
    struct cgroup *cg = t->cgroups->dfl_cgrp;
    if (!cg)
        return false;
    int level = cg->level;
    __u32 want = build_level();
    if (level < 0 || (__u32)level < want || want > 255)
        return false;
#pragma unroll
    for (int i = 0; i < JG_WALK_LEVELS; i++) {
        if ((__u32)level == want)
            return cg->kn->id == jg_load.build_cgroup_id;
        cg = cg->self.parent->cgroup;
        level--;
        if (!cg)
            return false;
    }
    if ((__u32)level == want)
        return cg->kn->id == jg_load.build_cgroup_id;
    struct cgroup *ancestor = NULL;
    bpf_core_read(&ancestor, sizeof(ancestor), &cg->ancestors[want]);
    return ancestor && BPF_CORE_READ(ancestor, kn, id) == jg_load.build_cgroup_id;
}

/* For a task given as a plain pointer (raw_tp arguments): every field is a probe read. */
static __always_inline bool task_in_build_raw(struct task_struct *t)
{
    struct cgroup *cg = BPF_CORE_READ(t, cgroups, dfl_cgrp);
    if (!cg)
        return false;
    int level = BPF_CORE_READ(cg, level);
    __u32 want = build_level();
    if (level < 0 || (__u32)level < want || want > 255)
        return false;
    struct cgroup *ancestor = NULL;
    bpf_core_read(&ancestor, sizeof(ancestor), &cg->ancestors[want]);
    if (!ancestor)
        return false;
    return BPF_CORE_READ(ancestor, kn, id) == jg_load.build_cgroup_id;
}

/* Called for a task known to be in the build: find the build among its cgroup's ancestors, once. */
static __always_inline void learn_level(struct task_struct *t)
{
    __u32 zero = 0;
    __u32 *learned = bpf_map_lookup_elem(&jg_level, &zero);
    if (!learned || *learned)
        return;
    struct cgroup *cg = BPF_CORE_READ(t, cgroups, dfl_cgrp);
    if (!cg)
        return;
    int level = BPF_CORE_READ(cg, level);
    for (int i = 0; i < 32; i++) {
        if (i > level)
            break;
        struct cgroup *ancestor = NULL;
        bpf_core_read(&ancestor, sizeof(ancestor), &cg->ancestors[i]);
        if (ancestor && BPF_CORE_READ(ancestor, kn, id) == jg_load.build_cgroup_id) {
            *learned = i + 1;
            break;
        }
    }
}

static __always_inline __u64 counter_value(__u32 index)
{
    __u64 *v = bpf_map_lookup_elem(&jg_counters, &index);
    return v ? *v : 0;
}

static __always_inline void count(__u32 index, __u64 delta)
{
    __u64 *v = bpf_map_lookup_elem(&jg_counters, &index);
    if (v)
        __sync_fetch_and_add(v, delta);
}

static __always_inline void hist_add(__u32 hist, __u64 value)
{
    __u32 slot = 0;
    /* floor(log2(value)), unrolled: the verifier sees a bounded slot. */
#pragma unroll
    for (int i = JG_HIST_SLOTS - 1; i > 0; i--) {
        if (value >> i) {
            slot = i;
            break;
        }
    }
    __u32 index = hist * JG_HIST_SLOTS + slot;
    __u64 *v = bpf_map_lookup_elem(&jg_hist, &index);
    if (v)
        __sync_fetch_and_add(v, 1);
}

static __always_inline struct jg_event *reserve(__u32 kind, __u64 size)
{
    struct jg_event *e = bpf_ringbuf_reserve(&jg_events, size, 0);
    if (!e) {
        count(JG_CNT_DROPPED, 1);
        return NULL;
    }
    e->kind = kind;
    e->pid = 0;
    e->ppid = 0;
    e->aux = 0;
    e->time_ns = bpf_ktime_get_ns();
    e->value = 0;
    e->args_len = 0;
    e->reserved = 0;
    return e;
}

/* Waking the reader for every record costs it a context switch per process of the build (measured: most of the
 * exec workload's overhead). So routine records wait for the reader's own tick, and only the ones that need action
 * now (gate, OOM) or a filling buffer wake it. */
static __always_inline void submit(struct jg_event *e, bool urgent)
{
    __u64 flags = BPF_RB_NO_WAKEUP;
    if (urgent)
        flags = BPF_RB_FORCE_WAKEUP;
    else if (bpf_ringbuf_query(&jg_events, BPF_RB_AVAIL_DATA) >= JG_RINGBUF_WAKE_BYTES)
        flags = 0;
    bpf_ringbuf_submit(e, flags);
}

/* The command name of `t` (a BTF pointer to the current task) with two plain loads, or of the current task with a
 * helper call when there is no such pointer. */
static __always_inline void copy_comm(struct jg_event *e, struct task_struct *t)
{
    if (t) {
        *(__u64 *)&e->comm[0] = *(__u64 *)&t->comm[0];
        *(__u64 *)&e->comm[8] = *(__u64 *)&t->comm[8];
    } else {
        bpf_get_current_comm(e->comm, sizeof(e->comm));
    }
}

static __always_inline void emit_short(__u32 kind, __u32 pid, __u32 aux, __u64 value, struct task_struct *current)
{
    struct jg_event *e = reserve(kind, JG_EVENT_SHORT);
    if (!e)
        return;
    e->pid = pid;
    e->aux = aux;
    e->value = value;
    copy_comm(e, current);
    submit(e, kind == JG_EV_GATE || kind == JG_EV_OOM);
}

static __always_inline struct jg_proc *proc_entry(__u32 tgid)
{
    struct jg_proc *p = bpf_map_lookup_elem(&jg_procs, &tgid);
    if (p)
        return p;
    struct jg_proc fresh = {};
    bpf_map_update_elem(&jg_procs, &tgid, &fresh, BPF_NOEXIST);
    return bpf_map_lookup_elem(&jg_procs, &tgid);
}

/* The programs, by what they observe; in files of their own for size, in this order (each uses what comes
 * before it). */
#include "jobgov_memory.bpf.inc"
#include "jobgov_processes.bpf.inc"
#include "jobgov_stalls.bpf.inc"
