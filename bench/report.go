package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"text/tabwriter"
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
	t := &table{header: []string{"measure", "result"}}
	for _, step := range []string{stepMemory, stepBolt, stepHTTP, stepJSMemory, stepJSFile} {
		if v, ok := res.rates[step]; ok {
			t.add(titles[step], count(v)+" round trips/s")
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
	return t
}
