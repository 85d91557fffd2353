"""Pictures for the README and the benchmark README (scripts/pictures, scripts/bench/chart).

  - timeline(): one build under plain make and under jobgov, side by side: the jobs as bars on slots, the jobs
    allowed and running, and memory against the limit and the budget, with OOM kills and freezes marked;
  - compare_chart(): a `scripts/bench/compare` results directory (runs.jsonl) as bars per contender.

matplotlib comes from PyPI into .deps/bench-pip (pip --target, nothing system-wide), as compare installs it.
"""

import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
PIPDIR = os.path.join(REPO, ".deps", "bench-pip")
MiB = 1 << 20


def ensure_matplotlib(log=print):
    """Imports matplotlib (Agg), installing it into .deps/bench-pip first when it is missing. Returns pyplot or None."""
    if PIPDIR not in sys.path:
        sys.path.insert(0, PIPDIR)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log(f"installing matplotlib into {os.path.relpath(PIPDIR, REPO)} (pip --target; nothing system-wide)")
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target",
                            PIPDIR, "matplotlib"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            log("cannot install matplotlib:\n" + "\n".join(r.stdout.splitlines()[-5:]))
            return None
        import importlib
        importlib.invalidate_caches()
        try:
            import matplotlib  # noqa: F401,F811
        except ImportError:
            return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# ---------------------------------------------------------------------------------------------------------------
# jobgov's --trace-events file


def load_trace_events(path):
    """{'jobs': [dict(name, command, start, end, slot, frozen=[(a, b)], oom_killed, ended_early, rerun)],
    'counters': {name: [(t, value)]}, 'build_frozen': [(a, b)], 'other': {...}} with times in seconds."""
    with open(path) as f:
        doc = json.load(f)
    jobs, counters, build_frozen, frozen = [], {}, [], []
    for e in doc["traceEvents"]:
        ph = e.get("ph")
        if ph == "X" and e.get("cat") == "job":
            a = e.get("args", {})
            jobs.append(dict(name=e["name"], command=a.get("command", ""), start=e["ts"] / 1e6,
                             end=(e["ts"] + e["dur"]) / 1e6, slot=e["tid"], frozen=[],
                             peak_mib=a.get("peak_mib", 0), oom_killed=a.get("oom_killed", False),
                             ended_early=a.get("ended_early", False), rerun=a.get("rerun", False)))
        elif ph == "X" and e.get("cat") == "frozen":
            frozen.append((e["tid"], e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6))
        elif ph == "X" and e.get("cat") == "build":
            build_frozen.append((e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6))
        elif ph == "C":
            value = next(iter(e.get("args", {}).values()), None)
            if value is not None:
                counters.setdefault(e["name"], []).append((e["ts"] / 1e6, value))
    for tid, a, b in frozen:
        for j in jobs:
            if j["slot"] == tid and j["start"] <= a and b <= j["end"]:
                j["frozen"].append((a, b))
                break
    for v in counters.values():
        v.sort()
    return dict(jobs=jobs, counters=counters, build_frozen=build_frozen, other=doc.get("otherData", {}))


def assign_slots(intervals):
    """The lowest slot free at each start (intervals sorted by start), as jobgov's trace-events file does."""
    busy, out = [], []
    for start, end in intervals:
        for k, until in enumerate(busy):
            if until <= start:
                busy[k] = end
                out.append(k + 1)
                break
        else:
            busy.append(end)
            out.append(len(busy))
    return out


def _steps(points, end):
    """A counter's (t, v) changes as x, y for a step plot that runs to `end`."""
    xs = [t for t, _ in points]
    ys = [v for _, v in points]
    if xs and xs[-1] < end:
        xs.append(end)
        ys.append(ys[-1])
    return xs, ys


KINDS = {"compile": "#4c78a8", "archive": "#72b7b2", "link": "#d08c2f", "other": "#9d9d9d"}


def job_kind(command):
    """A memjob job's kind from its --name (x.o a compile, x.a an archive, bin/x a link); anything else 'other'."""
    m = re.search(r"--name (\S+)", command or "")
    if not m:
        return "other"
    name = m.group(1)
    if name.endswith(".o"):
        return "compile"
    if name.endswith(".a"):
        return "archive"
    return "link" if name.startswith("bin/") else "other"


