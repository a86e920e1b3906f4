// dockerlike: a Fluentd client built on fluent-logger-golang, configured the way Docker's
// `fluentd` log driver (moby daemon/logger/fluentd) configures it:
//
//	fluent.Config{Async, SubSecondPrecision, RequestAck, ForceStopAsyncSend: async, ...}
//	PostWithTime(tag, ts, map[string]string{container_id, container_name, source, log, ...})
//
// which puts on the wire Message mode, 4 elements: [tag, time, record, option], time as the
// smallest signed int (0xd2 int32 for epoch seconds) or fixext8 EventTime with -subsecond,
// option {} or {"chunk": "<24 base64 chars>"} with -ack.
//
// Derived from ../shared/tools/dockerlike.go (relative to the repository root). Builds offline
// in GOPATH mode against Debian's golang-github-fluent-fluent-logger-golang-dev (v1.9.0); see
// tests/clients/README.md.
//
// Two sources of records:
//
//	-corpus FILE   replay a corpus jsonl ({tag, time, record} per line): one logger (= one TCP
//	               connection) per record.container_id, records in file order, each with its
//	               own tag and time, the record sent as map[string]string exactly as in the file.
//	-count N       N synthetic Docker-style records with time.Now().
//
// Prints one JSON summary line on stdout and exits 0 only if every record was delivered
// (written, and acked with -ack): 1 on errors/losses, 2 when -deadline fires, 64 on bad usage.
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	mrand "math/rand"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
)

type summary struct {
	Sent        int64  `json:"sent"`
	Errors      int64  `json:"errors"`
	Posted      int64  `json:"posted"`
	Discarded   int64  `json:"discarded"`
	Total       int64  `json:"total"`
	Connections int    `json:"loggers"`
	Mode        string `json:"mode"`
	Ack         bool   `json:"ack"`
	Subsecond   bool   `json:"subsecond"`
	TimedOut    bool   `json:"timed_out"`
	ElapsedMs   int64  `json:"elapsed_ms"`
}

var (
	sent, errs, posted int64 // atomics: async results arrive on the library's goroutines
	total              int64
	nLoggers           int64
	start              = time.Now()
	printOnce          sync.Once
	cfgMode            string
	cfgAck, cfgSubsec  bool
)

func report(timedOut bool) {
	printOnce.Do(func() {
		s := summary{
			Sent: atomic.LoadInt64(&sent), Errors: atomic.LoadInt64(&errs),
			Posted: atomic.LoadInt64(&posted), Total: atomic.LoadInt64(&total),
			Connections: int(atomic.LoadInt64(&nLoggers)), Mode: cfgMode,
			Ack: cfgAck, Subsecond: cfgSubsec, TimedOut: timedOut,
			ElapsedMs: time.Since(start).Milliseconds(),
		}
		if cfgMode == "async" && !timedOut {
			// queued but never handed to the result callback: dropped by Close() (ForceStopAsyncSend)
			s.Discarded = s.Posted - s.Sent - countAsyncFailures()
			if s.Discarded < 0 {
				s.Discarded = 0
			}
		}
		b, _ := json.Marshal(s)
		os.Stdout.Write(append(b, '\n'))
	})
}

var asyncFailures int64

func countAsyncFailures() int64 { return atomic.LoadInt64(&asyncFailures) }

func fail(code int, format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "dockerlike: "+format+"\n", a...)
	report(code == 2)
	os.Exit(code)
}

type corpusLine struct {
	Tag    string            `json:"tag"`
	Time   json.Number       `json:"time"`
	Record map[string]string `json:"record"`
}

func parseTime(n json.Number) (time.Time, error) {
	s := n.String()
	if !strings.ContainsAny(s, ".eE") {
		sec, err := strconv.ParseInt(s, 10, 64)
		return time.Unix(sec, 0), err
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return time.Time{}, err
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9+0.5)), nil
}

