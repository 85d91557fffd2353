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

/* ---- memory: kmem:rss_stat ----
 * It fires for every page (or batch of pages) any process on the machine maps or unmaps: about 75 times for a
 * process that only runs /bin/true, once per 4 KiB page an allocating process touches. So the hot path is a few
 * plain loads and no helper call: a per-CPU cache holds the address space (mm) of the build process last seen on
 * this CPU, and one of a process outside the build whose events are skipped. An event for the cached build mm reads
 * the mm's three resident counters (plain loads: the argument is a BTF pointer) and keeps its peak; the shared map
 * is written when the RSS moved by JG_RSS_FLUSH_BYTES since the last write, or when another process takes the cache
 * over (so the map lags by less than that). Anything else (the cache is older than the last fork, exec or exit in
 * the build, or the mm is another) takes the slow path: is the mm the current task's own (not a fork copying into
 * a child, an exit or exec tearing an mm down, reclaim), and is that task in the build. The exit event's peak is
 * exact: the kernel's own high-water mark (signal->maxrss, what getrusage reports). */
#define JG_RSS_FLUSH_BYTES (1ULL << 20)

struct rss_cache {
    __u64 mm;      /* a build process's own address space, cached here; 0: none */
    __u64 gen;     /* jg_gen when mm was last checked */
    __u32 tgid;
    __u32 epoch;   /* its jg_procs entry's epoch when taken over */
    __u64 ticket;  /* its jg_procs entry's owner when taken over */
    __u64 rss[3];  /* file, anon, shmem pages at the last event */
    __u64 peak;    /* bytes, like the rest */
    __u64 flushed_now;
    __u64 flushed_peak;
    __u64 skip_mm; /* the address space of the process outside the build last seen here */
    __u64 skip_gen;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct rss_cache);
} jg_rss_cache SEC(".maps");

/* Reads the process's resident memory into the cache, in bytes; returns file + anon + shmem.
 * 6.2+: the event carries only (mm, member); the three counters are read from mm (a BTF pointer: plain loads), so
 * every event sees all three. Up to 6.1 (struct mm_rss_stat exists) the event carries the member's count, which
 * is taken as is while the other two keep their last values: plain loads of mm->rss_stat.count[i] do not verify
 * there ("Type 'atomic_long_t' is not a struct"), and probe reads would cost three helper calls per event. */
static __always_inline __u64 rss_read(struct rss_cache *c, struct mm_struct *mm, int member, unsigned long long *ctx,
                                      __u32 shift)
{
    if (bpf_core_type_exists(struct mm_rss_stat)) {
        long count = (long)ctx[2];
        __u64 bytes = (__u64)(count < 0 ? 0 : count) << shift;
        if (member == 0)
            c->rss[0] = bytes;
        else if (member == 1)
            c->rss[1] = bytes;
        else
            c->rss[2] = bytes;
    } else {
        /* one percpu_counter per member; its count is what the tracepoint reports */
        __s64 file = mm->rss_stat[0].count, anon = mm->rss_stat[1].count, shmem = mm->rss_stat[3].count;
        c->rss[0] = (__u64)(file < 0 ? 0 : file) << shift;
        c->rss[1] = (__u64)(anon < 0 ? 0 : anon) << shift;
        c->rss[2] = (__u64)(shmem < 0 ? 0 : shmem) << shift;
    }
    return c->rss[0] + c->rss[1] + c->rss[2];
}

/* Writes the cached process's values to its jg_procs entry, if there is anything new and the entry is still its:
 * the same program (epoch), not ended. The current values only if this cache is the one that took the process over
 * last (another CPU's are newer); the peak always. */
