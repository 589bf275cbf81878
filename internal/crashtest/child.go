// Package crashtest kills a sender and a receiver at random moments and
// checks that no message was lost or processed twice.
//
// The test binary plays three parts. Run by go test, it is the parent:
// it starts itself twice more as children, one sender and one receiver,
// each a Flow on its own bbolt file behind a real HTTP endpoint, and kills
// them with SIGKILL and restarts them many times. A child is told its part
// by the environment variable RoleEnv and finds its setup in the JSON file
// named by SetupEnv; the code it runs is in this file.
//
// Each child appends what the library tells it to an event log, one line
// per event, so that the parent can compare the logs with the stores once
// both children have stopped:
//
//	start <pid>                   a run of the child began
//	called <n> <id>               the sender's CallAsync for message n returned id
//	acked <id> <payload> <ack>    the sender's OnAck ran
//	handled <id> <payload> <ack>  the receiver's Handler ran and returned ack
//	processed <id> <ack>          the receiver's OnProcessed ran
//
// The log is not synced: SIGKILL ends the process, not the machine, so
// the page cache keeps every line a write returned for. The line being
// written when the process died may be cut short, though: each line ends
// with " ." so that ReadLog can leave such a line out. A child also
// prints a status line on its standard output every StatusEvery, which
// the parent reads to tell when the exchange has settled.
//
// go test runs 50 kills; more, and a kill schedule to replay, are flags:
//
//	go test -race ./internal/crashtest -crash.kills=300 -crash.seed=42
package crashtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
	"github.com/asyncflow/asyncflow/ic"
)

// Environment variables that make the test binary a child.
const (
	// RoleEnv names the child's part: RoleSender or RoleReceiver.
	RoleEnv = "ASYNCFLOW_CRASH_ROLE"
	// SetupEnv names the JSON file holding the Setup.
	SetupEnv = "ASYNCFLOW_CRASH_SETUP"
)

// The two parts a child can play.
const (
	RoleSender   = "sender"
	RoleReceiver = "receiver"
)

// StatusEvery is how often a child prints its status line.
const StatusEvery = 50 * time.Millisecond

// Setup is what the parent decides once and every child run reads: the
// two nodes, how many messages the sender sends, and how fast.
type Setup struct {
	// Sender and Receiver are the two nodes.
	Sender, Receiver Node
	// Messages is how many messages the sender calls in all, across its
	// restarts.
	Messages int
	// Pace is the pause before each CallAsync.
	Pace time.Duration
	// RetryAfter and SendTimeout configure both Flows.
	RetryAfter, SendTimeout time.Duration
}

// Node is one child's identity, address and files.
type Node struct {
	// Principal is the node's principal in text form.
	Principal string
	// KeyFile is the PEM file of its identity.
	KeyFile string
	// Addr is the host:port its endpoint listens on, the same on every
	// restart.
	Addr string
	// StoreFile is its bbolt file.
	StoreFile string
	// EventFile is its event log.
	EventFile string
}

// URL is the base URL of the node's endpoint.
func (n Node) URL() string {
	return "http://" + n.Addr
}

// Status is what a child reports on each status line.
type Status struct {
	// At is when the child read its store for this line.
	At time.Time
	// Called is how many messages the sender's CallAsync returned for.
	Called int
	// Pending, Acked and Corrupt count the sender's records by state.
	Pending, Acked, Corrupt int
	// Acking counts the receiver's records whose ack is still resent.
	Acking int
}

// statusPrefix starts every status line.
const statusPrefix = "status "

// String formats s as a status line, without the newline.
func (s Status) String() string {
	return fmt.Sprintf("%s%d called=%d pending=%d acked=%d corrupt=%d acking=%d",
		statusPrefix, s.At.UnixNano(), s.Called, s.Pending, s.Acked, s.Corrupt, s.Acking)
}

// ParseStatus reads a line that String wrote; ok is false for any other
// line.
func ParseStatus(line string) (s Status, ok bool) {
	var at int64
	_, err := fmt.Sscanf(line, statusPrefix+"%d called=%d pending=%d acked=%d corrupt=%d "+
		"acking=%d", &at, &s.Called, &s.Pending, &s.Acked, &s.Corrupt, &s.Acking)
	if err != nil {
		return Status{}, false
	}
	s.At = time.Unix(0, at)
	return s, true
}

// RunChild plays the part named by the environment until SIGTERM, then
// stops cleanly: endpoint, Flow, store. It returns the process's exit
// code. The child also stops, with a failure, when its standard input
// closes: the parent died without stopping it.
func RunChild() int {
	role := os.Getenv(RoleEnv)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		fmt.Fprintf(os.Stderr, "%s %d: the parent is gone\n", role, os.Getpid())
		os.Exit(3)
	}()

	if err := runChild(ctx, role); err != nil {
		fmt.Fprintf(os.Stderr, "%s %d: %v\n", role, os.Getpid(), err)
		return 1
	}
	return 0
}

