//go:build unix

package crashtest

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
	"github.com/asyncflow/asyncflow/ic"
)

var (
	killsFlag = flag.Int("crash.kills", 50,
		"how many times a child is killed with SIGKILL")
	seedFlag = flag.Uint64("crash.seed", 0,
		"seed of the kill schedule (which child, after how long); 0 picks one, which "+
			"the test prints. The processes' own timing is not replayed")
	messagesFlag = flag.Int("crash.messages", 0,
		"how many messages the sender sends (default: 6 per kill, at least 100)")
)

// TestMain runs a child's part when the environment names one, and the
// tests otherwise, checking that they leave no goroutine behind.
func TestMain(m *testing.M) {
	if os.Getenv(RoleEnv) != "" {
		os.Exit(RunChild())
	}
	goleak.VerifyTestMain(m)
}

// Timing of the run. RetryAfter is short so that a restarted child
// catches up quickly; the kill intervals span a child's start, its first
// sends and its steady state.
const (
	retryAfter   = 200 * time.Millisecond
	sendTimeout  = time.Second
	pace         = 20 * time.Millisecond
	minKillAfter = 50 * time.Millisecond
	maxKillAfter = 400 * time.Millisecond
	// exitWait bounds the wait for a child to exit once signalled.
	exitWait = 15 * time.Second
	// settleWait bounds the wait for the exchange to settle after the
	// last kill, on top of the time the sender needs to call the rest.
	settleWait = 30 * time.Second
)

func TestMessagesSurviveRandomKillsOfSenderAndReceiver(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d: replay the kill schedule with -crash.seed=%d", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	messages := *messagesFlag
	if messages == 0 {
		messages = max(100, 6**killsFlag)
	}

	setup := newSetup(t, t.TempDir(), messages)
	setupFile := filepath.Join(t.TempDir(), "setup.json")
	data, err := json.Marshal(setup)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(setupFile, data, 0o600))

	run := &crashRun{setupFile: setupFile, setup: setup, started: time.Now()}
	t.Cleanup(run.killAll)
	run.sender = run.start(t, RoleSender)
	run.receiver = run.start(t, RoleReceiver)

	run.killRandomly(t, rng, *killsFlag)
	if err := run.settle(t); err != nil {
		t.Error(err) // and the check below says which records are left
	}
	run.stop(t)

	check(t, run)
}

// newSetup makes both identities and picks both ports once: each child
// listens on the same address on every restart.
func newSetup(t *testing.T, dir string, messages int) Setup {
	t.Helper()
	node := func(name string) Node {
		pemData, id, err := ic.NewIdentityPEM()
		require.NoError(t, err)
		key := filepath.Join(dir, name+".pem")
		require.NoError(t, ic.WriteIdentity(key, pemData))
		return Node{
			Principal: id.Sender().String(),
			KeyFile:   key,
			Addr:      freeAddr(t),
			StoreFile: filepath.Join(dir, name+".db"),
			EventFile: filepath.Join(dir, name+".events"),
		}
	}
	return Setup{
		Sender:      node(RoleSender),
		Receiver:    node(RoleReceiver),
		Messages:    messages,
		Pace:        pace,
		RetryAfter:  retryAfter,
		SendTimeout: sendTimeout,
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// crashRun is the parent's view of the two children and what it did to
// them.
type crashRun struct {
	setupFile string
	setup     Setup
	started   time.Time

	sender, receiver *process

	killsOf   map[string]int
	killBoth  int
	restarts  int
	killPhase time.Duration
}

// process is one run of a child.
type process struct {
	role   string
	cmd    *exec.Cmd
	stderr string
	exited chan struct{} // closed once Wait returned
	err    error         // what Wait returned

	mu     sync.Mutex
	last   Status
	heard  time.Time // when the parent read last
	update chan struct{}
}

// start runs a child of role, its stderr appended to a file that
// outlives its restarts.
func (r *crashRun) start(t *testing.T, role string) *process {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)

	stderrPath := filepath.Join(filepath.Dir(r.setup.Sender.StoreFile), role+".stderr")
	stderr, err := os.OpenFile(stderrPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	require.NoError(t, err)
	defer stderr.Close()

	// The child plays its part before any test could run; the flag only
	// makes sure that one missing its environment runs none.
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), RoleEnv+"="+role, SetupEnv+"="+r.setupFile,
		"GORACE=halt_on_error=1")
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	// The child stops when this pipe closes: if the parent dies, so do its
	// children.
	_, err = cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	p := &process{role: role, cmd: cmd, stderr: stderrPath, exited: make(chan struct{}),
		update: make(chan struct{}, 1)}
	go p.read(stdout)
	return p
}

