#!/bin/sh
# jobgov on pure cgroup v2 (run inside the VM by scripts/vm-test). Prints "ok - …"/"not ok - …" per check and
# "VM-RESULT: N passed, M failed" at the end.
pass=0
fail=0
check() {
    name=$1
    shift
    if "$@"; then echo "ok - $name"; pass=$((pass + 1)); else echo "not ok - $name"; fail=$((fail + 1)); fi
}
lines() { [ -f "$1" ] && wc -l < "$1" || echo 0; }
# Conditions for wait_for are re-evaluated on every try, so they are functions, not expanded words.
counter_above() { [ "$(lines counter)" -gt "$1" ]; }
wait_for() { # seconds condition...
    n=$(($1 * 10)); shift
    while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 0.1; n=$((n - 1)); done
    return 1
}
no_jobgov_cgroups() { ! ls -d /sys/fs/cgroup/jobgov-* >/dev/null 2>&1; }
export TMPDIR=/tmp

# 1. Placement before exec, limits, removal at exit.
echo "vm: part 1: Placement before exec, limits, removal at exit"
cat > place.mk <<'MK'
all:
	@cat /proc/self/cgroup > cg
	@d=/sys/fs/cgroup$$(sed -n 's/^0:://p' /proc/self/cgroup)/..; cat $$d/memory.high > high; cat $$d/memory.max > max; cat $$d/cpu.max > cpumax; cat $$d/memory.pressure > psi
MK
jobgov -q --memory-budget 64M --cpu-max 0.5 make -f place.mk
check "build exits 0" [ $? -eq 0 ]
check "build runs in jobgov-PID/build" grep -q '^0::/jobgov-[0-9]*/build$' cg
check "memory.high is the budget" [ "$(cat high)" = 67108864 ]
check "memory.max is budget + reserve" [ "$(cat max)" = 134217728 ]
check "cpu.max is 0.5 CPU" [ "$(cat cpumax)" = "50000 100000" ]
check "the build's cgroup has PSI" grep -q '^some avg10=' psi
check "cgroups removed at exit" no_jobgov_cgroups

# 2. Freeze stops progress, thaw resumes it; ctl status says frozen.
echo "vm: part 2: Freeze stops progress, thaw resumes it; ctl status says frozen"
# The job counts until told to stop (a file), so slow emulation cannot make it end before the checks.
cat > count.mk <<'MK'
all:
	@while [ ! -f stop ]; do echo x >> counter; sleep 0.1; done
MK
rm -f counter stop
jobgov -q make -f count.mk &
P=$!
wait_for 30 counter_above 2
jobgov ctl freeze --pid $P > /dev/null
check "cgroup.events says frozen" grep -q 'frozen 1' /sys/fs/cgroup/jobgov-$P/cgroup.events
a=$(lines counter); sleep 1; b=$(lines counter)
check "no progress while frozen ($a -> $b)" [ "$a" = "$b" ]
check "ctl status reports frozen" sh -c "jobgov ctl status --json --pid $P | grep -q '\"frozen\":true'"
jobgov ctl thaw --pid $P > /dev/null
check "progress after thaw" wait_for 10 counter_above "$((b + 3))"
touch stop
wait $P
check "frozen-and-thawed build exits 0" [ $? -eq 0 ]
check "cgroups removed after the freeze test" no_jobgov_cgroups

# 3. The watchdog: jobgov killed with SIGKILL while the build is frozen.
echo "vm: part 3: The watchdog: jobgov killed with SIGKILL while the build is frozen"
rm -f counter stop
jobgov -q --memory-budget 64M make -f count.mk &
P=$!
wait_for 30 counter_above 2
jobgov ctl freeze --pid $P > /dev/null
a=$(lines counter)
kill -9 $P
check "watchdog thaws the build" wait_for 10 counter_above "$((a + 3))"
check "watchdog lifts memory.max" wait_for 5 sh -c "[ \"\$(cat /sys/fs/cgroup/jobgov-$P/memory.max 2>/dev/null)\" = max ]"
check "watchdog removes the FIFO's directory" wait_for 5 sh -c "! ls -d /tmp/jobgov-$P-* >/dev/null 2>&1"
touch stop
check "the build runs to the end" wait_for 30 sh -c "! ls -d /sys/fs/cgroup/jobgov-$P/build >/dev/null 2>&1 || [ -z \"\$(cat /sys/fs/cgroup/jobgov-$P/build/cgroup.procs)\" ]"
check "watchdog removes the cgroups" wait_for 10 no_jobgov_cgroups

# 4. ctl kill ends the build through cgroup.kill.
echo "vm: part 4: ctl kill ends the build through cgroup"
cat > sleep.mk <<'MK'
all: a b
a b:
	@sleep 60
MK
jobgov -q make -j2 -f sleep.mk &
P=$!
wait_for 30 test -d /sys/fs/cgroup/jobgov-$P/build
sleep 0.5
jobgov ctl kill --pid $P > /dev/null
wait $P
status=$?
check "killed build ends with a signal status ($status)" [ "$status" -gt 128 ]
check "cgroups removed after kill" wait_for 10 no_jobgov_cgroups