// child is one run of a sender or a receiver.
type child struct {
	role   string
	setup  Setup
	self   Node
	peer   Node
	peerID principal.Principal
	store  *boltstore.Store
	flow   *asyncflow.Flow
	events *eventLog
	called atomic.Int64
}

func runChild(ctx context.Context, role string) error {
	setup, err := readSetup(os.Getenv(SetupEnv))
	if err != nil {
		return err
	}
	c := &child{role: role, setup: setup}
	switch role {
	case RoleSender:
		c.self, c.peer = setup.Sender, setup.Receiver
	case RoleReceiver:
		c.self, c.peer = setup.Receiver, setup.Sender
	default:
		return fmt.Errorf("unknown role %q in %s", role, RoleEnv)
	}
	fmt.Fprintf(os.Stderr, "%s %d: start at %s\n", role, os.Getpid(),
		time.Now().Format(time.RFC3339Nano))

	if err := c.open(); err != nil {
		return err
	}
	defer c.store.Close()
	defer c.events.Close()

	srv, err := c.serve()
	if err != nil {
		_ = c.flow.Close()
		return err
	}

	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() { c.reportStatus(ctx) })
	if role == RoleSender {
		wg.Go(func() { sendErr = c.callAll(ctx) })
	}
	<-ctx.Done()
	wg.Wait()

	return errors.Join(sendErr, c.shutdown(srv))
}

// readSetup reads the Setup the parent wrote.
func readSetup(path string) (Setup, error) {
	var s Setup
	data, err := os.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("reading setup: %w", err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("reading setup %s: %w", path, err)
	}
	return s, nil
}

// open opens the store and the event log, learns how far the sender got,
// and starts the Flow.
func (c *child) open() error {
	id, err := ic.LoadIdentity(c.self.KeyFile)
	if err != nil {
		return err
	}
	c.peerID, err = ic.ParsePrincipal(c.peer.Principal)
	if err != nil {
		return err
	}

	lines, _, err := ReadLog(c.self.EventFile)
	if err != nil {
		return err
	}
	c.called.Store(int64(countCalled(lines)))

	c.events, err = openEventLog(c.self.EventFile)
	if err != nil {
		return err
	}
	c.store, err = boltstore.Open(c.self.StoreFile, nil)
	if err != nil {
		c.events.Close()
		return err
	}

	tr, err := ic.NewTransport(id, ic.TransportConfig{
		Routes: map[string]string{c.peer.Principal: c.peer.URL()},
	})
	if err == nil {
		c.flow, err = asyncflow.New(c.config(tr))
	}
	if err != nil {
		c.store.Close()
		c.events.Close()
	}
	return err
}

// config is the Flow's configuration: the sender logs its ack callbacks,
// the receiver its handler runs and commits.
func (c *child) config(tr asyncflow.Transport) asyncflow.Config {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{
		Level: slog.LevelError,
	}))
	cfg := asyncflow.Config{
		Transport:   tr,
		Store:       c.store,
		RetryAfter:  c.setup.RetryAfter,
		SendTimeout: c.setup.SendTimeout,
		Logger:      logger,
	}
	if c.role == RoleSender {
		cfg.OnAck = func(_ context.Context, d asyncflow.Delivery) {
			c.events.add("acked", d.MsgID.String(), string(d.Sent), string(d.Received))
		}
		return cfg
	}

	// Each handler run answers differently, so that an ack names the run
	// whose result was committed.
	var runs atomic.Int64
	life := strconv.FormatInt(time.Now().UnixNano(), 36)
	cfg.Handler = func(_ context.Context, _ principal.Principal, id asyncflow.MsgID,
		payload []byte) ([]byte, error) {
		ack := fmt.Sprintf("ack-%s-%d", life, runs.Add(1))
		c.events.add("handled", id.String(), string(payload), ack)
		return []byte(ack), nil
	}
	cfg.OnProcessed = func(p asyncflow.Processed) {
		c.events.add("processed", p.MsgID.String(), string(p.Ack))
	}
	return cfg
}

// serve listens on the node's fixed address and serves its endpoint.
func (c *child) serve() (*http.Server, error) {
	self, err := ic.ParsePrincipal(c.self.Principal)
	if err != nil {
		return nil, err
	}
	ep, err := ic.NewEndpoint(self, c.flow, ic.EndpointConfig{})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", c.self.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening again on %s: %w", c.self.Addr, err)
	}

	srv := &http.Server{Handler: ep, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}

