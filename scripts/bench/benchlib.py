"""Shared helpers for scripts/bench/compare and scripts/bench/cgrun: run one command inside a memory-limited
cgroup created for it, and measure it.

The cgroup is created below the cgroup this process is in (read from /proc/self/cgroup), so nothing outside our own
subtree is touched:
  - hybrid or v1 (v1 memory controller mounted at /sys/fs/cgroup/memory): a v1 memory child with
    memory.limit_in_bytes; plus, where the v2 unified tree is mounted (/sys/fs/cgroup/unified), a v2 child for its
    cpu.stat and memory.pressure (those exist there without any controller);
  - pure v2 (/sys/fs/cgroup is cgroup2 with the memory controller): one child with memory.max (and memory.swap.max 0).
Only the command's process is moved in (from its preexec hook); the runner stays outside. Every cgroup we create is
removed afterwards (after killing whatever is left in it, all of it started by us), also on errors and Ctrl-C.

OOM kills: v1 memory.oom_control counts kills of tasks in that memcg only (not its descendants), and a build tool
such as jobgov may put its jobs in a child cgroup it creates below ours. So the runner polls every cgroup in our
subtree while the command runs and sums the largest count seen in each one. On v2 memory.events is hierarchical.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time

CGROOT = "/sys/fs/cgroup"


def _read(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _kv(text):
    out = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def parse_size(s):
    """'1G', '768M', '1073741824', '1.5GiB' -> bytes."""
    t = s.strip().upper().replace("IB", "").replace("B", "")
    mult = 1
    for suf, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        if t.endswith(suf):
            mult, t = m, t[:-1]
            break
    return int(float(t) * mult)


def layout():
    """'v2' (pure cgroup v2 with the memory controller) or 'v1' (v1 memory controller, hybrid or legacy)."""
    ctrl = _read(os.path.join(CGROOT, "cgroup.controllers"))
    if ctrl is not None and "memory" in ctrl.split():
        return "v2"
    if os.path.exists(os.path.join(CGROOT, "memory", "memory.limit_in_bytes")):
        return "v1"
    raise RuntimeError("no memory cgroup controller found (neither pure cgroup v2 with 'memory' in "
                       "/sys/fs/cgroup/cgroup.controllers nor a v1 memory hierarchy at /sys/fs/cgroup/memory)")


def own_cgroups():
    """{'memory': path of our v1 memory cgroup, '': our v2 path} from /proc/self/cgroup."""
    out = {}
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for ctl in parts[1].split(","):
            out[ctl] = parts[2]
    return out


def psi_avg10(text, kind="some"):
    for line in (text or "").splitlines():
        if line.startswith(kind + " "):
            for tok in line.split()[1:]:
                if tok.startswith("avg10="):
                    return float(tok[6:])
    return None


class LimitedCgroup:
    """A memory-limited cgroup (plus, on hybrid systems, a v2 twin for CPU and PSI), created for one command."""

    def __init__(self, limit_bytes, tag="bench"):
        self.limit = int(limit_bytes)
        self.layout = layout()
        own = own_cgroups()
        name = f"jobgov-{tag}-{os.getpid()}-{int(time.time() * 1000) % 10**9}"
        self.dirs = []        # every directory we created, in creation order
        self.v2dir = None     # where cpu.stat / memory.pressure come from (v2), if any
        self.procs_files = []  # cgroup.procs files the command joins
        if self.layout == "v2":
            parent = os.path.join(CGROOT, own.get("", "/").lstrip("/"))
            self.memdir = os.path.join(parent, name)
            sub = _read(os.path.join(parent, "cgroup.subtree_control"), "")
            if "memory" not in sub.split():
                try:
                    _write(os.path.join(parent, "cgroup.subtree_control"), "+memory")
                except OSError as e:
                    raise RuntimeError(
                        f"cannot enable the memory controller for children of {parent} ({e.strerror}). cgroup v2 "
                        "allows that only in a cgroup without processes of its own (or the root). As root, start "
                        "from the root cgroup: `echo $$ > /sys/fs/cgroup/cgroup.procs`, then run this again from "
                        "that shell") from None
            self.v2dir = self.memdir
        else:
            parent = os.path.join(CGROOT, "memory", own.get("memory", "/").lstrip("/"))
            self.memdir = os.path.join(parent, name)
            uni = os.path.join(CGROOT, "unified")
            if own.get("") is not None and os.path.exists(os.path.join(uni, "cgroup.procs")):
                self.v2dir = os.path.join(uni, own[""].lstrip("/"), name)

    # -- life cycle -------------------------------------------------------------------------------------------
    def create(self):
        os.mkdir(self.memdir)
        self.dirs.append(self.memdir)
        if self.layout == "v2":
            _write(os.path.join(self.memdir, "memory.max"), str(self.limit) if self.limit < (1 << 62) else "max")
            try:
                _write(os.path.join(self.memdir, "memory.swap.max"), "0")
            except OSError:
                pass
        else:
            _write(os.path.join(self.memdir, "memory.limit_in_bytes"), str(self.limit) if self.limit < (1 << 62) else "-1")
            # The project's machines have no swap, but a swap device that something else set up meanwhile (a
            # jobgov's zram) would let a run swap at our limit instead of being OOM-killed. swappiness 0: no
            # anonymous memory is swapped by reclaim at this cgroup's limit (v2: memory.swap.max 0 above). What
            # the command does below it (jobgov's own cgroups, MADV_PAGEOUT) is its own business.
            try:
                _write(os.path.join(self.memdir, "memory.swappiness"), "0")
            except OSError:
                pass
            if self.v2dir:
                try:
                    os.mkdir(self.v2dir)
                    self.dirs.append(self.v2dir)
                except OSError:
                    self.v2dir = None
        self.procs_files = [os.path.join(d, "cgroup.procs") for d in self.dirs]
        self.oom_seen = {}
        return self

    def limit_cpu(self, cpus):
        """After create(): at most `cpus` CPUs for the command (v2 cpu.max; v1 a cpu-controller cgroup beside the
        memory one, joined with it)."""
        quota = str(int(cpus * 100000))
        if self.layout == "v2":
            parent = os.path.dirname(self.memdir)
            if "cpu" not in (_read(os.path.join(parent, "cgroup.subtree_control"), "") or "").split():
                _write(os.path.join(parent, "cgroup.subtree_control"), "+cpu")
            _write(os.path.join(self.memdir, "cpu.max"), f"{quota} 100000")
            return self
        cpudir = os.path.join(CGROOT, "cpu", own_cgroups().get("cpu", "/").lstrip("/"), os.path.basename(self.memdir))
        os.mkdir(cpudir)
        self.dirs.append(cpudir)
        _write(os.path.join(cpudir, "cpu.cfs_period_us"), "100000")
        _write(os.path.join(cpudir, "cpu.cfs_quota_us"), quota)
        self.procs_files.append(os.path.join(cpudir, "cgroup.procs"))
        return self

    def join_self(self):
        """Called in the child (preexec_fn): move this process into our cgroups."""
        pid = str(os.getpid())
        for p in self.procs_files:
            with open(p, "w") as f:
                f.write(pid)

    def _subtree(self, root):
        out = []
        for dirpath, dirnames, _ in os.walk(root):
            out.append(dirpath)
        return out

    def pids(self):
        pids = set()
        for root in self.dirs:
            for d in self._subtree(root):
                for line in (_read(os.path.join(d, "cgroup.procs"), "") or "").split():
                    try:
                        pids.add(int(line))
                    except ValueError:
                        pass
        return pids

    def kill_all(self, sig=signal.SIGKILL, wait=5.0):
        """Kill every process left in our cgroups (each one was started by our command) and wait until empty."""
        deadline = time.monotonic() + wait
        while True:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def remove(self):
        """Remove the cgroups we created. Empty sub-cgroups that the command (a process we started, e.g. jobgov
        killed before it could clean up) left inside them are removed too, deepest first, and reported."""
        problems = []
        if self.dirs and not self.kill_all():
            problems.append("processes still left in the cgroup after SIGKILL")
        self.leftovers = []
        for d in self.dirs:
            for sub in sorted(self._subtree(d), key=lambda x: -x.count("/")):
                if sub == d:
                    continue
                try:
                    os.rmdir(sub)
                    self.leftovers.append(sub)
                except OSError:
                    pass
        if self.leftovers:
            problems.append("removed cgroups the command left behind: " + ", ".join(self.leftovers))
        for d in reversed(self.dirs):
            for attempt in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno == errno.EBUSY and attempt < 99:
                        time.sleep(0.05)
                        continue
                    left = [x for x in self._subtree(d) if x != d]
                    problems.append(f"cannot remove {d}: {e.strerror}" +
                                    (f" (left inside it by the build: {', '.join(left)})" if left else ""))
                    break
        self.dirs = []
        return problems

    # -- counters -------------------------------------------------------------------------------------------------
    def poll_oom(self):
        """Largest OOM-kill count seen so far in each cgroup of our memory subtree; returns their sum."""
        for d in self._subtree(self.memdir):
            if self.layout == "v2":
                n = _kv(_read(os.path.join(d, "memory.events"))).get("oom_kill")
                if d != self.memdir:
                    continue  # hierarchical on v2: the top one counts everything below it
            else:
                n = _kv(_read(os.path.join(d, "memory.oom_control"))).get("oom_kill")
            if n is not None and n > self.oom_seen.get(d, 0):
                self.oom_seen[d] = n
        return sum(self.oom_seen.values())

    def usage(self):
        f = "memory.current" if self.layout == "v2" else "memory.usage_in_bytes"
        v = _read(os.path.join(self.memdir, f))
        return int(v) if v and v.strip().isdigit() else None

    def peak(self):
        f = "memory.peak" if self.layout == "v2" else "memory.max_usage_in_bytes"
        v = _read(os.path.join(self.memdir, f))
        return int(v) if v and v.strip().isdigit() else None

    def cpu_seconds(self):
        if not self.v2dir:
            return None
        u = _kv(_read(os.path.join(self.v2dir, "cpu.stat"))).get("usage_usec")
        return u / 1e6 if u is not None else None

    def psi_memory(self):
        if not self.v2dir:
            return None
        return psi_avg10(_read(os.path.join(self.v2dir, "memory.pressure")))

    def failcnt(self):
        if self.layout == "v2":
            return _kv(_read(os.path.join(self.memdir, "memory.events"))).get("max")
        v = _read(os.path.join(self.memdir, "memory.failcnt"))
        return int(v) if v and v.strip().isdigit() else None


_current = []  # cgroups in use, for the signal handler


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers():
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)


def stop(proc, cg, grace=10.0):
    """Stop the command as Ctrl-C would: SIGINT to its process group, so that a supervisor such as jobgov can
    thaw, clean up and remove its own cgroups; after `grace` seconds SIGKILL whatever is left."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            pid, st, _ = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(st)
            break
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    cg.kill_all()
    if proc.returncode is None:
        try:
            proc.wait(timeout=10)
        except Exception:
            pass


