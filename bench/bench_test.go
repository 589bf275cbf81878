package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// smokeLoad is a few hundred messages with a few in flight: enough to see
// each scenario complete whole round trips and close clean, in seconds.
func smokeLoad() load {
	return load{inFlight: 16, payload: make([]byte, 100), messages: 300}
}

func TestEveryRoundTripScenarioCompletesEveryMessageAndClosesClean(t *testing.T) {
	cfg := config{load: smokeLoad(), dir: t.TempDir(), httpIdle: 32}
	for _, step := range []string{stepMemory, stepBolt, stepHTTP, stepJSMemory, stepJSFile} {
		t.Run(step, func(t *testing.T) {
			res, err := runRoundTrips(cfg.rig(step), cfg.load)
			if err != nil {
				t.Fatal(err)
			}
			if res.roundTrips != cfg.load.messages {
				t.Fatalf("%d round trips completed, want %d", res.roundTrips,
					cfg.load.messages)
			}
			if res.rate() <= 0 {
				t.Fatalf("rate %v, want a positive one", res.rate())
			}
		})
	}
}

func TestARoundTripRunStopsAfterItsDuration(t *testing.T) {
	l := load{inFlight: 8, payload: []byte("x"), warmup: 10 * time.Millisecond,
		duration: 100 * time.Millisecond}
	start := time.Now()
	res, err := runRoundTrips(networkRig(memoryStores), l)
	if err != nil {
		t.Fatal(err)
	}
	if res.roundTrips == 0 || res.elapsed < l.duration {
		t.Fatalf("%d round trips in %s, want some in at least %s", res.roundTrips,
			res.elapsed, l.duration)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the run took %s", took)
	}
}

func TestTheFloorDoesTheWorkOfARoundTrip(t *testing.T) {
	f, err := runFloor(smokeLoad())
	if err != nil {
		t.Fatal(err)
	}
	if f.rate <= 0 || f.perRecord <= 0 || f.allocsPerRecord <= 0 {
		t.Fatalf("floor %+v, want a positive rate, time and allocation count", f)
	}
}

func TestPendingMessagesAreWeighedAndRetryPassesTimed(t *testing.T) {
	p, err := runPending(make([]byte, 100), 100, 2_000, 10)
	if err != nil {
		t.Fatal(err)
	}
	if p.bytesPerPending <= 0 || p.scanSmall <= 0 || p.scanLarge <= 0 {
		t.Fatalf("pending %+v, want positive bytes and pass times", p)
	}
}

func TestTheMarkdownReportHasAResultsAndATargetsTable(t *testing.T) {
	cfg, err := parseFlags([]string{"-markdown", "-payload", "100"})
	if err != nil {
		t.Fatal(err)
	}
	res := results{
		rates: map[string]float64{stepMemory: 100_000, stepJSMemory: 20_000},
		cores: map[string]float64{stepMemory: 1.5, stepJSMemory: 1.9},
		floor: &floorResult{rate: 1e6, perRecord: 300 * time.Nanosecond,
			allocsPerRecord: 2},
	}
	var out bytes.Buffer
	if err := report(&out, cfg, res); err != nil {
		t.Fatal(err)
	}

	text := out.String()
	for _, want := range []string{
		"| asyncflow, MemoryStore, in-memory network | 100,000 round trips/s | 1.50 |",
		"| MemoryStore round trips vs JetStream memory | >= 10.0x | 5.0x | 0.50 | miss |",
		"| codec time per record | <= 1µs | 300ns | 0.30 | pass |",
		"| durable round trips vs JetStream SyncAlways | >= 5.0x | - | - | not run |",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
}

func TestFlagsRefuseAnUnknownStep(t *testing.T) {
	_, err := parseFlags([]string{"-only", "memory,kafka"})
	if err == nil || !strings.Contains(err.Error(), `"kafka"`) {
		t.Fatalf("error %v, want one naming the unknown step", err)
	}
}