static __always_inline void rss_flush(struct rss_cache *c)
{
    __u64 now = c->rss[0] + c->rss[1] + c->rss[2];
    if (!c->tgid || (now == c->flushed_now && c->peak == c->flushed_peak))
        return;
    __u32 tgid = c->tgid;
    struct jg_proc *p = bpf_map_lookup_elem(&jg_procs, &tgid);
    if (!p || p->mm != c->mm || p->epoch != c->epoch || p->exited) {
        c->tgid = 0;
        c->mm = 0;
        return;
    }
    if (p->owner == c->ticket) {
        p->rss_file = c->rss[0];
        p->rss_anon = c->rss[1];
        p->rss_shmem = c->rss[2];
    }
    if (c->peak > p->rss_peak)
        p->rss_peak = c->peak;
    c->flushed_now = now;
    c->flushed_peak = c->peak;
}

SEC("tp_btf/rss_stat")
int BPF_PROG(jg_rss, struct mm_struct *mm, int member)
{
    if (member == 2)
        return 0; /* swap entries: not resident (a page swapped out also moves the anon counter) */
    __u32 zero = 0;
    struct rss_cache *c = bpf_map_lookup_elem(&jg_rss_cache, &zero);
    __u64 *gen = bpf_map_lookup_elem(&jg_gen, &zero);
    if (!c || !gen)
        return 0;
    __u64 g = *gen;
    if (c->mm != (__u64)mm || c->gen != g) {
        if (c->skip_mm == (__u64)mm && c->skip_gen == g)
            return 0; /* a process outside the build, seen here before (one that joins the build without exec
                       * is seen from the next fork, exec or exit in the build on) */
        /* Slow path. */
        struct task_struct *cur = bpf_get_current_task_btf();
        if ((__u64)cur->mm != (__u64)mm)
            return 0; /* not the current task's own pages: a fork copying, an mm torn down, reclaim */
        __u32 tgid = cur->tgid;
        if (c->mm == (__u64)mm && c->tgid == tgid) {
            c->gen = g; /* the same process; a fork, exec or exit elsewhere made the entry older */
        } else if (!current_in_build()) {
            c->skip_mm = (__u64)mm;
            c->skip_gen = g;
            return 0;
        } else {
            rss_flush(c);
            struct jg_proc *p = proc_entry(tgid);
            if (!p)
                return 0;
            if (p->mm != (__u64)mm) {
                /* first sight of this address space: start from zero */
                p->mm = (__u64)mm;
                p->rss_file = p->rss_anon = p->rss_shmem = 0;
            }
            c->tgid = tgid;
            c->mm = (__u64)mm;
            c->gen = g;
            c->epoch = p->epoch;
            c->ticket = __sync_fetch_and_add(&p->owner, 1) + 1;
            c->rss[0] = p->rss_file;
            c->rss[1] = p->rss_anon;
            c->rss[2] = p->rss_shmem;
            c->peak = p->rss_peak;
            c->flushed_now = c->rss[0] + c->rss[1] + c->rss[2];
            c->flushed_peak = c->peak;
        }
    }
    __u64 now = rss_read(c, mm, member, ctx, jg_load.page_shift & 31);
    if (now > c->peak)
        c->peak = now;
    __u64 moved = now > c->flushed_now ? now - c->flushed_now : c->flushed_now - now;
    if (moved >= JG_RSS_FLUSH_BYTES || c->peak - c->flushed_peak >= JG_RSS_FLUSH_BYTES)
        rss_flush(c);
    return 0;
}

/* ---- the exec gate ----
 * Admission for build tools that take no jobserver tokens (xargs -P, parallel, a script forking workers with &).
 * A job is a process the build tool started, the tool being jobgov's child: the job table's rule. The first program
 * a job executes runs only if the kernel may admit one more job; otherwise the process stops itself before its first
 * instruction and waits in jg_gated until user space lets it go. Later programs of an admitted job (a compiler
 * driver's cc1plus, a shell's commands) pass at once, or the job would stall halfway. */

/* How far up from a process its job's root is looked for; deeper processes pass. */
#define JG_GATE_DEPTH 16

/* The job of `task` (a BTF pointer): the tgid of its ancestor the build tool started, or its own when the tool
 * started it; 0 for the tool itself and for processes not below it (an orphan that jobgov, a subreaper, adopted). */
