package main

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/securetext/securetext/hack/bench/internal/benchkit"
)

// The operator's counters are read in-process from controller-runtime's registry, where
// controller-runtime, client-go (through controller-runtime's adapter) and the controllers
// package register them: the same numbers /metrics would serve.

// series is one time series; a histogram is two, <name>_count and <name>_sum.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

type metricSnapshot map[string]series

// gather reads every counter, gauge and histogram in the registry.
func gather() (metricSnapshot, error) {
	fams, err := metrics.Registry.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather metrics: %w", err)
	}
	snap := metricSnapshot{}
	add := func(name string, labels map[string]string, v float64) {
		key := name
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			key += "," + k + "=" + labels[k]
		}
		snap[key] = series{name: name, labels: labels, value: v}
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				add(f.GetName(), labels, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(f.GetName(), labels, m.GetGauge().GetValue())
			case dto.MetricType_HISTOGRAM:
				add(f.GetName()+"_count", labels, float64(m.GetHistogram().GetSampleCount()))
				add(f.GetName()+"_sum", labels, m.GetHistogram().GetSampleSum())
			}
		}
	}
	return snap, nil
}

// metricsDelta is what the counters gained between two snapshots.
type metricsDelta []series

func (after metricSnapshot) since(before metricSnapshot) metricsDelta {
	var d metricsDelta
	for key, s := range after {
		s.value -= before[key].value
		d = append(d, s)
	}
	return d
}

// sum adds up the series called name whose labels include match.
func (d metricsDelta) sum(name string, match map[string]string) float64 {
	var total float64
	for _, v := range d.by(name, "", match) {
		total += v
	}
	return total
}

// by adds up the series called name whose labels include match, per value of label.
func (d metricsDelta) by(name, label string, match map[string]string) map[string]float64 {
	out := map[string]float64{}
next:
	for _, s := range d {
		if s.name != name {
			continue
		}
		for k, v := range match {
			if s.labels[k] != v {
				continue next
			}
		}
		out[s.labels[label]] += s.value
	}
	return out
}

// memory is this process's memory: Go's view after a GC, and the kernel's.
type memory struct {
	heapInuse, sys uint64 // runtime.MemStats, bytes
	rss, hwm       uint64 // VmRSS and VmHWM (peak RSS) from /proc/self/status, bytes
}

func readMemory() memory {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := memory{heapInuse: ms.HeapInuse, sys: ms.Sys}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			m.rss = kb << 10
		case "VmHWM":
			m.hwm = kb << 10
		}
	}
	return m
}

// CPU time from /proc, of this process and of the servers it started (its children:
// kube-apiserver, etcd, vault-dev), so the table can say where the run's CPU went. Other
// processes on the machine, such as other test runs, are not counted.

// cpuTicks is utime+stime per process name: "bench" for this process, the command's name for
// its children.
type cpuTicks map[string]int64

type cpuDelta map[string]float64 // seconds

func takeCPU() cpuTicks {
	self := os.Getpid()
	ticks := cpuTicks{}
	for pid, p := range benchkit.Procs() {
		switch {
		case pid == self:
			ticks["bench"] += p.Ticks
		case p.PPID == self:
			ticks[p.Comm] += p.Ticks
		}
	}
	return ticks
}

func cpuSince(before cpuTicks) cpuDelta {
	d := cpuDelta{}
	for name, t := range takeCPU() {
		d[name] = float64(t-before[name]) / benchkit.UserHZ
	}
	return d
}