def _gantt(ax, jobs, killed_color="#d62728"):
    """Jobs as bars on their slots; frozen parts grey and hatched; OOM-killed jobs red."""
    for j in jobs:
        y = j["slot"]
        color = killed_color if j.get("oom_killed") else KINDS[job_kind(j.get("command"))]
        ax.broken_barh([(j["start"], max(0.02, j["end"] - j["start"]))], (y - 0.4, 0.8), facecolors=color,
                       edgecolors="white", linewidth=0.4)
        for a, b in j.get("frozen", []):
            ax.broken_barh([(a, max(0.02, b - a))], (y - 0.4, 0.8), facecolors="#bdbdbd", edgecolors="#555555",
                           hatch="////", linewidth=0.4)
        if j.get("oom_killed"):
            ax.plot([j["end"]], [y], marker="x", color="black", ms=5, mew=1.5)
    slots = max([j["slot"] for j in jobs] or [1])
    ax.set_ylim(slots + 0.7, 0.3)
    ax.set_ylabel("slot (one row per\njob at a time)")


def timeline(plain, governed, out_png, title, log=print):
    """Two columns, plain make and jobgov, of three panels each, sharing the time axis and each row's y axis.

    plain: dict(label, wall, exit_status, oom_kills, limit_mib, memory=[(t, bytes)], jobs=[dict(name, start, end,
           oom_killed)], running=[(t, n)], oom_times=[t])
    governed: the same (memory and oom_times from the harness), plus trace=load_trace_events(...)
    """
    plt = ensure_matplotlib(log)
    if plt is None:
        return None
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    end = max(plain["wall"], governed["wall"]) * 1.02
    fig, ax = plt.subplots(3, 2, figsize=(14, 9.2), sharex=True, sharey="row",
                           gridspec_kw=dict(height_ratios=[1.5, 0.9, 1.3], hspace=0.08, wspace=0.05))
    fig.suptitle(title, fontsize=13)
    for col, run in enumerate((plain, governed)):
        a_jobs, a_count, a_mem = ax[0][col], ax[1][col], ax[2][col]
        a_jobs.set_title(run["label"], fontsize=11, color="#b00000" if run["exit_status"] != 0 else "#006400")
        _gantt(a_jobs, run["jobs"])
        trace = run.get("trace")
        # Jobs allowed and running.
        if trace:
            c = trace["counters"]
            if "target" in c:
                a_count.step(*_steps(c["target"], run["wall"]), where="post", color="#2ca02c", lw=1.8,
                             label="jobs allowed (jobgov's target)")
            if "running" in c:
                a_count.step(*_steps(c["running"], run["wall"]), where="post", color="#4c78a8", lw=1.2,
                             label="jobs running")
            if "frozen" in c and any(v for _, v in c["frozen"]):
                a_count.step(*_steps(c["frozen"], run["wall"]), where="post", color="#555555", lw=1.2,
                             label="jobs frozen")
        else:
            a_count.step([t for t, _ in run["running"]], [n for _, n in run["running"]], where="post",
                         color="#4c78a8", lw=1.2, label="jobs running")
            a_count.axhline(run["jobs_allowed"], color="#2ca02c", lw=1.8, label=f"jobs allowed (-j{run['jobs_allowed']})")
        a_count.set_ylabel("jobs")
        a_count.legend(loc="upper right", fontsize=8, framealpha=0.9)
        # Memory.
        mem = run["memory"]
        a_mem.plot([t for t, _ in mem], [u / MiB for _, u in mem], color="#4c78a8", lw=1.6,
                   label="build's memory (cgroup usage)")
        a_mem.axhline(run["limit_mib"], color="black", lw=1.2, ls="-", label=f"cgroup limit ({run['limit_mib']:.0f} MiB)")
        if trace:
            c = trace["counters"]
            if "memory in use" in c:
                a_mem.step(*_steps(c["memory in use"], run["wall"]), where="post", color="#9467bd", lw=1, alpha=0.9,
                           label="memory in use, as jobgov counts it")
            if "memory budget" in c:
                a_mem.step(*_steps(c["memory budget"], run["wall"]), where="post", color="#2ca02c", lw=1.4, ls="--",
                           label="jobgov's memory budget")
            for a, b in trace["build_frozen"]:
                for axis in (a_jobs, a_count, a_mem):
                    axis.axvspan(a, b, color="#d62728", alpha=0.12, lw=0)
        for i, t in enumerate(run["oom_times"]):
            a_mem.axvline(t, color="#d62728", lw=1.2, ls=":", label="OOM kill" if i == 0 else None)
            a_mem.plot([t], [run["limit_mib"]], marker="v", color="#d62728", ms=9)
        status = run.get("status_text") or (
            f"exit {run['exit_status']} after {run['wall']:.1f} s; {run['oom_kills']} OOM "
            f"kill{'s' if run['oom_kills'] != 1 else ''}")
        a_mem.text(0.98, 0.04, status, transform=a_mem.transAxes, ha="right", va="bottom", fontsize=10,
                   color="#b00000" if run["exit_status"] != 0 else "#006400",
                   bbox=dict(facecolor="white", edgecolor="none", alpha=0.85))
        a_mem.set_ylabel("memory (MiB)")
        a_mem.set_xlabel("seconds since the build started")
        a_mem.set_ylim(0, run["limit_mib"] * 1.12)
        a_mem.legend(loc="upper left", fontsize=8, framealpha=0.9)
        for axis in (a_jobs, a_count, a_mem):
            axis.set_xlim(0, end)
            axis.grid(axis="x", color="#dddddd", lw=0.6)
    ax[0][1].tick_params(labelleft=True)
    handles = [Patch(color=KINDS["compile"], label="compile"), Patch(color=KINDS["archive"], label="archive"),
               Patch(color=KINDS["link"], label="link"), Patch(color=KINDS["other"], label="other job"),
               Patch(facecolor="#bdbdbd", edgecolor="#555555", hatch="////", label="frozen by jobgov"),
               Patch(color="#d62728", label="OOM-killed job"),
               Line2D([], [], marker="x", color="black", ls="", label="killed here")]
    fig.legend(handles=handles, loc="upper center", ncol=7, fontsize=9, bbox_to_anchor=(0.5, 0.955), frameon=False)
    fig.subplots_adjust(left=0.07, right=0.99, top=0.885, bottom=0.06)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