static __always_inline __u32 gate_job(struct task_struct *task, struct jg_config *c)
{
    struct task_struct *t = task;
    __u32 below = 0;
#pragma unroll
    for (int i = 0; i < JG_GATE_DEPTH; i++) {
        struct task_struct *parent = t->real_parent;
        if (!parent)
            return 0;
        if ((__u32)parent->tgid == c->gate_supervisor)
            return !c->gate_tool || (__u32)t->tgid == c->gate_tool ? below : 0;
        below = t->tgid;
        t = parent;
    }
    return 0;
}

/* Admits `job` if the credit user space left allows one more and no process waits for its turn (those go first,
 * in the order they came, and only user space can let them go). */
static __always_inline bool gate_admit(struct jg_config *c, __u32 job)
{
    __u64 held = counter_value(JG_CNT_GATE_STOPS) - counter_value(JG_CNT_GATE_GONE) - c->gate_resumed;
    if ((__s64)held > 0)
        return false;
    __u32 index = JG_CNT_GATE_ADMITS;
    __u64 *admits = bpf_map_lookup_elem(&jg_counters, &index);
    if (!admits)
        return false;
    __s64 before = (__s64)__sync_fetch_and_add(admits, 1);
    if (before - (__s64)counter_value(JG_CNT_GATE_ENDS) >= c->gate_credit) {
        __sync_fetch_and_add(admits, (__u64)-1);
        return false;
    }
    __u8 one = 1;
    bpf_map_update_elem(&jg_admitted, &job, &one, BPF_ANY);
    return true;
}

