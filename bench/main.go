// Command bench measures asyncflow next to NATS JetStream in one process
// and compares the results with asyncflow's performance targets.
//
//	cd bench && go run . -duration 5s
//
// It runs, one after the other:
//
//   - floor: the work every round trip does whatever carries it (one
//     ULID, the three Candid records encoded and decoded, two CRC-32s);
//   - memory, bolt, http: full asyncflow round trips, from CallAsync
//     until the sender forgot the message and the receiver stored its
//     ackack, between two Flows: on MemoryStores over the in-memory
//     network, on bbolt files (every write synced) over the same
//     network, and on MemoryStores over signed HTTP calls on loopback
//     (ic.Transport to ic.Endpoint);
//   - js-memory, js-file: an embedded NATS server's JetStream doing the
//     same job: publish with Nats-Msg-Id, pull, DoubleAck, on a
//     work-queue stream in memory or in files synced on every write;
//   - pending: the heap a Flow and its MemoryStore hold per pending
//     message beyond its payload, and the time of one retry pass that
//     finds nothing due, at a small and a large pending count.
//
// Round-trip scenarios keep -inflight messages under way, each with a
// payload of -payload bytes, for -duration after -warmup. It prints a
// table of the results and one of the targets, each with its ratio and
// pass or miss; -markdown prints them as Markdown. -only runs a subset.
// Beside each round-trip rate it shows how many cores the process kept
// busy meanwhile: on a shared machine a low number means the run was
// starved of CPU rather than slow.
// The store and stream files go to a new directory under -dir: on a
// tmpfs a sync costs nothing, and the durable numbers mean little.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// config is what the flags set.
type config struct {
	load load
	// dir holds the store and stream files.
	dir      string
	markdown bool
	// only names the steps to run; empty runs all.
	only map[string]bool
	// httpIdle is the idle connections per host allowed to
	// http.DefaultTransport for the http scenario; 0 keeps Go's default.
	httpIdle int
	// cpuProfile, when set, names the file the CPU profile of the whole
	// run is written to.
	cpuProfile string
	// pendingSmall and pendingLarge are the pending counts of the pending
	// step, and passes how many retry passes it times at each.
	pendingSmall, pendingLarge, passes int
}

// The steps, in the order they run.
const (
	stepFloor    = "floor"
	stepMemory   = "memory"
	stepBolt     = "bolt"
	stepHTTP     = "http"
	stepJSMemory = "js-memory"
	stepJSFile   = "js-file"
	stepPending  = "pending"
)

var allSteps = []string{stepFloor, stepMemory, stepBolt, stepHTTP, stepJSMemory,
	stepJSFile, stepPending}

// titles name the round-trip scenarios in the results table.
var titles = map[string]string{
	stepMemory:   "asyncflow, MemoryStore, in-memory network",
	stepBolt:     "asyncflow, boltstore (fsync), in-memory network",
	stepHTTP:     "asyncflow, MemoryStore, signed HTTP on loopback",
	stepJSMemory: "JetStream, memory storage",
	stepJSFile:   "JetStream, file storage, SyncAlways",
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run measures, profiling if asked, and prints the report.
func run(cfg config) error {
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	res, err := measure(os.Stderr, cfg)
	if err != nil {
		return err
	}
	return report(os.Stdout, cfg, res)
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.DurationVar(&cfg.load.duration, "duration", 5*time.Second,
		"measured time of each round-trip scenario")
	fs.DurationVar(&cfg.load.warmup, "warmup", time.Second,
		"time each round-trip scenario runs before it is measured")
	fs.IntVar(&cfg.load.inFlight, "inflight", 256, "round trips under way at once")
	payload := fs.Int("payload", 100, "payload bytes of every message")
	fs.StringVar(&cfg.dir, "dir", os.TempDir(), "directory for store and stream files")
	fs.BoolVar(&cfg.markdown, "markdown", false, "print the tables as Markdown")
	only := fs.String("only", "", "comma-separated steps to run, of: "+
		strings.Join(allSteps, ", "))
	fs.IntVar(&cfg.httpIdle, "http-idle", 128,
		"idle connections per host for http.DefaultTransport, which agent-go uses; "+
			"0 keeps Go's default of 2")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file")
	fs.IntVar(&cfg.pendingSmall, "pending-small", 1_000, "small pending count")
	fs.IntVar(&cfg.pendingLarge, "pending", 1_000_000, "large pending count")
	fs.IntVar(&cfg.passes, "passes", 200, "retry passes timed at each pending count")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}

	cfg.load.payload = make([]byte, *payload)
	for i := range cfg.load.payload {
		cfg.load.payload[i] = byte(i)
	}
	cfg.only = map[string]bool{}
	for name := range strings.SplitSeq(*only, ",") {
		if name = strings.TrimSpace(name); name != "" {
			cfg.only[name] = true
		}
	}
	return cfg, cfg.validate()
}

