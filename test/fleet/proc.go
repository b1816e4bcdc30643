package fleet

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat and /proc/stat: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// ProcStat is one process's resident set and CPU time (user + system) so far.
type ProcStat struct {
	RSS uint64 // bytes (VmRSS)
	CPU time.Duration
}

// ReadProc reads pid's VmRSS from /proc/<pid>/status and its utime+stime from /proc/<pid>/stat.
func ReadProc(pid int) (ProcStat, error) {
	var st ProcStat
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return st, fmt.Errorf("/proc/%d/stat: no ')' in %q", pid, s)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state); utime and stime are fields 14 and 15
	if len(f) < 13 {
		return st, fmt.Errorf("/proc/%d/stat: %d fields after the command name", pid, len(f))
	}
	var ticks uint64
	for _, field := range f[11:13] {
		n, err := strconv.ParseUint(field, 10, 64)
		if err != nil {
			return st, fmt.Errorf("/proc/%d/stat: CPU time %q: %w", pid, field, err)
		}
		ticks += n
	}
	st.CPU = time.Duration(ticks) * time.Second / clockTicks
	st.RSS, err = statusKB(pid, "VmRSS")
	return st, err
}

// statusKB returns a "kB" field of /proc/<pid>/status in bytes.
func statusKB(pid int, key string) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status %s: %q: %w", pid, key, v, err)
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, key)
}

// MachineCPU is the machine's CPU time so far (the "cpu" line of /proc/stat), busy and in all.
type MachineCPU struct{ Busy, Total time.Duration }

// ReadMachineCPU reads /proc/stat: user, nice, system, idle, iowait, irq, softirq and steal; idle
// and iowait count as not busy.
func ReadMachineCPU() (MachineCPU, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineCPU{}, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return MachineCPU{}, fmt.Errorf("/proc/stat: first line %q", line)
	}
	var m MachineCPU
	for i, field := range f[1:min(len(f), 9)] { // guest and guest_nice are inside user and nice already
		n, err := strconv.ParseUint(field, 10, 64)
		if err != nil {
			return MachineCPU{}, fmt.Errorf("/proc/stat: %q: %w", field, err)
		}
		d := time.Duration(n) * time.Second / clockTicks
		m.Total += d
		if i != 3 && i != 4 { // idle, iowait
			m.Busy += d
		}
	}
	return m, nil
}

// LoadAverage returns the one-minute load average from /proc/loadavg.
func LoadAverage() (float64, error) {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0, fmt.Errorf("/proc/loadavg: empty")
	}
	return strconv.ParseFloat(f[0], 64)
}
