package asyncflow

// The world TestSimulation runs in (see simulation_test.go): each peer's
// disk and the runs of its process that crash on it, the user's code on
// every peer, and the wire between the Flows and the Network, which hands
// calls over in an order that does not depend on the Go scheduler.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

// simDisk is a peer's durable store: a MemoryStore that outlives every
// Flow started on it. It also remembers each receiver key written to it,
// since a Store cannot list the receiver's records.
type simDisk struct {
	*MemoryStore

	mu   sync.Mutex
	keys map[recordKey]struct{}
}

func newSimDisk() *simDisk {
	return &simDisk{MemoryStore: NewMemoryStore(), keys: make(map[recordKey]struct{})}
}

// PutIncoming implements Store.
func (d *simDisk) PutIncoming(ctx context.Context, m Incoming) error {
	if err := d.MemoryStore.PutIncoming(ctx, m); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()

	d.keys[inKey(m.From, m.MsgID)] = struct{}{}
	return nil
}

// incoming returns the receiver's records still held, by caller and id.
func (d *simDisk) incoming() ([]Incoming, error) {
	d.mu.Lock()
	keys := make([]recordKey, 0, len(d.keys))
	for k := range d.keys {
		keys = append(keys, k)
	}
	d.mu.Unlock()

	slices.SortFunc(keys, func(a, b recordKey) int {
		if c := bytes.Compare([]byte(a.from), []byte(b.from)); c != 0 {
			return c
		}
		return a.id.Compare(b.id)
	})
	var recs []Incoming
	for _, k := range keys {
		from := principal.Principal{Raw: []byte(k.from)}
		rec, err := d.Incoming(context.Background(), from, k.id)
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case err != nil:
			return nil, err
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// outgoing returns the sender's records in every state, by state and id.
func (d *simDisk) outgoing() ([]Outgoing, error) {
	var recs []Outgoing
	for _, s := range []OutState{OutPending, OutAcked, OutCorrupt} {
		list, err := d.ListOutgoing(context.Background(), s)
		if err != nil {
			return nil, err
		}
		recs = append(recs, list...)
	}
	return recs, nil
}

// errSimCrash is what a run's store returns once the process crashed.
var errSimCrash = errors.New("simulated crash: the process is gone")

// simRun is one run of a peer's process: the Store its Flow is given,
// and the switch that kills it. Calls reach the disk until the crash
// point, which falls on a write: the write is lost, or it reaches the
// disk and the process dies right after it. From there on every store
// call fails and the user's code no longer runs. Each Store call is
// atomic on the disk, as a write is on a durable store. A crash before a
// read is a crash before the next write, seen a little earlier, so reads
// are not crash points.
type simRun struct {
	disk *simDisk

	mu      sync.Mutex
	left    int  // writes before the crash point; -1: none set
	after   bool // the crash point's write reaches the disk
	crashed bool
	onCrash func()
}

func newSimRun(disk *simDisk, onCrash func()) *simRun {
	return &simRun{disk: disk, left: -1, onCrash: onCrash}
}

// arm puts the crash point on the writes-th write from now, unless one
// is set already; it reports whether it set it.
func (r *simRun) arm(writes int, after bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()

	if r.left >= 0 || r.crashed {
		return false
	}
	r.left, r.after = writes, after
	return true
}

func (r *simRun) hasCrashed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()

	return r.crashed
}

// read fails once the run crashed.
func (r *simRun) read() error {
	if r.hasCrashed() {
		return errSimCrash
	}
	return nil
}

// write applies do to the disk unless the run crashed, and crashes the
// run at the crash point. Writes of one run reach the disk one at a time.
func (r *simRun) write(do func() error) error {
	r.mu.Lock()
	defer r.mu.Unlock()

	switch {
	case r.crashed:
		return errSimCrash
	case r.left != 0:
		if r.left > 0 {
			r.left--
		}
		return do()
	}
	r.crashed = true
	r.onCrash()
	if r.after {
		_ = do()
	}
	return errSimCrash
}

// PutOutgoing implements Store.
func (r *simRun) PutOutgoing(ctx context.Context, m Outgoing) error {
	return r.write(func() error { return r.disk.PutOutgoing(ctx, m) })
}

// DeleteOutgoing implements Store.
func (r *simRun) DeleteOutgoing(ctx context.Context, id MsgID) error {
	return r.write(func() error { return r.disk.DeleteOutgoing(ctx, id) })
}

// PutIncoming implements Store.
func (r *simRun) PutIncoming(ctx context.Context, m Incoming) error {
	return r.write(func() error { return r.disk.PutIncoming(ctx, m) })
}

// Outgoing implements Store.
func (r *simRun) Outgoing(ctx context.Context, id MsgID) (Outgoing, error) {
	if err := r.read(); err != nil {
		return Outgoing{}, err
	}
	return r.disk.Outgoing(ctx, id)
}

// ListOutgoing implements Store.
func (r *simRun) ListOutgoing(ctx context.Context, s OutState) ([]Outgoing, error) {
	if err := r.read(); err != nil {
		return nil, err
	}
	return r.disk.ListOutgoing(ctx, s)
}

// DueOutgoing implements Store.
func (r *simRun) DueOutgoing(ctx context.Context, now time.Time, limit int) ([]Outgoing,
	error) {
	if err := r.read(); err != nil {
		return nil, err
	}
	return r.disk.DueOutgoing(ctx, now, limit)
}

// Incoming implements Store.
func (r *simRun) Incoming(ctx context.Context, from principal.Principal,
	id MsgID) (Incoming, error) {
	if err := r.read(); err != nil {
		return Incoming{}, err
	}
	return r.disk.Incoming(ctx, from, id)
}

// DueIncoming implements Store.
func (r *simRun) DueIncoming(ctx context.Context, now time.Time, limit int) ([]Incoming,
	error) {
	if err := r.read(); err != nil {
		return nil, err
	}
	return r.disk.DueIncoming(ctx, now, limit)
}

// ExpireIncoming implements Store. Expiry removes records nobody needs
// any more, so it is no crash point either.
func (r *simRun) ExpireIncoming(ctx context.Context, before time.Time, limit int) (int,
	error) {
	if err := r.read(); err != nil {
		return 0, err
	}
	return r.disk.ExpireIncoming(ctx, before, limit)
}

// NextDue implements Store.
func (r *simRun) NextDue(ctx context.Context) (time.Time, bool, error) {
	if err := r.read(); err != nil {
		return time.Time{}, false, err
	}
	return r.disk.NextDue(ctx)
}

// Close implements Store. The disk stays for the next run.
func (r *simRun) Close() error { return nil }

// simCall is one call of a Flow, or one copy of it the Network delivered.
type simCall struct {
	from, to principal.Principal
	method   string
	arg      []byte
}

// compare orders calls by their bytes alone, so that calls submitted at
// one virtual instant reach the Network in the same order on every run
// of a seed, whichever send worker submitted first.
func (c simCall) compare(d simCall) int {
	return cmpBytes(c.from.Raw, d.from.Raw, c.to.Raw, d.to.Raw, []byte(c.method),
		[]byte(d.method), c.arg, d.arg)
}

// cmpBytes compares a pair of byte strings at a time, a0 with b0, and so
// on, until a pair differs.
func cmpBytes(pairs ...[]byte) int {
	for i := 0; i+1 < len(pairs); i += 2 {
		if c := bytes.Compare(pairs[i], pairs[i+1]); c != 0 {
			return c
		}
	}
	return 0
}

// key names the call by its parties, method and bytes.
func (c simCall) key() string {
	return string(c.from.Raw) + "\x00" + string(c.to.Raw) + "\x00" + c.method + "\x00" +
		string(c.arg)
}

// simTransport is the Transport of a peer: it hands each call to the
// world's wire and returns, as an endpoint answers 202 Accepted. Calls a
// run submits after its crash point leave all the same: they were on
// their way before it, or, after a write that reached the disk, are the
// ones the process would have sent had it lived a moment longer. Holding
// them back would make whether they leave depend on which of the run's
// goroutines got there first, and a seed would no longer replay one run.
type simTransport struct {
	w    *simWorld
	from principal.Principal
}

// Send implements Transport.
func (t *simTransport) Send(_ context.Context, to principal.Principal, method string,
	arg []byte) error {
	t.w.submit(simCall{from: t.from, to: to, method: method, arg: bytes.Clone(arg)})
	return nil
}

// Route implements Router: every peer of the world can be reached.
func (t *simTransport) Route(to principal.Principal) error {
	return t.w.net.Transport(t.from).(Router).Route(to)
}

// simInbound is what the Network delivers to for one peer. It does not
// hand the copy to the peer's Flow: it queues it for the bubble's main
// goroutine, which delivers copies one at a time, each once the previous
// one's effects settled, to whichever run of the peer is up then.
type simInbound struct {
	w *simWorld
	p *simPeer
}

// Deliver implements Inbound. It accepts every copy, as an endpoint that
// answers before it processes.
func (in simInbound) Deliver(_ context.Context, from principal.Principal, method string,
	arg []byte) error {
	in.w.arrive(in.p, simCall{from: from, to: in.p.id, method: method, arg: arg})
	return nil
}

// simPeer is one principal: its disk, and the run of its process that is
// up, if any.
type simPeer struct {
	idx  int
	id   principal.Principal
	disk *simDisk
	in   simInbound
	out  Transport // the Network, sending as this peer

	// Guarded by the world's mu.
	run  *simRun
	flow *Flow
	up   bool

	// Used by the bubble's main goroutine only.
	crashes   int
	downFor   time.Duration
	restartAt time.Time
}

// simMessage is a message its sender stored: CallAsync returned its id,
// or failed in a crash just after storing it.
type simMessage struct {
	n        int
	from, to *simPeer
	payload  []byte
	id       MsgID
}

// simReportKey names the corruption reports of one exchange on one side.
type simReportKey struct {
	peer  int
	side  Side
	other string
	id    MsgID
}

// simReport is one call of OnCorrupt.
type simReport struct {
	peer int
	c    Corruption
}

// simWorld is the peers, their network and what the test saw happen.
// Only the bubble's main goroutine moves it on: it hands calls to the
// Network, delivers what arrives, crashes and restarts peers, and lets
// virtual time pass.
type simWorld struct {
	t     *testing.T
	sc    simScenario
	net   *Network
	peers []*simPeer
	start time.Time
	wake  chan struct{}
	trace hash.Hash64
	log   io.Writer // where the trace is written as text, or nil

	mu       sync.Mutex
	queue    []simCall           // calls the Flows sent
	arrivals []simCall           // copies the Network delivered
	sent     map[string]struct{} // every call sent, by key
	// handed holds every argument handed to the Network. The Network
	// passes a copy it left alone on as the same slice, and makes a new
	// one for a copy it corrupted: that tells a corrupted copy apart even
	// when a flip turns it into the bytes of another call.
	handed map[*byte][]byte

	msgs      []*simMessage
	known     map[MsgID]bool    // the ids of msgs
	attempts  map[recordKey]int // handler calls
	handled   map[recordKey]int // handler calls that succeeded
	processed map[recordKey]int // OnProcessed calls
	acks      map[MsgID][]Delivery
	reports   []simReport
	reported  map[simReportKey]int
	corrupt   simCorruptions
	counts    simCounts
	failures  []string
}

// simCounts counts what happened, for the summary.
type simCounts struct {
	deliveries  int // copies the Network delivered
	lost        int // of which to a peer that was down
	refused     int // of which Deliver refused
	skipped     int // planned messages whose sender was down or crashed
	stored      int // messages whose CallAsync failed in a crash, but stored
	corruptAcks int // OnAck calls that got a corrupted answer
	silentAcks  int // of which the receiver never reported
	unchecked   int // messages processed corrupted and acked without a hash
}

// simCorruptions records what corrupted copies carried, by what they
// claim to be, to explain the mismatches they cause.
type simCorruptions struct {
	copies      int
	undecodable int
	byMethod    map[string]int       // corrupted copies by method
	refused     map[string]int       // of which Deliver refused
	phantoms    map[recordKey]bool   // new messages under an id nobody sent
	newPayloads map[MsgID][][]byte   // altered payloads of new messages
	ackPayloads map[MsgID][][]byte   // altered payloads of acks
	ackHashes   map[MsgID][]Hash     // altered hashes of acks
	ackackHash  map[recordKey][]Hash // altered hashes of ackacks
	unexplained []string             // copies a bit away from no call sent
	renamed     int                  // messages processed under a corrupted id
}

func newSimWorld(t *testing.T, sc simScenario, log io.Writer) *simWorld {
	net, err := NewNetwork(sc.seed, sc.faults)
	require.NoError(t, err)
	w := &simWorld{
		t: t, sc: sc, net: net, start: time.Now(), log: log,
		wake:      make(chan struct{}, 1),
		trace:     fnv.New64a(),
		sent:      make(map[string]struct{}),
		handed:    make(map[*byte][]byte),
		known:     make(map[MsgID]bool),
		attempts:  make(map[recordKey]int),
		handled:   make(map[recordKey]int),
		processed: make(map[recordKey]int),
		acks:      make(map[MsgID][]Delivery),
		reported:  make(map[simReportKey]int),
		corrupt: simCorruptions{
			byMethod:    make(map[string]int),
			refused:     make(map[string]int),
			phantoms:    make(map[recordKey]bool),
			newPayloads: make(map[MsgID][][]byte),
			ackPayloads: make(map[MsgID][][]byte),
			ackHashes:   make(map[MsgID][]Hash),
			ackackHash:  make(map[recordKey][]Hash),
		},
	}
	for i := range sc.peers {
		id := principal.Principal{Raw: []byte{0x51, byte(i), 0x01}}
		p := &simPeer{idx: i, id: id, disk: newSimDisk(), out: net.Transport(id)}
		p.in = simInbound{w: w, p: p}
		w.peers = append(w.peers, p)
		w.startPeer(p)
	}
	return w
}

// close stops every run, then the network.
func (w *simWorld) close() {
	for _, p := range w.peers {
		w.mu.Lock()
		flow := p.flow
		w.mu.Unlock()
		require.NoError(w.t, flow.Close())
	}
	w.net.Close()
	for _, p := range w.peers {
		require.NoError(w.t, p.disk.Close())
	}
}

// peer returns the peer of the principal p.
func (w *simWorld) peer(p principal.Principal) *simPeer {
	return w.peers[p.Raw[1]]
}

// startPeer starts a new run of p's process on its disk. The user's code
// stops running once the run crashed.
func (w *simWorld) startPeer(p *simPeer) {
	run := newSimRun(p.disk, w.poke)
	logger := quiet
	if w.log != nil {
		logger = slog.New(slog.NewTextHandler(w.log,
			&slog.HandlerOptions{Level: slog.LevelDebug})).With("peer", p.idx)
	}
	flow, err := New(Config{
		Transport: &simTransport{w: w, from: p.id},
		Store:     run,
		Handler: func(ctx context.Context, from principal.Principal, id MsgID,
			payload []byte) ([]byte, error) {
			if run.hasCrashed() {
				return nil, errSimCrash
			}
			return w.handler(from, id, payload)
		},
		OnAck: func(_ context.Context, d Delivery) {
			if !run.hasCrashed() {
				w.onAck(d)
			}
		},
		OnCorrupt: func(_ context.Context, c Corruption) {
			if !run.hasCrashed() {
				w.onCorrupt(p, c)
			}
		},
		OnProcessed: func(pr Processed) {
			if !run.hasCrashed() {
				w.onProcessed(pr)
			}
		},
		RetryAfter:  w.sc.retry,
		DedupWindow: w.sc.window,
		StrictHash:  w.sc.strict,
		SendWorkers: 4,
		Logger:      logger,
	})
	require.NoError(w.t, err)

	w.mu.Lock()
	p.run, p.flow, p.up = run, flow, true
	w.mu.Unlock()
	w.net.Attach(p.id, p.in)
	w.note(fmt.Sprintf("start peer %d", p.idx))
}

// crashPeer ends the run of p whose store reached its crash point.
func (w *simWorld) crashPeer(p *simPeer) {
	w.mu.Lock()
	p.up = false
	flow := p.flow
	w.mu.Unlock()

	w.net.Down(p.id)
	require.NoError(w.t, flow.Close())
	p.crashes++
	p.restartAt = time.Now().Add(p.downFor)
	w.note(fmt.Sprintf("crash peer %d", p.idx))
}

// note adds an event of the bubble's main goroutine to the trace.
func (w *simWorld) note(event string) {
	line := fmt.Sprintf("%s %s\n", time.Since(w.start), event)
	w.trace.Write([]byte(line))
	if w.log != nil {
		_, _ = io.WriteString(w.log, line)
	}
}

// noteCall adds a call handed on to the trace.
func (w *simWorld) noteCall(what string, c simCall) {
	w.note(fmt.Sprintf("%s %s %d->%d %x", what, ShortMethod(c.method), w.peer(c.from).idx,
		w.peer(c.to).idx, c.arg))
}

// poke wakes the main goroutine.
func (w *simWorld) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// fail records a broken promise, to be reported when the run ends.
func (w *simWorld) fail(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()

	w.failLocked(format, args...)
}

func (w *simWorld) failLocked(format string, args ...any) {
	w.failures = append(w.failures, fmt.Sprintf(format, args...))
}

// The user's code on every peer.

// handler answers with the id and the payload, so that no two answers are
// alike. Some calls fail, decided by the seed, the record and the attempt.
func (w *simWorld) handler(from principal.Principal, id MsgID, payload []byte) ([]byte,
	error) {
	k := inKey(from, id)
	w.mu.Lock()
	defer w.mu.Unlock()

	w.attempts[k]++
	attempt := binary.LittleEndian.AppendUint64(nil, uint64(w.attempts[k]))
	if simChance(w.sc.seed, from.Raw, id[:], attempt) < w.sc.handlerFail {
		return nil, errors.New("simulated handler failure")
	}
	w.handled[k]++
	return simAnswer(id, payload), nil
}

func simAnswer(id MsgID, payload []byte) []byte {
	return append(append([]byte("re:"), id[:]...), payload...)
}

func (w *simWorld) onAck(d Delivery) {
	w.mu.Lock()
	defer w.mu.Unlock()

	w.acks[d.MsgID] = append(w.acks[d.MsgID], d)
}

func (w *simWorld) onCorrupt(p *simPeer, c Corruption) {
	w.mu.Lock()
	defer w.mu.Unlock()

	w.reports = append(w.reports, simReport{peer: p.idx, c: c})
	w.reported[simReportKey{p.idx, c.Side, string(c.Peer.Raw), c.MsgID}]++
}

func (w *simWorld) onProcessed(pr Processed) {
	w.mu.Lock()
	defer w.mu.Unlock()

	w.processed[inKey(pr.From, pr.MsgID)]++
}

// The wire.

// submit takes a call a Flow sent, for the main goroutine to hand on.
func (w *simWorld) submit(c simCall) {
	w.mu.Lock()
	w.queue = append(w.queue, c)
	w.sent[c.key()] = struct{}{}
	w.mu.Unlock()
	w.poke()
}

// arrive takes a copy the Network delivered, for the main goroutine to
// hand to the peer.
func (w *simWorld) arrive(p *simPeer, c simCall) {
	w.mu.Lock()
	w.arrivals = append(w.arrivals, c)
	w.counts.deliveries++
	w.mu.Unlock()
	w.poke()
}

// nextArrival removes the copy that arrived first.
func (w *simWorld) nextArrival() (simCall, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()

	if len(w.arrivals) == 0 {
		return simCall{}, false
	}
	c := w.arrivals[0]
	w.arrivals = slices.Delete(w.arrivals, 0, 1)
	return c, true
}

// nextCall removes the call sent that comes first in byte order.
func (w *simWorld) nextCall() (simCall, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()

	if len(w.queue) == 0 {
		return simCall{}, false
	}
	first := 0
	for i := range w.queue {
		if w.queue[i].compare(w.queue[first]) < 0 {
			first = i
		}
	}
	c := w.queue[first]
	w.queue[first] = w.queue[len(w.queue)-1]
	w.queue = w.queue[:len(w.queue)-1]
	w.handed[unsafe.SliceData(c.arg)] = c.arg
	return c, true
}

// step hands on what is waiting, one thing at a time, each once the
// previous one's effects settled: the copies that arrived, in the order
// they arrived, then the calls sent, in byte order, to the Network. It
// ends the runs that crashed on the way.
func (w *simWorld) step() {
	for {
		synctest.Wait()
		for _, p := range w.peers {
			w.mu.Lock()
			crashed := p.up && p.run.hasCrashed()
			w.mu.Unlock()
			if crashed {
				w.crashPeer(p)
			}
		}

		if c, ok := w.nextArrival(); ok {
			w.noteCall("deliver", c)
			w.deliver(w.peer(c.to), c)
			continue
		}
		c, ok := w.nextCall()
		if !ok {
			return
		}
		w.noteCall("send", c)
		_ = w.peer(c.from).out.Send(context.Background(), c.to, c.method, c.arg)
	}
}

// advance lets virtual time run to at, handing calls on and restarting
// crashed peers on the way.
func (w *simWorld) advance(at time.Time) {
	for {
		w.step()
		next, restarted := at, false
		for _, p := range w.peers {
			switch {
			case p.up:
			case !time.Now().Before(p.restartAt):
				w.startPeer(p)
				restarted = true
			case p.restartAt.Before(next):
				next = p.restartAt
			}
		}
		if restarted {
			continue
		}
		if !time.Now().Before(at) {
			return
		}

		timer := time.NewTimer(time.Until(next))
		select {
		case <-w.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// deliver hands a copy that arrived to the run of p that is up, or loses
// it if p is down. It records what a corrupted copy changed, and checks
// that the copy had the effect the protocol gives it.
func (w *simWorld) deliver(p *simPeer, c simCall) {
	w.mu.Lock()
	_, intact := w.handed[unsafe.SliceData(c.arg)]
	up, flow, run := p.up, p.flow, p.run
	if !up {
		w.counts.lost++
	}
	w.mu.Unlock()

	if !intact {
		w.classify(c)
	}
	if !up {
		return
	}

	e := w.expect(p, c)
	err := flow.Deliver(context.Background(), c.from, c.method, c.arg)
	if err != nil {
		w.mu.Lock()
		w.counts.refused++
		if !intact {
			w.corrupt.refused[ShortMethod(c.method)]++
		}
		w.mu.Unlock()
	}
	if !run.hasCrashed() {
		w.verify(p, c, e, err)
	}
}

// classify finds the call a corrupted copy was made from, one bit away,
// and records what the flip changed. A copy whose id changed brings all
// it carries to a message it does not belong to.
func (w *simWorld) classify(c simCall) {
	orig, ok := w.original(c)
	w.mu.Lock()
	defer w.mu.Unlock()

	cs := &w.corrupt
	cs.copies++
	cs.byMethod[ShortMethod(c.method)]++
	if !ok {
		cs.unexplained = append(cs.unexplained, fmt.Sprintf("%s from %s: %x",
			ShortMethod(c.method), c.from, c.arg))
		return
	}

	switch c.method {
	case MethodNewMessage:
		var was, got NewMessage
		if was.UnmarshalCandid(orig) != nil || got.UnmarshalCandid(c.arg) != nil {
			cs.undecodable++
			return
		}
		moved := got.MsgID != was.MsgID
		if moved {
			cs.phantoms[inKey(c.from, got.MsgID)] = true
		}
		if moved || !bytes.Equal(got.Payload, was.Payload) {
			cs.newPayloads[got.MsgID] = append(cs.newPayloads[got.MsgID], got.Payload)
		}
	case MethodAck:
		var was, got Ack
		if was.UnmarshalCandid(orig) != nil || got.UnmarshalCandid(c.arg) != nil {
			cs.undecodable++
			return
		}
		moved := got.MsgID != was.MsgID
		if moved || !bytes.Equal(got.Payload, was.Payload) {
			cs.ackPayloads[got.MsgID] = append(cs.ackPayloads[got.MsgID], got.Payload)
		}
		if moved || got.Hash != was.Hash {
			cs.ackHashes[got.MsgID] = append(cs.ackHashes[got.MsgID], got.Hash)
		}
	case MethodAckAck:
		var was, got AckAck
		if was.UnmarshalCandid(orig) != nil || got.UnmarshalCandid(c.arg) != nil {
			cs.undecodable++
			return
		}
		if got.MsgID != was.MsgID || got.Hash != was.Hash {
			k := inKey(c.from, got.MsgID)
			cs.ackackHash[k] = append(cs.ackackHash[k], got.Hash)
		}
	}
}

// original returns the argument of a call sent that c's differs from in
// one bit.
func (w *simWorld) original(c simCall) ([]byte, bool) {
	flipped := c
	flipped.arg = bytes.Clone(c.arg)
	w.mu.Lock()
	defer w.mu.Unlock()

	for i := range len(flipped.arg) * 8 {
		flipped.arg[i/8] ^= 1 << (i % 8)
		if _, ok := w.sent[flipped.key()]; ok {
			return flipped.arg, true
		}
		flipped.arg[i/8] ^= 1 << (i % 8)
	}
	return nil, false
}

// simExpect is what a copy should do, judged from the record it finds
// before it is delivered.
type simExpect struct {
	id      MsgID
	key     simReportKey
	acks    int // OnAck calls of id before
	reports int // reports of key before
	handled int // handler successes of (caller, id) before

	ack       bool   // an ack a pending message accepts
	report    bool   // an ack or ackack whose hash mismatches
	payload   []byte // the ack payload OnAck should get
	settle    bool   // an ackack an acking record accepts
	duplicate bool   // a newMessage whose id was processed
}

// expect reads what the copy c will find at p.
func (w *simWorld) expect(p *simPeer, c simCall) simExpect {
	ctx := context.Background()
	var e simExpect
	switch c.method {
	case MethodNewMessage:
		var m NewMessage
		if m.UnmarshalCandid(c.arg) != nil {
			return e
		}
		e.id = m.MsgID
		_, err := p.disk.Incoming(ctx, c.from, m.MsgID)
		e.duplicate = err == nil
	case MethodAck:
		var m Ack
		if m.UnmarshalCandid(c.arg) != nil {
			return e
		}
		e.id, e.key = m.MsgID, simReportKey{p.idx, SideSender, string(c.from.Raw), m.MsgID}
		rec, err := p.disk.Outgoing(ctx, m.MsgID)
		if err == nil && rec.To.Equal(c.from) && rec.State == OutPending {
			e.ack = m.Hash.Matches(rec.Payload, w.sc.strict)
			e.report = !e.ack
			e.payload = m.Payload
		}
	case MethodAckAck:
		var m AckAck
		if m.UnmarshalCandid(c.arg) != nil {
			return e
		}
		e.id, e.key = m.MsgID, simReportKey{p.idx, SideReceiver, string(c.from.Raw), m.MsgID}
		rec, err := p.disk.Incoming(ctx, c.from, m.MsgID)
		if err == nil && rec.State == InAcking {
			e.settle = true
			e.report = !m.Hash.Matches(rec.Ack, w.sc.strict)
		}
	default:
		return e
	}

	w.mu.Lock()
	defer w.mu.Unlock()

	e.acks, e.reports = len(w.acks[e.id]), w.reported[e.key]
	e.handled = w.handled[inKey(c.from, e.id)]
	return e
}

// verify checks that the copy c did what e expects: a duplicate runs no
// handler; an ack a pending message takes runs OnAck once, or reports
// once if its hash mismatches; an ackack settles the acking record, and
// reports once if its hash mismatches; and nothing else runs OnAck or
// reports. It runs only if the run did not crash meanwhile.
func (w *simWorld) verify(p *simPeer, c simCall, e simExpect, err error) {
	if e.id == (MsgID{}) {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()

	what := fmt.Sprintf("%s of %s from peer %d to peer %d", ShortMethod(c.method), e.id,
		w.peer(c.from).idx, p.idx)
	if c.method == MethodNewMessage {
		if e.duplicate && w.handled[inKey(c.from, e.id)] != e.handled {
			w.failLocked("%s: a duplicate ran the handler", what)
		}
		return
	}

	acks, reports := w.acks[e.id][e.acks:], w.reported[e.key]-e.reports
	if (e.ack || e.report || e.settle) && err != nil {
		w.failLocked("%s: refused: %v", what, err)
	}
	switch {
	case e.ack && (len(acks) != 1 || !bytes.Equal(acks[0].Received, e.payload)):
		w.failLocked("%s: a pending message took it, and OnAck ran %d times", what,
			len(acks))
	case !e.ack && len(acks) != 0:
		w.failLocked("%s: OnAck ran %d times, with no pending message", what, len(acks))
	}
	switch {
	case e.report && reports != 1:
		w.failLocked("%s: its hash mismatches, and was reported %d times", what, reports)
	case !e.report && reports != 0:
		w.failLocked("%s: reported %d times, with no mismatch", what, reports)
	}
	if e.settle {
		rec, err := p.disk.Incoming(context.Background(), c.from, e.id)
		if err != nil || rec.State != InDone {
			w.failLocked("%s: the acking record is %s (%v), not done", what, rec.State, err)
		}
	}
}

// disarm removes a crash point that was not reached.
func (r *simRun) disarm() {
	r.mu.Lock()
	defer r.mu.Unlock()

	r.left = -1
}

// useSimEntropy makes the message ids of this process follow seed, so
// that a run of the simulation sends the same bytes every time, and
// returns a function that restores the random ids. Only one simulation
// may run at a time, and no other test may make ids meanwhile: the tests
// of this package do not run in parallel.
func useSimEntropy(seed uint64) (restore func()) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	copy(key[8:], "asyncflow simulation ids")
	entropyMu.Lock()
	defer entropyMu.Unlock()

	saved := entropy
	entropy = ulid.Monotonic(rand.NewChaCha8(key), 0)
	return func() {
		entropyMu.Lock()
		defer entropyMu.Unlock()

		entropy = saved
	}
}

// simChance returns a number in [0, 1) fixed by seed and the parts, for
// decisions that must not depend on the order in which they are asked.
func simChance(seed uint64, parts ...[]byte) float64 {
	h := fnv.New64a()
	h.Write(binary.LittleEndian.AppendUint64(nil, seed))
	for _, p := range parts {
		h.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(p))))
		h.Write(p)
	}
	// FNV's high bits mix poorly: finish with SplitMix64's mixer.
	x := h.Sum64()
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}