func (cfg config) validate() error {
	for name := range cfg.only {
		if !slices.Contains(allSteps, name) {
			return fmt.Errorf("unknown step %q in -only; steps: %s", name,
				strings.Join(allSteps, ", "))
		}
	}
	switch {
	case cfg.load.inFlight < 1:
		return fmt.Errorf("-inflight %d: need at least 1", cfg.load.inFlight)
	case cfg.load.duration <= 0 || cfg.load.warmup < 0:
		return errors.New("-duration must be positive and -warmup not negative")
	case cfg.passes < 1 || cfg.pendingSmall < 1 ||
		cfg.pendingLarge < cfg.pendingSmall+cfg.passes:
		return fmt.Errorf("-pending %d must be at least -pending-small %d plus -passes %d",
			cfg.pendingLarge, cfg.pendingSmall, cfg.passes)
	}
	return nil
}

// runs reports whether the step is selected.
func (cfg config) runs(step string) bool {
	return len(cfg.only) == 0 || cfg.only[step]
}

// results is what a run measured. A step that did not run has no entry.
type results struct {
	rates map[string]float64
	// cores is the cores each round-trip scenario kept busy.
	cores   map[string]float64
	floor   *floorResult
	pending *pendingResult
}

// rate returns a scenario's round trips per second, or NaN if it did not
// run.
func (r results) rate(step string) float64 {
	if v, ok := r.rates[step]; ok {
		return v
	}
	return nanValue
}

// measure runs the selected steps in order, telling progress what it
// does.
func measure(progress io.Writer, cfg config) (results, error) {
	res := results{rates: map[string]float64{}, cores: map[string]float64{}}
	if cfg.runs(stepFloor) {
		fmt.Fprintln(progress, "floor ...")
		f, err := runFloor(cfg.load)
		if err != nil {
			return res, fmt.Errorf("floor: %w", err)
		}
		res.floor = &f
	}

	for _, step := range []string{stepMemory, stepBolt, stepHTTP, stepJSMemory, stepJSFile} {
		if !cfg.runs(step) {
			continue
		}
		fmt.Fprintf(progress, "%s ...\n", titles[step])
		r, err := runRoundTrips(cfg.rig(step), cfg.load)
		if err != nil {
			return res, fmt.Errorf("%s: %w", step, err)
		}
		res.rates[step] = r.rate()
		res.cores[step] = r.cores()
		runtime.GC()
	}

	if cfg.runs(stepPending) {
		fmt.Fprintf(progress, "pending: %d, then %d messages ...\n", cfg.pendingSmall,
			cfg.pendingLarge)
		p, err := runPending(cfg.load.payload, cfg.pendingSmall, cfg.pendingLarge,
			cfg.passes)
		if err != nil {
			return res, fmt.Errorf("pending: %w", err)
		}
		res.pending = &p
	}
	return res, nil
}

// rig returns the builder of a round-trip scenario's rig.
func (cfg config) rig(step string) buildRig {
	switch step {
	case stepMemory:
		return networkRig(memoryStores)
	case stepBolt:
		return func(done func()) (rig, error) {
			stores, err := boltStores(cfg.dir)
			if err != nil {
				return nil, err
			}
			return networkRig(stores)(done)
		}
	case stepHTTP:
		return httpRig(cfg.httpIdle)
	case stepJSMemory:
		return jetStreamRig(jetstream.MemoryStorage, cfg.dir, cfg.load.inFlight)
	case stepJSFile:
		return jetStreamRig(jetstream.FileStorage, cfg.dir, cfg.load.inFlight)
	}
	panic("bench: no rig for step " + step)
}