// read takes the status lines of p until its stdout closes, then waits
// for it to exit.
func (p *process) read(stdout io.Reader) {
	scanner := bufio.NewScanner(stdout)
	for scanner.Scan() {
		s, ok := ParseStatus(scanner.Text())
		if !ok {
			continue
		}
		p.mu.Lock()
		p.last, p.heard = s, time.Now()
		p.mu.Unlock()
		select {
		case p.update <- struct{}{}:
		default:
		}
	}
	_, _ = io.Copy(io.Discard, stdout)

	p.err = p.cmd.Wait()
	close(p.exited)
}

// status returns the last status p reported and when the parent read it.
func (p *process) status() (Status, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last, p.heard
}

// killRandomly kills a child, or both, kills times, after random pauses,
// and restarts each at once.
func (r *crashRun) killRandomly(t *testing.T, rng *rand.Rand, kills int) {
	t.Helper()
	r.killsOf = map[string]int{}
	begin := time.Now()
	pause := time.NewTimer(time.Hour)
	defer pause.Stop()

	for range kills {
		spread := int64(maxKillAfter - minKillAfter)
		pause.Reset(minKillAfter + time.Duration(rng.Int64N(spread)))
		select {
		case <-pause.C:
		case <-r.sender.exited:
			r.failExited(t, r.sender)
		case <-r.receiver.exited:
			r.failExited(t, r.receiver)
		}

		switch v := rng.IntN(10); {
		case v < 1:
			r.killBoth++
			r.kill(t, r.sender, r.receiver)
			r.sender = r.start(t, RoleSender)
			r.receiver = r.start(t, RoleReceiver)
		case v < 5:
			r.kill(t, r.sender)
			r.sender = r.start(t, RoleSender)
		default:
			r.kill(t, r.receiver)
			r.receiver = r.start(t, RoleReceiver)
		}
	}
	r.killPhase = time.Since(begin)
}

// kill sends SIGKILL to each of ps and checks that they died of it.
func (r *crashRun) kill(t *testing.T, ps ...*process) {
	t.Helper()
	for _, p := range ps {
		require.NoError(t, p.cmd.Process.Kill())
	}

	for _, p := range ps {
		p.awaitExit(t)
		var exit *exec.ExitError
		ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !errors.As(p.err, &exit) || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			r.failExited(t, p)
		}
		r.killsOf[p.role]++
		r.restarts++
	}
}

// awaitExit waits for p to exit, failing the test when it does not.
func (p *process) awaitExit(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(exitWait):
		t.Fatalf("%s %d did not exit within %s after a signal", p.role, p.cmd.Process.Pid,
			exitWait)
	}
}

// failExited fails the test for a child that ended on its own, showing
// the end of its stderr.
func (r *crashRun) failExited(t *testing.T, p *process) {
	t.Helper()
	t.Fatalf("%s %d exited by itself (%v); end of %s:\n%s", p.role, p.cmd.Process.Pid, p.err,
		p.stderr, tail(p.stderr, 30))
}

// settle waits until the exchange is over: the sender called every
// message and holds no record, and then the receiver, read after that,
// holds no ack still to confirm. Neither can change after that: no record
// is left that sends anything. It returns an error when that takes too
// long.
func (r *crashRun) settle(t *testing.T) error {
	t.Helper()
	limit := settleWait + time.Duration(r.setup.Messages)*r.setup.Pace
	deadline := time.NewTimer(limit)
	defer deadline.Stop()

	var senderDone time.Time
	for {
		s, heard := r.sender.status()
		if senderDone.IsZero() && s.Called == r.setup.Messages &&
			s.Pending+s.Acked+s.Corrupt == 0 {
			senderDone = heard
		}
		q, _ := r.receiver.status()
		if !senderDone.IsZero() && q.At.After(senderDone) && q.Acking == 0 {
			return nil
		}

		select {
		case <-r.sender.update:
		case <-r.receiver.update:
		case <-r.sender.exited:
			r.failExited(t, r.sender)
		case <-r.receiver.exited:
			r.failExited(t, r.receiver)
		case <-deadline.C:
			return fmt.Errorf("not settled %s after the last kill: sender %+v, "+
				"receiver %+v; end of the sender's stderr:\n%s\n"+
				"end of the receiver's stderr:\n%s", limit, s, q,
				tail(r.sender.stderr, 15), tail(r.receiver.stderr, 15))
		}
	}
}