def run_limited(cmd, limit_bytes, cwd=None, log_path=None, env=None, timeout=None, sample_every=0.1, tag="bench",
                timeline=None, on_sample=None, log_fd=None):
    """Run cmd (a list) in a fresh cgroup limited to limit_bytes. Returns a dict of measurements.

    limit_bytes None: no memory limit is set (the cgroup is still created, for the counters), unless the layout
    makes that impossible. timeline, if a list, receives (t, usage_bytes, psi_memory_avg10) samples. on_sample, if
    given, is called as on_sample(t, cgroup) at every sample, for whatever else a caller wants to record.
    The command's output (stdout and stderr) goes to the file log_path (created anew), or to the open descriptor
    log_fd (shared as it is, e.g. 2: never reopen /dev/stderr, which would truncate a redirected log), else nowhere.
    """
    cg = LimitedCgroup(limit_bytes if limit_bytes else (1 << 62), tag=tag)
    res = dict(cmd=cmd, cwd=cwd, limit_bytes=limit_bytes, layout=cg.layout)
    if log_path:
        logf = open(log_path, "wb")
    elif log_fd is not None:
        logf = log_fd
        sys.stdout.flush()  # what we printed before comes before the command's output
        sys.stderr.flush()
    else:
        logf = subprocess.DEVNULL
    proc = None
    _current.append(cg)
    try:
        cg.create()
        cpu0 = cg.cpu_seconds()
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, preexec_fn=cg.join_self, start_new_session=True)
        status = ru = None
        max_usage = 0
        timed_out = False
        while True:
            pid, st, r = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                status, ru = st, r
                proc.returncode = os.waitstatus_to_exitcode(st)
                break
            now = time.monotonic() - t0
            u = cg.usage()
            if u:
                max_usage = max(max_usage, u)
            if timeline is not None:
                timeline.append((round(now, 3), u, cg.psi_memory()))
            if on_sample is not None:
                on_sample(round(now, 3), cg)
            cg.poll_oom()
            if timeout and now > timeout and not timed_out:
                timed_out = True
                stop(proc, cg)
                break
            time.sleep(sample_every)
        wall = time.monotonic() - t0
        cg.kill_all()  # stragglers: background processes the command left behind
        res.update(
            exit_status=proc.returncode,
            wall_seconds=round(wall, 3),
            timed_out=timed_out,
            oom_kills=cg.poll_oom(),
            peak_bytes=max(cg.peak() or 0, max_usage),
            cpu_seconds=round(ru.ru_utime + ru.ru_stime, 3) if ru else None,
            user_seconds=round(ru.ru_utime, 3) if ru else None,
            sys_seconds=round(ru.ru_stime, 3) if ru else None,
            max_rss_kib=ru.ru_maxrss if ru else None,
            failcnt=cg.failcnt(),
        )
        c1 = cg.cpu_seconds()
        if cpu0 is not None and c1 is not None:
            res["cgroup_cpu_seconds"] = round(c1 - cpu0, 3)
        res["success"] = proc.returncode == 0 and not timed_out
        return res
    finally:
        if proc is not None and proc.returncode is None:
            stop(proc, cg)
        problems = cg.remove()
        _current.remove(cg)
        if problems:
            res["cleanup_problems"] = problems
            for p in problems:
                print(f"warning: {p}", file=sys.stderr)
        if log_path:
            logf.close()


