package testenv

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// TreeCPU is the CPU time used so far by this process, by the children it
// reaped, and by its live children with what they reaped: the sandbox's
// launcher lives across builds and reaps every build's processes, so a
// benchmark that counted only reaped children would leave the builds
// out. Live children whose command name is in skip (the tests' own
// redis-server, say) are not counted.
func TreeCPU(skip ...string) time.Duration {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	var total time.Duration
	for _, tv := range []syscall.Timeval{self.Utime, self.Stime, children.Utime, children.Stime} {
		total += time.Duration(tv.Nano())
	}
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		b, _ := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		for _, field := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(field)
			comm, _ := os.ReadFile("/proc/" + field + "/comm")
			if contains(skip, strings.TrimSpace(string(comm))) {
				continue
			}
			cpu, _ := ProcessCPU(pid, true)
			total += cpu
		}
	}
	return total
}

// ProcessCPU is the user and system CPU process pid has used so far, and
// with children that of the children it reaped too (/proc/<pid>/stat).
func ProcessCPU(pid int, children bool) (time.Duration, error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The fields after the command name (which may hold spaces) start
	// with the state; utime, stime, cutime and cstime are the 12th to
	// 15th of them.
	_, rest, _ := strings.Cut(string(stat), ") ")
	f := strings.Fields(rest)
	fields := []int{11, 12}
	if children {
		fields = append(fields, 13, 14)
	}
	var total time.Duration
	for _, i := range fields {
		if i < len(f) {
			ticks, _ := strconv.ParseInt(f[i], 10, 64)
			total += time.Duration(ticks) * time.Second / 100 // USER_HZ is 100 on Linux
		}
	}
	return total, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