// stop asks both children to stop cleanly and checks that they did: each
// closes its endpoint, Flow and store, and exits with 0.
func (r *crashRun) stop(t *testing.T) {
	t.Helper()
	for _, p := range []*process{r.sender, r.receiver} {
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	}
	for _, p := range []*process{r.sender, r.receiver} {
		p.awaitExit(t)
		if p.err != nil {
			r.failExited(t, p)
		}
	}
}

// killAll kills the children still running, for a test that failed
// midway.
func (r *crashRun) killAll() {
	for _, p := range []*process{r.sender, r.receiver} {
		if p == nil {
			continue
		}
		select {
		case <-p.exited:
			continue
		default:
		}
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// events is what the two event logs say, by message id.
type events struct {
	// calledID maps a message number to the id CallAsync returned for
	// it, and called the other way round.
	calledID map[int]asyncflow.MsgID
	called   map[asyncflow.MsgID]int
	// acks holds the ack payload each run of OnAck got; sent the payload
	// it reported as sent.
	acks map[asyncflow.MsgID][]string
	sent map[asyncflow.MsgID]string
	// handled holds the payload and the ack of each handler run.
	handled map[asyncflow.MsgID][][2]string
	// processed holds the ack of each OnProcessed call.
	processed map[asyncflow.MsgID][]string
	// starts counts the runs of the children; torn the lines a kill cut
	// short.
	starts, torn int
}

func readEvents(t *testing.T, setup Setup) *events {
	t.Helper()
	e := &events{
		calledID:  map[int]asyncflow.MsgID{},
		called:    map[asyncflow.MsgID]int{},
		acks:      map[asyncflow.MsgID][]string{},
		sent:      map[asyncflow.MsgID]string{},
		handled:   map[asyncflow.MsgID][][2]string{},
		processed: map[asyncflow.MsgID][]string{},
	}
	for _, path := range []string{setup.Sender.EventFile, setup.Receiver.EventFile} {
		lines, torn, err := ReadLog(path)
		require.NoError(t, err)
		e.torn += torn
		for _, line := range lines {
			e.add(t, path, line)
		}
	}
	return e
}

// add records one line of an event log.
func (e *events) add(t *testing.T, path, line string) {
	t.Helper()
	f := strings.Fields(line)
	bad := func() { t.Fatalf("%s: malformed line %q", path, line) }
	if len(f) == 2 && f[0] == "start" {
		e.starts++
		return
	}
	if len(f) < 3 {
		bad()
	}
	idField := 1
	if f[0] == "called" {
		idField = 2
	}
	id, err := asyncflow.ParseMsgID(f[idField])
	if err != nil {
		bad()
	}

	switch {
	case f[0] == "called" && len(f) == 3:
		n, err := strconv.Atoi(f[1])
		if err != nil {
			bad()
		}
		if old, ok := e.calledID[n]; ok {
			t.Errorf("message %d was called twice after CallAsync returned: %s and %s",
				n, old, id)
		}
		e.calledID[n], e.called[id] = id, n
	case f[0] == "acked" && len(f) == 4:
		e.sent[id] = f[2]
		e.acks[id] = append(e.acks[id], f[3])
	case f[0] == "handled" && len(f) == 4:
		e.handled[id] = append(e.handled[id], [2]string{f[2], f[3]})
	case f[0] == "processed" && len(f) == 3:
		e.processed[id] = append(e.processed[id], f[2])
	default:
		bad()
	}
}

// ids returns every message id either log mentions, in order.
func (e *events) ids() []asyncflow.MsgID {
	seen := map[asyncflow.MsgID]bool{}
	for _, id := range e.calledID {
		seen[id] = true
	}
	for _, m := range []map[asyncflow.MsgID][]string{e.acks, e.processed} {
		for id := range m {
			seen[id] = true
		}
	}
	for id := range e.handled {
		seen[id] = true
	}
	ids := make([]asyncflow.MsgID, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, asyncflow.MsgID.Compare)
	return ids
}

// maxReported bounds the problems reported one by one: a broken library
// breaks hundreds of messages the same way.
const maxReported = 20

// verdict reports the problems check finds, the first maxReported of
// them in full.
type verdict struct {
	t        *testing.T
	problems int
}

func (v *verdict) errorf(format string, args ...any) {
	v.problems++
	if v.problems <= maxReported {
		v.t.Errorf(format, args...)
	}
}

// check compares the event logs with both stores once the children
// stopped.
func check(t *testing.T, r *crashRun) {
	ctx := t.Context()
	v := &verdict{t: t}
	e := readEvents(t, r.setup)
	senderID, err := ic.ParsePrincipal(r.setup.Sender.Principal)
	require.NoError(t, err)

	for n := 1; n <= r.setup.Messages; n++ {
		if _, ok := e.calledID[n]; !ok {
			v.errorf("message %d was never called", n)
		}
	}

	receiver, err := boltstore.Open(r.setup.Receiver.StoreFile, nil)
	require.NoError(t, err)
	defer receiver.Close()

	ids := e.ids()
	handlerRuns, ackRuns, unlogged := 0, 0, 0
	for _, id := range ids {
		rec, err := receiver.Incoming(ctx, senderID, id)
		if err != nil {
			v.errorf("message %s: no record on the receiver: %v", id, err)
			continue
		}
		handlerRuns += len(e.handled[id])
		ackRuns += len(e.acks[id])
		unlogged += checkUnlogged(v, e, id)
		checkMessage(v, e, rec)
	}
	if v.problems > maxReported {
		t.Errorf("%d problems in all; the first %d are above", v.problems, maxReported)
	}

	checkNothingLeft(t, r, receiver, len(ids))
	t.Logf("%d kills (sender %d times, receiver %d times, %d of them both at once), "+
		"%d restarts, in %s of killing, %s in all",
		r.killsOf[RoleSender]+r.killsOf[RoleReceiver]-r.killBoth,
		r.killsOf[RoleSender], r.killsOf[RoleReceiver], r.killBoth, r.restarts,
		r.killPhase.Round(time.Millisecond), time.Since(r.started).Round(time.Millisecond))
	t.Logf("%d messages, %d ids (%d whose called line a kill prevented); "+
		"%d handler runs, %d ack callbacks; %d child runs got to their log, %d lines cut",
		r.setup.Messages, len(ids), unlogged, handlerRuns, ackRuns, e.starts, e.torn)
}

// checkUnlogged accepts an id no called line names only as a message
// whose CallAsync stored it and was killed before its return was logged:
// its number was then called again, later, under a newer id. It returns 1
// for such an id.
func checkUnlogged(v *verdict, e *events, id asyncflow.MsgID) int {
	if _, ok := e.called[id]; ok {
		return 0
	}

	payload := e.sent[id]
	if len(e.handled[id]) > 0 {
		payload = e.handled[id][0][0]
	}
	n, err := strconv.Atoi(strings.TrimPrefix(payload, "msg-"))
	if err != nil || !strings.HasPrefix(payload, "msg-") {
		v.errorf("message %s: unknown payload %q", id, payload)
		return 1
	}
	if later, ok := e.calledID[n]; !ok || later.Compare(id) <= 0 {
		v.errorf("message %s (number %d) is in no called line, and no later id was called "+
			"for its number", id, n)
	}
	return 1
}

// checkMessage checks one message against the receiver's record of it:
// processed once, its ack the one committed, and every callback told so.
func checkMessage(v *verdict, e *events, rec asyncflow.Incoming) {
	id, ack := rec.MsgID, string(rec.Ack)

	if rec.State != asyncflow.InDone {
		v.errorf("message %s: receiver record is %s, not done", id, rec.State)
	}
	if len(e.acks[id]) == 0 {
		v.errorf("message %s: processed, but the ack callback never ran", id)
	}
	for _, got := range e.acks[id] {
		if got != ack {
			v.errorf("message %s: ack callback got %q, the receiver committed %q", id, got, ack)
		}
	}
	if len(e.processed[id]) > 1 {
		v.errorf("message %s: OnProcessed ran %d times: %v", id, len(e.processed[id]),
			e.processed[id])
	}
	for _, got := range e.processed[id] {
		if got != ack {
			v.errorf("message %s: OnProcessed got %q, the receiver committed %q", id, got, ack)
		}
	}

	committed := false
	for _, run := range e.handled[id] {
		committed = committed || run[1] == ack
		if crc32.ChecksumIEEE([]byte(run[0])) != rec.PayloadHash {
			v.errorf("message %s: handler got %q, whose hash is not the committed %d", id,
				run[0], rec.PayloadHash)
		}
		if sent, ok := e.sent[id]; ok && sent != run[0] {
			v.errorf("message %s: handler got %q, the sender sent %q", id, run[0], sent)
		}
	}
	if !committed {
		v.errorf("message %s: committed ack %q is from no logged handler run %v", id, ack,
			e.handled[id])
	}
}

// checkNothingLeft checks that the stores hold nothing but the receiver's
// dedup records of the ids the logs name: the sender no message, the
// receiver no ack still to send.
func checkNothingLeft(t *testing.T, r *crashRun, receiver *boltstore.Store, ids int) {
	ctx := t.Context()
	sender, err := boltstore.Open(r.setup.Sender.StoreFile, nil)
	require.NoError(t, err)
	defer sender.Close()

	states := []asyncflow.OutState{asyncflow.OutPending, asyncflow.OutAcked,
		asyncflow.OutCorrupt, asyncflow.OutGivenUp}
	for _, st := range states {
		for i, s := range []*boltstore.Store{sender, receiver} {
			recs, err := s.ListOutgoing(ctx, st)
			require.NoError(t, err)
			for j, m := range recs[:min(len(recs), 5)] {
				t.Errorf("%s store holds %d %s messages; #%d: %s %q, %d sends, next at %s",
					[]string{RoleSender, RoleReceiver}[i], len(recs), st, j+1, m.MsgID,
					m.Payload, m.Attempts, m.NextSend.Format(time.StampMilli))
			}
		}
	}

	now := time.Now()
	acking, err := receiver.DueIncoming(ctx, now.Add(24*time.Hour), 1<<20)
	require.NoError(t, err)
	for i, m := range acking[:min(len(acking), 5)] {
		t.Errorf("receiver store holds %d acks still to send; #%d: %s, %d sends, next at %s",
			len(acking), i+1, m.MsgID, m.Attempts, m.NextSend.Format(time.StampMilli))
	}

	// Expiring every record counts them: the receiver holds a record for
	// each id the logs name and no other, and none from before the run.
	old, err := receiver.ExpireIncoming(ctx, r.started.Add(-time.Second), 1<<20)
	require.NoError(t, err)
	require.Zero(t, old, "receiver records older than the run")
	all, err := receiver.ExpireIncoming(ctx, now.Add(time.Hour), 1<<20)
	require.NoError(t, err)
	require.Equal(t, ids, all, "receiver records against ids in the logs")
	stray, err := sender.ExpireIncoming(ctx, now.Add(time.Hour), 1<<20)
	require.NoError(t, err)
	require.Zero(t, stray, "records of processed messages in the sender's store")
}

func TestEventLogLeavesOutALineAKillCutShort(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events")
	require.NoError(t, os.WriteFile(path, []byte("called 1 A .\ncalled 2 B"), 0o600))

	l, err := openEventLog(path)
	require.NoError(t, err)
	l.add("called", "2", "C")
	require.NoError(t, l.Close())

	lines, torn, err := ReadLog(path)
	require.NoError(t, err)
	require.Equal(t, []string{"called 1 A", "start " + strconv.Itoa(os.Getpid()),
		"called 2 C"}, lines)
	require.Equal(t, 1, torn)
	require.Equal(t, 2, countCalled(lines))
}
