package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// table is rows of text under a header, printed aligned or as Markdown.
type table struct {
	header []string
	rows   [][]string
}

func (t *table) add(cells ...string) {
	t.rows = append(t.rows, cells)
}

// print writes t as aligned columns, or as a Markdown table.
func (t *table) print(w io.Writer, markdown bool) error {
	if markdown {
		return t.printMarkdown(w)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.header, "\t"))
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func (t *table) printMarkdown(w io.Writer) error {
	line := func(cells []string) string {
		return "| " + strings.Join(cells, " | ") + " |\n"
	}
	rule := make([]string, len(t.header))
	for i := range rule {
		rule[i] = "---"
	}
	var b strings.Builder
	b.WriteString(line(t.header))
	b.WriteString(line(rule))
	for _, r := range t.rows {
		b.WriteString(line(r))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// target is one goal the results are compared with: got should be at
// least want, or at most want.
type target struct {
	name    string
	want    float64
	atLeast bool
	// unit formats a value of the target's measure.
	unit func(float64) string
}

// row returns the target's cells for got: what it wants, what was
// measured, the ratio of the two, and pass or miss. A measure that was
// not run, or is not a number, reads "not run".
func (t target) row(got float64) []string {
	op := "<="
	if t.atLeast {
		op = ">="
	}
	want := op + " " + t.unit(t.want)
	if math.IsNaN(got) || math.IsInf(got, 0) {
		return []string{t.name, want, "-", "-", "not run"}
	}
	verdict := "miss"
	if t.atLeast && got >= t.want || !t.atLeast && got <= t.want {
		verdict = "pass"
	}
	return []string{t.name, want, t.unit(got), fmt.Sprintf("%.2f", got/t.want), verdict}
}

// times formats a ratio such as 4.5x.
func times(v float64) string {
	return fmt.Sprintf("%.1fx", v)
}

// bytesUnit formats a size in bytes.
func bytesUnit(v float64) string {
	return fmt.Sprintf("%.0f B", v)
}

// allocsUnit formats allocations.
func allocsUnit(v float64) string {
	return fmt.Sprintf("%.2f", v)
}

// durationUnit formats seconds as a duration.
func durationUnit(seconds float64) string {
	return shortDuration(time.Duration(seconds * float64(time.Second)))
}

// shortDuration rounds d to three significant digits.
func shortDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d >= time.Microsecond:
		return d.Round(10 * time.Nanosecond).String()
	}
	return d.String()
}

// count formats a rate or count with thousands separators.
func count(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// nanValue stands for a measure that was not taken.
var nanValue = math.NaN()

// report prints what the run measured, then the targets.
func report(w io.Writer, cfg config, res results) error {
	fmt.Fprintf(w, "asyncflow bench: %d in flight, %d-byte payloads, %s measured after %s "+
		"of warmup per round-trip scenario; %s %s/%s, GOMAXPROCS %d; files in %s%s\n\n",
		cfg.load.inFlight, len(cfg.load.payload), cfg.load.duration, cfg.load.warmup,
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), cfg.dir,
		fileSystemNote(cfg.dir))

	if err := measured(cfg, res).print(w, cfg.markdown); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return targets(res).print(w, cfg.markdown)
}

// measured is the table of results.
func measured(cfg config, res results) *table {
	t := &table{header: []string{"measure", "result", "cores busy"}}
	for _, step := range []string{stepMemory, stepBolt, stepHTTP, stepJSMemory, stepJSFile} {
		if v, ok := res.rates[step]; ok {
			t.add(titles[step], count(v)+" round trips/s",
				fmt.Sprintf("%.2f", res.cores[step]))
		}
	}
	if f := res.floor; f != nil {
		t.add("floor: 1 ULID, 3 records encoded and decoded, 2 CRC-32s",
			fmt.Sprintf("%s messages/s", count(f.rate)),
			fmt.Sprintf("%d goroutines", runtime.GOMAXPROCS(0)))
		t.add("floor per record", fmt.Sprintf("%s, %.2f allocs",
			shortDuration(f.perRecord), f.allocsPerRecord), "1 goroutine")
	}
	if p := res.pending; p != nil {
		t.add(fmt.Sprintf("heap per pending message beyond payload, %s pending",
			count(float64(p.large))), bytesUnit(p.bytesPerPending), "")
		for _, s := range []struct {
			n             int
			pass, nextDue time.Duration
		}{{p.small, p.scanSmall, p.nextDueSmall}, {p.large, p.scanLarge, p.nextDueLarge}} {
			t.add(fmt.Sprintf("retry pass, nothing due, %s pending (median of %d)",
				count(float64(s.n)), cfg.passes),
				fmt.Sprintf("%s (NextDue %s)", shortDuration(s.pass),
					shortDuration(s.nextDue)), "")
		}
	}
	return t
}

// targets is the table of the targets, each with what was measured.
func targets(res results) *table {
	t := &table{header: []string{"target", "wanted", "measured", "measured/wanted",
		"result"}}

	mem := target{name: "MemoryStore round trips vs JetStream memory", want: 10,
		atLeast: true, unit: times}
	t.add(mem.row(res.rate(stepMemory) / res.rate(stepJSMemory))...)
	durable := target{name: "durable round trips vs JetStream SyncAlways", want: 5,
		atLeast: true, unit: times}
	t.add(durable.row(res.rate(stepBolt) / res.rate(stepJSFile))...)

	perRecord, allocs := nanValue, nanValue
	if f := res.floor; f != nil {
		perRecord, allocs = f.perRecord.Seconds(), f.allocsPerRecord
	}
	t.add(target{name: "codec time per record", want: 1e-6,
		unit: durationUnit}.row(perRecord)...)
	t.add(target{name: "codec allocations per record", want: 2,
		unit: allocsUnit}.row(allocs)...)

	bytes, scan := nanValue, nanValue
	if p := res.pending; p != nil {
		bytes = p.bytesPerPending
		scan = float64(p.scanLarge) / float64(p.scanSmall)
	}
	t.add(target{name: "heap per pending message beyond payload", want: 300,
		unit: bytesUnit}.row(bytes)...)
	t.add(target{name: "retry pass at the large pending count vs the small", want: 2,
		unit: times}.row(scan)...)
	return t
}
