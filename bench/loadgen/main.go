// Command loadgen is the benchmarks' closed-loop HTTP load generator: N requests, C at a
// time, each connection kept alive, and what it measured as one JSON object on stdout.
//
// It exists so that the client is not what a benchmark measures: a Python client spends
// one to three milliseconds of CPU per request, as much as the services it loads, on the
// same two cores. This one spends a few tens of microseconds (its own CPU is reported, so
// a run can show it).
//
// The requests come from a file of JSON lines, {"url": ..., "body": ...} (body optional),
// used in turn and cycled; every request has the same method and headers. A request
// succeeds when it answers 2xx.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type target struct {
	URL  string `json:"url"`
	Body string `json:"body"`
}

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

type result struct {
	Requests    int            `json:"requests"`
	Errors      int            `json:"errors"`
	Statuses    map[string]int `json:"statuses"`
	FirstError  string         `json:"first_error,omitempty"`
	LatenciesMs []float64      `json:"latencies_ms"`
	ElapsedS    float64        `json:"elapsed_s"`
	ClientCPUS  float64        `json:"client_cpu_s"`
}

func main() {
	method := flag.String("method", "GET", "the HTTP method of every request")
	targetsFile := flag.String("targets", "", "JSON lines of {\"url\", \"body\"}, used in turn")
	concurrency := flag.Int("c", 1, "requests on their way at once")
	requests := flag.Int("n", 100, "requests measured")
	warmup := flag.Int("warmup", 0, "requests made first and not measured")
	timeout := flag.Duration("timeout", 60*time.Second, "the longest wait for one answer")
	var hdrs headers
	flag.Var(&hdrs, "H", "a header, \"Name: value\" (repeatable)")
	flag.Parse()

	targets, err := readTargets(*targetsFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	client := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        *concurrency * 2,
			MaxIdleConnsPerHost: *concurrency * 2,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
	var next atomic.Int64
	call := func() (int, error) {
		t := targets[int(next.Add(1)-1)%len(targets)]
		var body io.Reader
		if t.Body != "" {
			body = strings.NewReader(t.Body)
		}
		req, err := http.NewRequest(*method, t.URL, body)
		if err != nil {
			return 0, err
		}
		for _, h := range hdrs {
			name, value, _ := strings.Cut(h, ":")
			req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
		}
		if t.Body != "" && req.Header.Get("Content-Type") == "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, err
	}

	run := func(n int) result {
		r := result{Statuses: map[string]int{}, LatenciesMs: make([]float64, 0, n)}
		var mu sync.Mutex
		var left atomic.Int64
		left.Store(int64(n))
		var wg sync.WaitGroup
		began := time.Now()
		for w := 0; w < *concurrency; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for left.Add(-1) >= 0 {
					start := time.Now()
					status, err := call()
					ms := float64(time.Since(start).Microseconds()) / 1000
					mu.Lock()
					r.Requests++
					r.LatenciesMs = append(r.LatenciesMs, ms)
					r.Statuses[fmt.Sprint(status)]++
					if err != nil || status < 200 || status > 299 {
						r.Errors++
						if r.FirstError == "" {
							r.FirstError = fmt.Sprintf("status %d: %v", status, err)
						}
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		r.ElapsedS = time.Since(began).Seconds()
		sort.Float64s(r.LatenciesMs)
		return r
	}

	if *warmup > 0 {
		run(*warmup)
	}
	cpuBefore := cpuSeconds()
	r := run(*requests)
	r.ClientCPUS = cpuSeconds() - cpuBefore
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	if err := json.NewEncoder(out).Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func readTargets(path string) ([]target, error) {
	if path == "" {
		return nil, fmt.Errorf("-targets is required")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var targets []target
	for i, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var t target
		if err := json.Unmarshal(line, &t); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, i+1, err)
		}
		targets = append(targets, t)
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("%s: no targets", path)
	}
	return targets, nil
}

// cpuSeconds is the user and system CPU this process has used so far.
func cpuSeconds() float64 {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		return 0
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano()).Seconds()
}