# 5. monitor reads a running build's v2 cgroup.
echo "vm: part 5: monitor reads a running build's v2 cgroup"
jobgov -q make -j2 -f sleep.mk &
P=$!
wait_for 30 test -d /sys/fs/cgroup/jobgov-$P/build
jobgov monitor --pid $P --json --count 1 --interval 0.5 > mon.json
check "monitor shows the cgroup's memory.current" grep -q '"cgroup_usage":[1-9]' mon.json
check "monitor shows the cgroup's memory PSI" grep -q '"cgroup_psi_memory_some"' mon.json
jobgov ctl kill --pid $P > /dev/null
wait $P

# 6. The governor on pure v2: eight 60 MiB jobs at -j8. Plainly, in a cgroup with memory.max 200M, the kernel's
echo "vm: part 6: The governor on pure v2: eight 60 MiB jobs at -j8"
# OOM killer ends some; under jobgov with a 128 MiB budget (memory.high 128M, memory.max 192M) none is killed.
cat > mem.mk <<'MK'
J := j1 j2 j3 j4 j5 j6 j7 j8
all: $(J)
$(J):
	@memjob --name $@ --peak 60 --ramp 1 --hold 0.3 --out $@
MK
oom_kills() { sed -n 's/^oom_kill //p' "$1/memory.events"; }
mkdir /sys/fs/cgroup/plain-mem
echo 200M > /sys/fs/cgroup/plain-mem/memory.max
sh -c 'echo $$ > /sys/fs/cgroup/plain-mem/cgroup.procs; exec make -k -s -j8 -f mem.mk' > /dev/null 2>&1
plain_kills=$(oom_kills /sys/fs/cgroup/plain-mem)
rmdir /sys/fs/cgroup/plain-mem
check "plain make -j8 of 8 x 60 MiB in 200M is OOM-killed ($plain_kills kills)" [ "${plain_kills:-0}" -gt 0 ]
rm -f j1 j2 j3 j4 j5 j6 j7 j8
jobgov --memory-budget 128M --summary-json gov.json make -s -j8 -f mem.mk > gov.out 2>&1
check "jobgov make -j8 with a 128M budget exits 0" [ $? -eq 0 ]
check "  with no OOM kill" grep -q '"oom_kills":0' gov.json
all_jobs_done() { for j in j1 j2 j3 j4 j5 j6 j7 j8; do [ -f $j ] || return 1; done; }
check "  and every job done" all_jobs_done
grep -E '^jobgov: (build|memory)' gov.out
check "cgroups removed after the governed build" no_jobgov_cgroups

# 7. jobgov daemon --cgroups, as a service with Delegate=yes runs it: an unprivileged build gets a cgroup below the
echo "vm: part 7: jobgov daemon --cgroups: an unprivileged build gets a cgroup below the daemon's"
# daemon's own (svc, as systemd would make it), with the delegated tier and its budget from svc's memory.max.
grep -q '^nobody:' /etc/passwd 2>/dev/null || echo "nobody:x:65534:65534:nobody:/tmp:/bin/sh" >> /etc/passwd
grep -q '^nogroup:' /etc/group 2>/dev/null || echo "nogroup:x:65534:" >> /etc/group
echo "+memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
mkdir /sys/fs/cgroup/svc
echo 512M > /sys/fs/cgroup/svc/memory.max
sh -c 'echo $$ > /sys/fs/cgroup/svc/cgroup.procs; exec jobgov daemon --cgroups --group nogroup --pool 0 --socket /tmp/d.sock' > daemon.out 2>&1 &
D=$!
wait_for 30 test -S /tmp/d.sock
mkdir -p /tmp/u
chmod 777 /tmp/u
printf 'all:\n\t@cat /proc/self/cgroup > cg\n' > /tmp/u/u.mk
chmod 644 /tmp/u/u.mk
(cd /tmp/u && su -s /bin/sh nobody -c "TMPDIR=/tmp/u JOBGOV_DAEMON_SOCKET=/tmp/d.sock jobgov make -f u.mk" > out 2>&1)
check "nobody's build exits 0" [ $? -eq 0 ]
check "  in a cgroup from the daemon" grep -q "from jobgov daemon at /tmp/d.sock" /tmp/u/out
check "  with the delegated tier" grep -q "tier: delegated cgroup (unified cgroups)" /tmp/u/out
check "  its job in its leaf below the daemon's grant" grep -q '^0::/svc/build-[0-9]*/jobgov-[0-9]*/build$' /tmp/u/cg
check "  its budget from the daemon's cgroup" grep -q "(cgroup limit)" /tmp/u/out
no_grants() { ! ls -d /sys/fs/cgroup/svc/build-* >/dev/null 2>&1; }
check "the daemon removes the cgroups it made" wait_for 20 no_grants
kill $D
wait $D
check "the daemon moved itself into a leaf to pass the memory controller down" grep -q "moved itself to /sys/fs/cgroup/svc/daemon" daemon.out
grep -E '^jobgov: (make runs|tier)' /tmp/u/out
rmdir /sys/fs/cgroup/svc/daemon /sys/fs/cgroup/svc

[ -x /usr/bin/jobgov-probe-bench ] && . /t/bpf-tests.sh

echo "VM-RESULT: $pass passed, $fail failed"