func randomHex(nBytes int) string {
	b := make([]byte, nBytes)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func main() {
	addr := flag.String("addr", "", "fluentd address: HOST:PORT, tcp://HOST:PORT or unix:///PATH (required)")
	corpus := flag.String("corpus", "", "replay this corpus jsonl ({tag,time,record} per line)")
	count := flag.Int("count", 0, "send N synthetic Docker-style records (instead of -corpus)")
	tag := flag.String("tag", "", "tag for -count (default: the 12-char short container id, Docker's default)")
	startSeq := flag.Int("start", 0, "first seq for -count")
	containerID := flag.String("container-id", "", "container_id for -count (default: random 64 hex)")
	containerName := flag.String("container-name", "/app", "container_name for -count")
	source := flag.String("source", "stdout", "source for -count")
	ack := flag.Bool("ack", false, "RequestAck (fluentd-request-ack): option {\"chunk\": id}, blocks on each ack")
	subsec := flag.Bool("subsecond", false, "SubSecondPrecision (fluentd-sub-second-precision): EventTime instead of int time")
	async := flag.Bool("async", false, "Async (fluentd-async)")
	forceStop := flag.Bool("force-stop-async", false, "ForceStopAsyncSend (Docker sets it = async): Close() discards queued records")
	maxRetry := flag.Int("max-retry", 3, "MaxRetry (Docker: MaxInt32), for connect and for write")
	retryWait := flag.Int("retry-wait", 1000, "RetryWait in ms (Docker: 1000)")
	maxRetryWait := flag.Int("max-retry-wait", 10000, "MaxRetryWait in ms (Docker: 60000)")
	bufferLimit := flag.Int("buffer-limit", 1024*1024, "BufferLimit: async queue length in records (Docker: 1048576)")
	dialTimeout := flag.Duration("dial-timeout", 3*time.Second, "Timeout: connect timeout (library default 3s)")
	writeTimeout := flag.Duration("write-timeout", 10*time.Second, "WriteTimeout: socket write deadline, 0 = none (Docker < 29: none); does NOT bound the ack read")
	deadline := flag.Duration("deadline", 120*time.Second, "whole-program watchdog: print the summary and exit 2 when exceeded (0 = off)")
	sleep := flag.Duration("sleep", 0, "wait this long after the last Post before Close()")
	version := flag.Bool("version", false, "print versions and exit")
	flag.Parse()

	if *version {
		fmt.Printf("dockerlike fluent-logger-golang/%s %s\n", fluent.Version, runtime.Version())
		return
	}
	// Go < 1.20 leaves math/rand unseeded; the library's chunk ids come from math/rand.
	mrand.Seed(time.Now().UnixNano() ^ int64(os.Getpid())<<32)

	cfgMode, cfgAck, cfgSubsec = "sync", *ack, *subsec
	if *async {
		cfgMode = "async"
	}
	if *addr == "" {
		fmt.Fprintln(os.Stderr, "dockerlike: -addr is required")
		os.Exit(64)
	}
	if (*corpus == "") == (*count <= 0) {
		fmt.Fprintln(os.Stderr, "dockerlike: give exactly one of -corpus FILE or -count N (N > 0)")
		os.Exit(64)
	}

	base := fluent.Config{
		Timeout: *dialTimeout, WriteTimeout: *writeTimeout,
		BufferLimit: *bufferLimit, RetryWait: *retryWait, MaxRetry: *maxRetry, MaxRetryWait: *maxRetryWait,
		Async: *async, ForceStopAsyncSend: *async && *forceStop,
		SubSecondPrecision: *subsec, RequestAck: *ack,
	}
	switch {
	case strings.HasPrefix(*addr, "unix://"):
		base.FluentNetwork, base.FluentSocketPath = "unix", strings.TrimPrefix(*addr, "unix://")
	default:
		hp := strings.TrimPrefix(*addr, "tcp://")
		host, portStr, err := net.SplitHostPort(hp)
		port, perr := strconv.Atoi(portStr)
		if err != nil || perr != nil || port <= 0 {
			fmt.Fprintf(os.Stderr, "dockerlike: bad -addr %q\n", *addr)
			os.Exit(64)
		}
		base.FluentNetwork, base.FluentHost, base.FluentPort = "tcp", host, port
	}
	if *async {
		base.AsyncResultCallback = func(_ []byte, err error) {
			if err != nil {
				atomic.AddInt64(&errs, 1)
				atomic.AddInt64(&asyncFailures, 1)
				fmt.Fprintf(os.Stderr, "dockerlike: async send failed: %v\n", err)
			} else {
				atomic.AddInt64(&sent, 1)
			}
		}
	}

	if *deadline > 0 {
		time.AfterFunc(*deadline, func() {
			fail(2, "deadline %s exceeded (sent %d of %d; a missing ack blocks fluent-logger-golang forever)",
				*deadline, atomic.LoadInt64(&sent), atomic.LoadInt64(&total))
		})
	}

	// One logger (= one connection) per container, created on first use, closed in creation order.
	loggers := map[string]*fluent.Fluent{}
	var order []*fluent.Fluent
	get := func(cid string) *fluent.Fluent {
		if l, ok := loggers[cid]; ok {
			return l
		}
		l, err := fluent.New(base) // sync: connects once now, as Docker does at container start
		if err != nil {
			atomic.AddInt64(&errs, 1)
			fail(1, "fluent.New for container %s: %v", cid, err)
		}
		loggers[cid] = l
		order = append(order, l)
		atomic.AddInt64(&nLoggers, 1)
		return l
	}
	post := func(l *fluent.Fluent, tag string, ts time.Time, rec map[string]string) {
		atomic.AddInt64(&total, 1)
		if err := l.PostWithTime(tag, ts, rec); err != nil {
			atomic.AddInt64(&errs, 1)
			fmt.Fprintf(os.Stderr, "dockerlike: post #%d: %v\n", atomic.LoadInt64(&total), err)
			return
		}
		atomic.AddInt64(&posted, 1)
		if !*async {
			atomic.AddInt64(&sent, 1)
		}
	}

	if *corpus != "" {
		f, err := os.Open(*corpus)
		if err != nil {
			fail(1, "%v", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 256<<20)
		lineNo := 0
		for sc.Scan() {
			lineNo++
			line := sc.Bytes()
			if len(strings.TrimSpace(string(line))) == 0 {
				continue
			}
			var cl corpusLine
			dec := json.NewDecoder(strings.NewReader(string(line)))
			dec.UseNumber()
			if err := dec.Decode(&cl); err != nil {
				fail(1, "%s:%d: %v", *corpus, lineNo, err)
			}
			ts, err := parseTime(cl.Time)
			if err != nil {
				fail(1, "%s:%d: bad time %q: %v", *corpus, lineNo, cl.Time, err)
			}
			post(get(cl.Record["container_id"]), cl.Tag, ts, cl.Record)
		}
		if err := sc.Err(); err != nil {
			fail(1, "%s: %v", *corpus, err)
		}
		f.Close()
	} else {
		cid := *containerID
		if cid == "" {
			cid = randomHex(32)
		}
		t := *tag
		if t == "" {
			t = cid[:12]
		}
		l := get(cid)
		for i := *startSeq; i < *startSeq+*count; i++ {
			post(l, t, time.Now(), map[string]string{
				"container_id":   cid,
				"container_name": *containerName,
				"source":         *source,
				"log":            fmt.Sprintf(`{"seq":%d,"msg":"hello %d"}`, i, i),
			})
		}
	}

	time.Sleep(*sleep)
	for _, l := range order {
		if err := l.Close(); err != nil {
			atomic.AddInt64(&errs, 1)
			fmt.Fprintf(os.Stderr, "dockerlike: close: %v\n", err)
		}
	}
	report(false)
	if atomic.LoadInt64(&errs) > 0 || atomic.LoadInt64(&sent) != atomic.LoadInt64(&total) {
		os.Exit(1)
	}
}