/* ---- process lifecycle ---- */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(jg_fork, struct task_struct *parent, struct task_struct *child)
{
    if (!current_in_build())
        return 0;
    int pid = child->pid;
    if (pid != child->tgid)
        return 0; /* a thread, not a process */
    bump_generation();
    emit_short(JG_EV_FORK, parent->tgid, pid, 0, parent);
    return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(jg_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
    if (!current_in_build())
        return 0;
    bump_generation();
    learn_level(task);
    struct jg_config *c = config();
    __u32 tgid = task->tgid;
    __u32 job = c && c->gate_on ? gate_job(task, c) : 0;
    bool gate = job && !bpf_map_lookup_elem(&jg_admitted, &job) && !gate_admit(c, job);
    if (gate) {
        /* Stop before the new program runs a single instruction: the signal is taken on the way to user space. */
        struct jg_gated held = {.since = bpf_ktime_get_ns(), .job = job};
        bpf_map_update_elem(&jg_gated, &tgid, &held, BPF_ANY);
        bpf_send_signal(SIGSTOP);
        count(JG_CNT_GATE_STOPS, 1);
    }
    /* A new program: its memory starts from scratch. (Only an entry that exists: the memory and reclaim
     * observers create one when they have something to say. Its other threads are gone by now.) */
    struct jg_proc *p = bpf_map_lookup_elem(&jg_procs, &tgid);
    if (p) {
        p->rss_file = p->rss_anon = p->rss_shmem = p->rss_peak = 0;
        p->stall_ns[JG_STALL_DIRECT] = p->stall_ns[JG_STALL_MEMCG] = 0;
        p->exited = 0;
        p->mm = 0;
        p->epoch++;
    }

    struct jg_event *e = reserve(JG_EV_EXEC, sizeof(struct jg_event));
    if (e) {
        e->pid = tgid;
        e->ppid = task->real_parent->tgid;
        copy_comm(e, task);
        struct mm_struct *mm = task->mm;
        unsigned long start = 0, end = 0;
        if (mm) {
            start = mm->arg_start;
            end = mm->arg_end;
        }
        __u64 len = end > start ? end - start : 0;
        if (len > JG_ARGS_LEN)
            len = JG_ARGS_LEN;
        if (len > 0 && bpf_probe_read_user(e->args, len, (void *)start) == 0)
            e->args_len = len;
        submit(e, false);
    }
    if (gate)
        emit_short(JG_EV_GATE, tgid, job, 0, task);
    return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(jg_exit, struct task_struct *task)
{
    if (!current_in_build())
        return 0;
    bump_generation(); /* threads too: the last one to end frees the mm */
    __u32 tid = task->pid, tgid = task->tgid;
    if (bpf_map_lookup_elem(&jg_runnable, &tid))
        bpf_map_delete_elem(&jg_runnable, &tid);
    if (tid != tgid)
        return 0; /* a thread */
    __u32 zero = 0;
    struct rss_cache *cache = bpf_map_lookup_elem(&jg_rss_cache, &zero);
    if (cache && cache->tgid == tgid) {
        rss_flush(cache);
        cache->tgid = 0;
        cache->mm = 0;
    }
    /* The kernel's high-water mark, set for the thread group as its last thread exits (in pages). */
    __u64 peak = (__u64)task->signal->maxrss << (jg_load.page_shift & 31);
    struct jg_proc *p = bpf_map_lookup_elem(&jg_procs, &tgid);
    if (p) {
        if (p->rss_peak > peak)
            peak = p->rss_peak;
        else
            p->rss_peak = peak;
        p->exited = 1;
    }
    /* Only when the gate ever admitted or stopped anything can the process be in its maps. An admitted job's
     * end frees its place; while processes wait for one, user space is woken at once to let the oldest go. */
    bool urgent = false;
    __u64 stops = counter_value(JG_CNT_GATE_STOPS);
    if (stops || counter_value(JG_CNT_GATE_ADMITS)) {
        if (bpf_map_delete_elem(&jg_gated, &tgid) == 0)
            count(JG_CNT_GATE_GONE, 1);
        if (bpf_map_delete_elem(&jg_admitted, &tgid) == 0) {
            count(JG_CNT_GATE_ENDS, 1);
            struct jg_config *c = config();
            urgent = c && (__s64)(stops - counter_value(JG_CNT_GATE_GONE) - c->gate_resumed) > 0;
        }
    }
    struct jg_event *e = reserve(JG_EV_EXIT, JG_EVENT_SHORT);
    if (e) {
        e->pid = tgid;
        e->aux = (__u32)task->exit_code;
        e->value = peak;
        copy_comm(e, task);
        submit(e, urgent);
    }
    return 0;
}

/* ---- reclaim stalls ---- */

static __always_inline int reclaim_begin(__u32 kind)
{
    if (!current_in_build())
        return 0;
    __u32 tid = (__u32)bpf_get_current_pid_tgid();
    __u64 start = (bpf_ktime_get_ns() & ~1ULL) | kind;
    bpf_map_update_elem(&jg_reclaim, &tid, &start, BPF_ANY);
    return 0;
}

static __always_inline int reclaim_end(void)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tid = (__u32)id, tgid = id >> 32;
    __u64 *start = bpf_map_lookup_elem(&jg_reclaim, &tid);
    if (!start)
        return 0; /* not a build task (only those have a start) */
    __u32 kind = *start & 1;
    __u64 ns = bpf_ktime_get_ns() - (*start & ~1ULL);
    bpf_map_delete_elem(&jg_reclaim, &tid);
    count(kind == JG_STALL_DIRECT ? JG_CNT_STALL_DIRECT_NS : JG_CNT_STALL_MEMCG_NS, ns);
    struct jg_proc *p = proc_entry(tgid);
    if (p) {
        if (kind == JG_STALL_DIRECT)
            __sync_fetch_and_add(&p->stall_ns[JG_STALL_DIRECT], ns);
        else
            __sync_fetch_and_add(&p->stall_ns[JG_STALL_MEMCG], ns);
    }
    struct jg_config *c = config();
    if (c && ns >= c->min_stall_ns)
        emit_short(JG_EV_STALL, tgid, kind, ns, NULL);
    return 0;
}

SEC("raw_tp/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(jg_dreclaim_beg) { return reclaim_begin(JG_STALL_DIRECT); }

SEC("raw_tp/mm_vmscan_direct_reclaim_end")
int BPF_PROG(jg_dreclaim_end) { return reclaim_end(); }

SEC("raw_tp/mm_vmscan_memcg_reclaim_begin")
int BPF_PROG(jg_mreclaim_beg) { return reclaim_begin(JG_STALL_MEMCG); }

SEC("raw_tp/mm_vmscan_memcg_reclaim_end")
int BPF_PROG(jg_mreclaim_end) { return reclaim_end(); }

/* ---- OOM victims (any cgroup; OOM kills are rare) ---- */

SEC("raw_tp/mark_victim")
int BPF_PROG(jg_oom)
{
    struct jg_event *e = reserve(JG_EV_OOM, JG_EVENT_SHORT);
    if (!e)
        return 0;
    if (bpf_core_field_exists(struct trace_event_raw_mark_victim, __data_loc_comm)) {
        /* 6.8+: mark_victim(struct task_struct *task, uid_t uid) */
        struct task_struct *t = (struct task_struct *)ctx[0];
        e->pid = BPF_CORE_READ(t, tgid);
        BPF_CORE_READ_STR_INTO(&e->comm, t, comm);
        e->value = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
        e->aux = task_in_build_raw(t);
    } else {
        /* up to 6.7: mark_victim(int pid); the caller is the victim in most memcg OOMs */
        struct task_struct *cur = (struct task_struct *)bpf_get_current_task();
        e->pid = (__u32)ctx[0];
        if ((__u32)BPF_CORE_READ(cur, pid) == e->pid) {
            bpf_get_current_comm(e->comm, sizeof(e->comm));
            e->value = bpf_get_current_cgroup_id();
            e->aux = current_in_build();
        } else {
            e->comm[0] = 0;
            __u32 pid = e->pid;
            e->aux = bpf_map_lookup_elem(&jg_procs, &pid) != NULL;
        }
    }
    submit(e, true);
    return 0;
}

/* ---- block I/O latency (whole machine: a device's latency is everyone's) ---- */

SEC("raw_tp/block_rq_issue")
int BPF_PROG(jg_rq_issue, struct request *rq)
{
    __u64 key = (__u64)rq, now = bpf_ktime_get_ns();
    bpf_map_update_elem(&jg_rq_start, &key, &now, BPF_ANY);
    return 0;
}

SEC("raw_tp/block_rq_complete")
int BPF_PROG(jg_rq_done, struct request *rq)
{
    __u64 key = (__u64)rq;
    __u64 *start = bpf_map_lookup_elem(&jg_rq_start, &key);
    if (!start)
        return 0;
    __u64 us = (bpf_ktime_get_ns() - *start) / 1000;
    bpf_map_delete_elem(&jg_rq_start, &key);
    hist_add(JG_HIST_BLOCK_IO, us);
    return 0;
}

/* ---- run-queue latency of the build's tasks ----
 * sched_wakeup and sched_switch fire for every task on the machine: the build check comes first and is plain loads
 * (task_in_build) or one helper call (current_in_build); only the build's tasks get a map entry. */

static __always_inline void mark_runnable(__u32 tid)
{
    __u64 now = bpf_ktime_get_ns();
    __u64 *since = bpf_map_lookup_elem(&jg_runnable, &tid);
    if (since)
        *since = now;
    else
        bpf_map_update_elem(&jg_runnable, &tid, &now, BPF_ANY);
}

static __always_inline int runnable(struct task_struct *t)
{
    if (!task_in_build(t))
        return 0;
    mark_runnable(t->pid);
    return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(jg_wakeup, struct task_struct *t) { return runnable(t); }

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(jg_wakeup_new, struct task_struct *t) { return runnable(t); }

SEC("tp_btf/sched_switch")
int BPF_PROG(jg_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
    /* prev is current here: a preempted build task goes back on the run queue. */
    if (prev->__state == TASK_RUNNING && current_in_build())
        mark_runnable(prev->pid);
    /* Only build tasks have an entry, so the lookup is the build check for next (a task that left the build while
     * it waited still has its wait counted). */
    __u32 tid = next->pid;
    __u64 *since = bpf_map_lookup_elem(&jg_runnable, &tid);
    if (!since || !*since)
        return 0;
    __u64 us = (bpf_ktime_get_ns() - *since) / 1000;
    *since = 0;
    hist_add(JG_HIST_RUNQ, us);
    return 0;
}
