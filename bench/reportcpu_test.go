package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/proccluster"
)

// reportServers is how many media servers BenchmarkReportCPU simulates,
// each reporting once a second (SWITCHYARD_BENCH_REPORT_SERVERS changes
// it). Two cores hold the agents and the load generator at this size;
// the figure per report holds above it (it is per report).
const reportServers = 2_000

// BenchmarkReportCPU measures what load reports cost the agents: three
// agent processes, `switchyard loadgen` in a process of its own
// simulating reportServers media servers (one QUIC connection and media
// certificate each, spread over the agents) that report every second.
// Once every server is registered and reporting, it reads the agents' CPU
// time (/proc) and their accepted-datagram counters (/metrics) over a
// 20 s window. `agent-cores-per-10k-reports/s` is the agents' CPU (all
// three, including sharing every report with the other two) above what
// they use idle (`idle-agent-cores`, measured first for 10 s) per 10,000
// reports a second; `reports/s` what was accepted.
func BenchmarkReportCPU(b *testing.B) {
	servers := reportServers
	if v, err := strconv.Atoi(os.Getenv("SWITCHYARD_BENCH_REPORT_SERVERS")); err == nil && v > 0 {
		servers = v
	}
	bin := proccluster.BuildBinary(b)
	for range b.N {
		// A report a second leaves two reports in the default 2 s failure
		// window: one late report would mark a server down.
		pc := proccluster.NewWithOptions(b, bin, 3, proccluster.Options{QUIC: true, Args: []string{"--failure-window", "5s"}})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		b.Cleanup(cancel)
		leader, err := pc.WaitLeader(ctx)
		if err != nil {
			b.Fatal(err)
		}
		read := func() (cpu time.Duration, accepted float64) {
			for _, p := range pc.Nodes {
				ticks, err := cpuTicks(p.Pid()) // requestpath_test.go
				if err != nil {
					b.Fatal(err)
				}
				cpu += time.Duration(ticks) * time.Second / 100 // USER_HZ
				accepted += scrapeSum(b, "http://"+p.HTTPAddr+"/metrics", `switchyard_quic_datagrams_total{result="accepted"}`)
			}
			return cpu, accepted
		}
		// What the idle agents cost (raft heartbeats, housekeeping).
		t0 := time.Now()
		idle0, _ := read()
		time.Sleep(10 * time.Second)
		idle1, _ := read()
		idle := (idle1 - idle0).Seconds() / time.Since(t0).Seconds()
		var quic []string
		for _, p := range pc.Nodes {
			quic = append(quic, p.QUICAddr)
		}
		lg := exec.CommandContext(ctx, bin, "loadgen", "--allocators", strings.Join(quic, ","), "--servers", fmt.Sprint(servers),
			"--interval", "1s", "--duration", "10m", "--id-prefix", "rc-", "--ca-dir", pc.CertDir, "--log-level", "error")
		var out strings.Builder
		lg.Stdout, lg.Stderr = &out, &out
		lg.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := lg.Start(); err != nil {
			b.Fatal(err)
		}
		var stopped sync.Once
		stop := func() {
			stopped.Do(func() {
				_ = syscall.Kill(-lg.Process.Pid, syscall.SIGKILL)
				_ = lg.Wait()
			})
		}
		b.Cleanup(stop) // also when the benchmark fails midway
		cl := api.NewClient(leader.HTTPAddr)
		start := time.Now()
		for {
			page, err := cl.FilteredServersPage(ctx, api.ServerListOptions{States: []string{api.ServerActive}, Prefix: "rc-"}, api.PageOptions{Limit: 1})
			if err == nil && page.Total >= servers {
				break
			}
			if ctx.Err() != nil || time.Since(start) > 5*time.Minute {
				stop()
				b.Fatalf("%d of %d servers active after %v: %v\nloadgen: %s", page.Total, servers, time.Since(start).Round(time.Second), err, out.String())
			}
			time.Sleep(time.Second)
		}
		registered := time.Since(start)
		time.Sleep(5 * time.Second) // every server past its first reports
		t0 = time.Now()
		cpu0, acc0 := read()
		time.Sleep(20 * time.Second)
		cpu1, acc1 := read()
		window := time.Since(t0).Seconds()
		stop()
		cancel()
		pc.Close()
		rate := (acc1 - acc0) / window
		cores := (cpu1 - cpu0).Seconds() / window
		if rate <= 0 {
			b.Fatalf("no report accepted in %.0f s", window)
		}
		b.ReportMetric(float64(servers), "servers")
		b.ReportMetric(registered.Seconds(), "register-all-s")
		b.ReportMetric(rate, "reports/s")
		b.ReportMetric(cores, "agent-cores")
		b.ReportMetric(idle, "idle-agent-cores")
		b.ReportMetric((cores-idle)/(rate/10_000), "agent-cores-per-10k-reports/s")
		b.ReportMetric(0, "ns/op")
	}
}

// scrapeSum is the value of the series named exactly by series (name and
// labels as the exposition prints them) on a Prometheus endpoint; a
// missing series fails the benchmark.
func scrapeSum(b *testing.B, url, series string) float64 {
	b.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: HTTP %d", url, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				b.Fatal(err)
			}
			return f
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatalf("%s: %v", url, err)
	}
	b.Fatalf("%s has no %s", url, series)
	return 0
}
