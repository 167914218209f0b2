# suspects.py: the CPU cost of one operation of each kind a build tool
# makes, printed as "name ns" lines (BenchmarkToolSlowdown in bench_test.go
# runs it bare, under the sandbox's seccomp filter alone, under its
# Landlock domain alone, and in the whole sandbox). Each figure is the best
# of three rounds of the process's own CPU time, so other load on the
# machine distorts it little.
import os
import time

N = int(os.environ.get("SUSPECT_N", "100000"))


def best(f, n):
    out = None
    for _ in range(3):
        c0 = time.process_time_ns()
        f(n)
        c = (time.process_time_ns() - c0) / n
        out = c if out is None or c < out else out
    return out


def cpu(n):  # no system call at all: the CPU itself (speculation mitigations)
    s = 0
    for i in range(n * 10):
        s += i


def getppid(n):  # the cheapest system call: entry and seccomp
    for _ in range(n):
        os.getppid()


def stat_usr(n):  # a path lookup through the read-only bind of /usr
    for _ in range(n):
        os.stat("/usr/lib")


def open_etc(n):  # open and close through a bind (Landlock's file hooks)
    for _ in range(n):
        os.close(os.open("/etc/passwd", os.O_RDONLY))


def open_dev(n):  # the minimal /dev's bind mounts
    for _ in range(n):
        os.close(os.open("/dev/null", os.O_RDONLY))


def open_proc(n):  # the fresh /proc and its read-only covers
    for _ in range(n):
        os.close(os.open("/proc/self/stat", os.O_RDONLY))


def stat_missing(n):  # failed lookups, as an import's search path makes
    for _ in range(n):
        try:
            os.stat("/usr/lib/python3/dist-packages/no_such_module.py")
        except FileNotFoundError:
            pass


for name, f in [("cpu", cpu), ("getppid", getppid), ("stat", stat_usr), ("stat-missing", stat_missing),
                ("open-etc", open_etc), ("open-dev", open_dev), ("open-proc", open_proc)]:
    print(name, round(best(f, N)))