def main_cgrun(argv):
    import argparse
    ap = argparse.ArgumentParser(
        prog="cgrun",
        description="Run a command in a fresh memory-limited cgroup (below the one you are in), report wall time, "
        "OOM kills, peak memory and CPU time as JSON, then remove the cgroup. Needs root (or a delegated subtree).")
    ap.add_argument("--limit", required=True, help="memory limit, e.g. 1G, 768M")
    ap.add_argument("--log", help="write the command's output here instead of the terminal")
    ap.add_argument("--timeout", type=float, help="kill the command after this many seconds")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command [args...]")
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command given")
    install_signal_handlers()
    res = run_limited(cmd, parse_size(a.limit), log_path=a.log, timeout=a.timeout, tag="cgrun") if a.log else \
        _run_to_terminal(cmd, parse_size(a.limit), a.timeout)
    print(json.dumps(res, indent=1))
    return 0 if res.get("success") else 1


def _run_to_terminal(cmd, limit, timeout):
    # Same as run_limited, but the command's output goes to our own stderr: the inherited descriptor itself, so that
    # with `cgrun ... 2>>log` or `script > log 2>&1` it lands after what is already there (opening /dev/stderr for
    # writing would truncate such a file and write over it from its start).
    return run_limited(cmd, limit, log_fd=sys.stderr.fileno(), timeout=timeout, tag="cgrun")