// callAll calls the messages the sender has not called yet, one every
// Pace, and logs each id once CallAsync returned it.
func (c *child) callAll(ctx context.Context) error {
	pause := time.NewTimer(c.setup.Pace)
	defer pause.Stop()

	for n := int(c.called.Load()) + 1; n <= c.setup.Messages; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-pause.C:
			pause.Reset(c.setup.Pace)
		}

		id, err := c.flow.CallAsync(ctx, c.peerID, []byte("msg-"+strconv.Itoa(n)))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("calling message %d: %w", n, err)
		}
		c.events.add("called", strconv.Itoa(n), id.String())
		c.called.Store(int64(n))
	}
	return nil
}

// reportStatus prints a status line every StatusEvery until ctx ends.
func (c *child) reportStatus(ctx context.Context) {
	tick := time.NewTicker(StatusEvery)
	defer tick.Stop()

	for {
		s, err := c.status(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			fmt.Fprintf(os.Stderr, "%s %d: reading status: %v\n", c.role, os.Getpid(), err)
		default:
			fmt.Println(s)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// status reads the node's state from its store. The sender's states are
// read in the order a record moves through them, pending before acked,
// so that a record moving on between two reads is still counted once.
func (c *child) status(ctx context.Context) (Status, error) {
	s := Status{At: time.Now(), Called: int(c.called.Load())}
	counts := []*int{&s.Pending, &s.Acked, &s.Corrupt}
	states := []asyncflow.OutState{asyncflow.OutPending, asyncflow.OutAcked,
		asyncflow.OutCorrupt}
	for i, st := range states {
		recs, err := c.store.ListOutgoing(ctx, st)
		if err != nil {
			return s, err
		}
		*counts[i] = len(recs)
	}

	acking, err := c.store.DueIncoming(ctx, s.At.Add(24*time.Hour), 1<<20)
	s.Acking = len(acking)
	return s, err
}

// shutdown stops the endpoint, then the Flow, then closes the store.
func (c *child) shutdown(srv *http.Server) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	err := srv.Shutdown(ctx)
	return errors.Join(err, c.flow.Close(), c.store.Close())
}

// countCalled returns the highest message number in the called lines of
// an event log.
func countCalled(lines []string) int {
	most := 0
	for _, line := range lines {
		fields := strings.Fields(line)
		if len(fields) != 3 || fields[0] != "called" {
			continue
		}
		if n, err := strconv.Atoi(fields[1]); err == nil {
			most = max(most, n)
		}
	}
	return most
}

// lineEnd ends every line of an event log, so that a line cut short is
// seen as such.
const lineEnd = " ."

// ReadLog returns the complete lines of the event log at path, without
// their end mark, none when there is no log yet, and how many lines it
// left out because they were cut short.
//
// Each line is one write, but a write is not atomic against SIGKILL:
// Linux checks for a fatal signal before each page it copies, so a line
// that crosses a page boundary can be cut there. Only the line being
// written when the process died can be cut, and no line follows it from
// that process; the next run ends it with a newline. A cut line lacks the
// end mark.
func ReadLog(path string) (lines []string, torn int, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}

	for line := range strings.Lines(string(data)) {
		line, ok := strings.CutSuffix(line, lineEnd+"\n")
		if !ok {
			torn++
			continue
		}
		lines = append(lines, line)
	}
	return lines, torn, nil
}

// eventLog appends one line per event to a file. Each line is one write
// to a file opened with O_APPEND, so lines from concurrent callbacks do
// not interleave.
type eventLog struct {
	f *os.File
}

// openEventLog opens the event log at path for appending. If the last run
// was killed in the middle of a line, it ends that line first, in a write
// of one byte, which no kill can cut. It then logs the start of this run.
func openEventLog(path string) (*eventLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	l := &eventLog{f: f}

	info, err := f.Stat()
	last := []byte{'\n'}
	if err == nil && info.Size() > 0 {
		_, err = f.ReadAt(last, info.Size()-1)
	}
	if err == nil && last[0] != '\n' {
		_, err = f.Write([]byte{'\n'})
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	l.add("start", strconv.Itoa(os.Getpid()))
	return l, nil
}

// add appends the line of fields. A log that cannot be written would
// make the parent's verdict wrong, so the child exits at once instead.
func (l *eventLog) add(fields ...string) {
	if _, err := l.f.WriteString(strings.Join(fields, " ") + lineEnd + "\n"); err != nil {
		fmt.Fprintf(os.Stderr, "%d: writing event log: %v\n", os.Getpid(), err)
		os.Exit(4)
	}
}

func (l *eventLog) Close() error {
	return l.f.Close()
}