# ---------------------------------------------------------------------------------------------------------------
# A compare results directory


LABEL = {
    "make": "make -j{N}", "make-l": "make -j{N} -l{L}", "make-oracle": "make -j{K}\n(best static)",
    "ninja": "ninja -j{N}", "ninja-oracle": "ninja -j{K}\n(best static)",
    "jobgov-make-cold": "jobgov make -j{N}\n(first build)", "jobgov-make-warm": "jobgov make -j{N}\n(second build)",
    "jobgov-ninja-cold": "jobgov ninja -j{N}\n(first build)", "jobgov-ninja-warm": "jobgov ninja -j{N}\n(second build)",
}
ORDER = ["make", "make-l", "make-oracle", "jobgov-make-cold", "jobgov-make-warm",
         "ninja", "ninja-oracle", "jobgov-ninja-cold", "jobgov-ninja-warm"]


def load_runs(resdir):
    runs = []
    with open(os.path.join(resdir, "runs.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
    return runs


def compare_chart(resdir, out_png, log=print):
    """The timed runs of a compare results directory: wall time per contender (each run a dot, the median a bar;
    an OOM-killed run a red bar to the time it failed), and each run's peak memory against the limit."""
    plt = ensure_matplotlib(log)
    if plt is None:
        return None
    runs = [r for r in load_runs(resdir) if r.get("phase") == "r"]
    if not runs:
        log(f"{resdir}: no timed runs in runs.jsonl")
        return None
    preset = runs[0].get("preset", "?")
    limit = runs[0].get("limit_bytes")
    N = next((int(a[2:]) for r in runs if r["contender"] in ("make", "ninja") for a in r["cmd"] if a.startswith("-j")),
             None)
    if N is None:
        N = next((int(a[2:]) for r in runs for a in r["cmd"] if a.startswith("-j") and a[2:].isdigit()), 16)
    rows = []
    for c in ORDER:
        groups = {}
        for r in runs:
            if r["contender"] == c:
                groups.setdefault(r.get("K"), []).append(r)
        for K, rs in sorted(groups.items(), key=lambda kv: -(kv[0] or 0)):
            rows.append((LABEL[c].format(N=N, K=K, L="?"), c, rs))
    fig, (aw, am) = plt.subplots(1, 2, figsize=(13, 0.75 * len(rows) + 1.8), sharey=True,
                                 gridspec_kw=dict(width_ratios=[1.6, 1], wspace=0.05))
    cpus = date = ""
    try:
        with open(os.path.join(resdir, "machine.txt")) as f:
            for line in f:
                if line.startswith("nproc:"):
                    cpus = line.split("cpu:")[0].replace("nproc:", "").strip() + " CPUs"
                if line.startswith("date:"):
                    date = line.split(":", 1)[1].strip().split()[0]
    except OSError:
        pass
    machine = ", ".join(x for x in (cpus, date) if x)
    rounds = max(r.get("round", 1) for r in runs)
    fig.suptitle(f"scripts/bench/compare, preset {preset}: {limit / MiB:.0f} MiB memory limit per run"
                 f"{', ' + machine if machine else ''}; {rounds} timed run{'s' if rounds != 1 else ''} per contender",
                 fontsize=12)
    ys = list(range(len(rows)))
    for y, (label, c, rs) in zip(ys, rows):
        ok = [r["wall_seconds"] for r in rs if r["ok"]]
        bad = [r for r in rs if not r["ok"]]
        jobgov = c.startswith("jobgov")
        color = "#2ca02c" if jobgov else ("#7f7f7f" if "oracle" in c else "#4c78a8")
        if ok:
            med = statistics.median(ok)
            aw.barh(y, med, color=color, height=0.6)
            aw.text(med, y, f" {med:.1f} s" + (f" ({len(ok)} ok)" if len(rs) > 1 else ""), va="center", fontsize=9)
            aw.plot(ok, [y] * len(ok), "k|", ms=12)
        if bad:
            worst = max(bad, key=lambda r: r["wall_seconds"])
            if not ok:
                aw.barh(y, worst["wall_seconds"], color="#d62728", height=0.6, hatch="xx", edgecolor="white")
            kills = sum(r["oom_kills"] for r in bad)
            aw.text(worst["wall_seconds"] if not ok else max(ok), y - (0 if not ok else 0.32),
                    f" failed: {len(bad)}/{len(rs)} run{'s' if len(rs) > 1 else ''} OOM-killed ({kills} kill{'s' if kills != 1 else ''}),"
                    f" exit {bad[0]['exit_status']}", va="center", fontsize=9, color="#b00000")
        peaks = [(r.get("peak_bytes") or 0) / MiB for r in rs]
        am.barh(y, statistics.median(peaks), color="#d62728" if bad and not ok else color, height=0.6, alpha=0.85)
        am.plot(peaks, [y] * len(peaks), "k|", ms=12)
    from matplotlib.patches import Patch
    aw.legend(handles=[Patch(color="#4c78a8", label=f"plain -j{N}, when it finishes"), Patch(color="#7f7f7f", label="best static -jK (found by a sweep)"),
                       Patch(color="#2ca02c", label="jobgov"),
                       Patch(facecolor="#d62728", hatch="xx", edgecolor="white", label="failed (OOM-killed)")],
              loc="lower right", fontsize=8, framealpha=0.9)
    aw.set_yticks(ys)
    aw.set_yticklabels([r[0] for r in rows], fontsize=9)
    aw.invert_yaxis()
    aw.set_xlabel("wall time (s): bar = median of the successful runs; red = failed, to the time it failed")
    xmax = max(r["wall_seconds"] for r in runs)
    aw.set_xlim(0, xmax * 1.55)
    aw.grid(axis="x", color="#dddddd", lw=0.6)
    if limit:
        am.axvline(limit / MiB, color="black", lw=1.2, label=f"limit {limit / MiB:.0f} MiB")
        am.legend(loc="lower right", fontsize=8)
        am.set_xlim(0, limit / MiB * 1.1)
    am.set_xlabel("cgroup peak memory (MiB)")
    am.grid(axis="x", color="#dddddd", lw=0.6)
    fig.subplots_adjust(left=0.16, right=0.98, top=1 - 0.55 / fig.get_figheight(), bottom=0.75 / fig.get_figheight())
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