# -----------------------------------------------------------------------------------------------------------------
# Debian source packages


def debian_mirror():
    """The Debian mirror this machine's apt uses (from /etc/apt/sources.list and sources.list.d, one-line or deb822)."""
    import glob
    import re
    text = ""
    for p in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        text += _read(p, "") + "\n"
    m = re.search(r"https?://\S+/debian/?(?=\s|$)", text)
    if not m:
        raise RuntimeError("no Debian mirror found in /etc/apt/sources.list*")
    return m.group(0).rstrip("/")


def debian_codename(default="bookworm"):
    for line in (_read("/etc/os-release", "") or "").splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"') or default
    return default


def download_debian_source(package, dest, suite=None, version=None, log=print):
    """Download a Debian source package (.dsc, .orig tarball, debian tarball) into dest with a private apt
    configuration: a temporary sources list with `deb-src <this machine's mirror> <suite> main`, lists and archives
    in a temporary directory; the system's apt configuration and lists are not touched (as scripts/setup fetches
    make 4.4.1). Tries package=version first when a version is given. Returns the .orig tarball's path."""
    import glob
    import shutil
    import tempfile
    suite = suite or debian_codename()
    mirror = debian_mirror()
    os.makedirs(dest, exist_ok=True)
    aptdir = tempfile.mkdtemp(prefix="jobgov-apt-")
    try:
        for d in ("lists/partial", "archives/partial"):
            os.makedirs(os.path.join(aptdir, d), exist_ok=True)
        with open(os.path.join(aptdir, "sources.list"), "w") as f:
            f.write(f"deb-src {mirror} {suite} main\n")
        opts = ["-o", f"Dir::Etc::SourceList={aptdir}/sources.list", "-o", "Dir::Etc::SourceParts=/dev/null",
                "-o", f"Dir::State::Lists={aptdir}/lists", "-o", f"Dir::Cache::Archives={aptdir}/archives",
                "-o", "APT::Sandbox::User=root", "-o", "Acquire::AllowInsecureRepositories=false"]
        log(f"downloading the Debian source of {package} ({suite}) from {mirror}")
        r = subprocess.run(["apt-get"] + opts + ["update", "-qq"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if r.returncode != 0:
            raise RuntimeError("apt-get update failed:\n" + r.stdout[-2000:])
        names = ([f"{package}={version}"] if version else []) + [package]
        for i, name in enumerate(names):
            r = subprocess.run(["apt-get"] + opts + ["source", "--download-only", "-qq", name], cwd=dest,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if r.returncode == 0:
                if i > 0:
                    log(f"warning: {package}={version} is not in {suite}; took the version there")
                break
        else:
            raise RuntimeError("apt-get source failed:\n" + r.stdout[-2000:])
    finally:
        shutil.rmtree(aptdir, ignore_errors=True)
    tars = sorted(t for t in glob.glob(os.path.join(dest, "*.orig.tar.*")) if not t.endswith(".asc"))
    if not tars:
        raise RuntimeError(f"no .orig tarball in {os.listdir(dest)}")
    return tars[-1]
