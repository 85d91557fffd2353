#!/bin/sh
# jobgov's BPF programs on the VM's kernel (Debian 6.1): they load, attach and report through jobgov-probe-bench.
# Sourced by tests.sh (uses its check(); counts into its pass/fail) when /usr/bin/jobgov-probe-bench is in the
# image; runs alone too. Seen on 6.1.0-56-cloud-amd64: every observer loads (CO-RE picks the 6.1 forms of
# kmem:rss_stat and oom:mark_victim).
if ! command -v check >/dev/null 2>&1; then
    pass=0; fail=0
    check() { name=$1; shift; if "$@"; then echo "ok - $name"; pass=$((pass + 1)); else echo "not ok - $name"; fail=$((fail + 1)); fi; }
    standalone=1
fi
bpf_ready() { grep -q '^ready' /tmp/probe.out; }
bpf_all_on() { ! grep -q '^unavailable' /tmp/probe.out; }
bpf_peak_above_32m() {
    sed -n 's/^exit(.*peakRSS: \([0-9]*\).*/\1/p' /tmp/probe.out | awk '$1 > 33554432 { f = 1 } END { exit !f }'
}
cg=/sys/fs/cgroup/jobgov-bpftest
mkdir "$cg"
grep -q memory /sys/fs/cgroup/cgroup.subtree_control || echo "+memory" > /sys/fs/cgroup/cgroup.subtree_control
jobgov-probe-bench "$cg" --print > /tmp/probe.out 2>&1 &
probe=$!
n=0; while ! bpf_ready && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
check "BPF: probes attached on $(uname -r)" bpf_ready
grep '^unavailable' /tmp/probe.out
check "BPF: every observer loads" bpf_all_on
# Exec with arguments, an exit status, a 64 MiB peak (dd's buffer), then an OOM kill at a 20 MiB limit.
sh -c "echo \$\$ > $cg/cgroup.procs; exec sh -c '/bin/true marker-arg; dd if=/dev/zero of=/dev/null bs=32M count=2 2>/dev/null; exit 7'"
echo 20M > "$cg/memory.max"
sh -c "echo \$\$ > $cg/cgroup.procs; exec dd if=/dev/zero of=/dev/null bs=64M count=1" 2>/dev/null
sleep 1
kill -TERM $probe
wait $probe
check "BPF: exec event with argv" grep -q 'command: "/bin/true marker-arg"' /tmp/probe.out
check "BPF: exit status 7" grep -q 'status: exit 7' /tmp/probe.out
check "BPF: peak RSS of a 64 MiB dd above 32 MiB" bpf_peak_above_32m
check "BPF: OOM victim reported" grep -q '^oomVictim(.*command: "dd"' /tmp/probe.out
check "BPF: the victim's exit says signal 9" grep -q 'status: signal 9' /tmp/probe.out
rmdir "$cg"
[ -n "${standalone:-}" ] && echo "VM-RESULT: $pass passed, $fail failed"
true
