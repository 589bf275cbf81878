package asyncflow

// TestSimulation: several peers send each other a thousand messages in
// every direction, in virtual time (testing/synctest), over a Network
// that drops, duplicates, delays, reorders and corrupts calls, while
// their processes crash at chosen writes and restart on what their disks
// kept. Once every exchange is over it checks what the protocol promises:
// every message processed by its receiver, and acknowledged to its sender
// or kept there as corrupt; handlers and ack callbacks run once, or at least once where a crash
// intervened; every hash mismatch reported, and no report without a
// corruption behind it; the stores holding only processed ids inside the
// dedup window and the corrupt messages the user must decide on; and,
// once the window passed, nothing.
//
// A seed fixes all that varies: the workload, the faults, the crash
// points, the message ids and the order in which calls reach the Network
// and the Flows. Calls made at one virtual instant are handed on one at a
// time, in byte order, each once the previous one's effects settled, so a
// run does not depend on the Go scheduler, and a failing seed replays.
// The world it runs in is in simulation_world_test.go.
//
//	go test -run '^TestSimulation$' .                  # the CI seeds
//	go test -run '^TestSimulation$' -sim.seeds=1000 .  # seeds 1 to 1000
//	go test -run '^TestSimulation$' -sim.seed=42 -v .  # one seed, with its summary
//
// -sim.trace=FILE writes what each seed did to FILE: every call handed
// on, crash and restart, with the Flows' debug logs.

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"
)

var (
	simSeedFlag = flag.Uint64("sim.seed", 0,
		"run TestSimulation for this seed only")
	simSeedsFlag = flag.Int("sim.seeds", 0,
		"run TestSimulation for seeds 1 to N instead of the CI seeds")
	simMessagesFlag = flag.Int("sim.messages", simMessages,
		"messages each seed of TestSimulation plans to send")
	simTraceFlag = flag.String("sim.trace", "",
		"write each seed's calls, crashes and the Flows' debug logs to this file")
)

const (
	// simCISeeds is how many seeds go test runs: seeds 1 to simCISeeds.
	simCISeeds = 16

	simMessages = 1000
	simPeers    = 4
	simSpan     = time.Minute // when the workload sends
	simRetry    = time.Second // every peer's RetryAfter
	simWindow   = time.Hour   // every peer's DedupWindow
)

func TestSimulation(t *testing.T) {
	seeds := simRange(simCISeeds)
	switch {
	case *simSeedFlag != 0:
		seeds = []uint64{*simSeedFlag}
	case *simSeedsFlag > 0:
		seeds = simRange(*simSeedsFlag)
	}

	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			runSimulation(t, newSimScenario(seed, *simMessagesFlag))
			if t.Failed() {
				t.Logf("replay: %s", simReplay(seed))
			}
		})
	}
}

// A seed replays the same run: the same calls, in the same order, at the
// same virtual times, with the same crashes.
func TestSimulationReplaysItsSeed(t *testing.T) {
	sc := newSimScenario(3, 200)
	first := runSimulation(t, sc)
	second := runSimulation(t, sc)
	require.Equal(t, first, second, "two runs of seed 3 went differently")
}

func simRange(n int) []uint64 {
	seeds := make([]uint64, n)
	for i := range seeds {
		seeds[i] = uint64(i + 1)
	}
	return seeds
}

// simReplay returns the command that runs seed again.
func simReplay(seed uint64) string {
	cmd := fmt.Sprintf("go test -run '^TestSimulation$' -sim.seed=%d", seed)
	if *simMessagesFlag != simMessages {
		cmd += fmt.Sprintf(" -sim.messages=%d", *simMessagesFlag)
	}
	return cmd + " -v ."
}

// simScenario is everything a seed decides before the run starts.
type simScenario struct {
	seed     uint64
	peers    int
	messages []simPlanned
	crashes  []simCrash

	faults      Faults
	handlerFail float64 // chance that one handler call fails
	strict      bool    // every peer's StrictHash
	retry       time.Duration
	window      time.Duration
}

// simPlanned is a message the workload sends, if its sender is up then.
type simPlanned struct {
	at       time.Duration // after the start
	from, to int
	payload  []byte
}

// simCrash kills a peer's process at its writes-th write after at, and
// restarts it down later.
type simCrash struct {
	at     time.Duration
	peer   int
	writes int
	after  bool // the write reaches the disk before the process dies
	down   time.Duration
}

func newSimScenario(seed uint64, messages int) simScenario {
	rng := rand.New(rand.NewPCG(seed, 0x51a7))
	sc := simScenario{
		seed:  seed,
		peers: simPeers,
		faults: Faults{
			Drop:      0.3 * rng.Float64(),
			Duplicate: 0.2 * rng.Float64(),
			Corrupt:   0.05 * rng.Float64(),
			Delay:     0.5 * rng.Float64(),
			MaxDelay:  100*time.Millisecond + simDuration(rng, 3*simRetry),
		},
		handlerFail: 0.1 * rng.Float64(),
		strict:      rng.IntN(3) == 0,
		retry:       simRetry,
		window:      simWindow,
	}

	// Each message in its own millisecond, so that no two ids share their
	// time, and any two differ in many bits.
	slots := rng.Perm(int(simSpan / time.Millisecond))[:messages]
	slices.Sort(slots)
	for _, ms := range slots {
		from := rng.IntN(sc.peers)
		sc.messages = append(sc.messages, simPlanned{
			at:      time.Duration(ms)*time.Millisecond + simDuration(rng, time.Millisecond),
			from:    from,
			to:      (from + 1 + rng.IntN(sc.peers-1)) % sc.peers,
			payload: simBytes(rng, rng.IntN(48)),
		})
	}

	// One seed in five crashes no peer, and holds every receiver and
	// sender to exactly once; the others crash each peer up to 8 times.
	crashy := rng.IntN(5) != 0
	for p := range sc.peers {
		for range rng.IntN(9) * btoi(crashy) {
			sc.crashes = append(sc.crashes, simCrash{
				at:     simDuration(rng, simSpan),
				peer:   p,
				writes: rng.IntN(40),
				after:  rng.IntN(2) == 0,
				down:   simDuration(rng, 5*simRetry),
			})
		}
	}
	slices.SortFunc(sc.crashes, func(a, b simCrash) int { return int(a.at - b.at) })
	return sc
}

func simDuration(rng *rand.Rand, below time.Duration) time.Duration {
	return time.Duration(rng.Int64N(int64(below)))
}

func simBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func (sc simScenario) String() string {
	f := sc.faults
	return fmt.Sprintf("%d peers, %d messages, %d crashes; drop %.2f, duplicate %.2f, "+
		"corrupt %.3f, delay %.2f up to %s; handler failures %.2f; strict hashes %v",
		sc.peers, len(sc.messages), len(sc.crashes), f.Drop, f.Duplicate, f.Corrupt,
		f.Delay, f.MaxDelay.Round(time.Millisecond), sc.handlerFail, sc.strict)
}

// simTraceFile is the file -sim.trace names, shared by the seeds.
var simTraceFile = sync.OnceValues(func() (io.Writer, error) {
	f, err := os.Create(*simTraceFlag)
	return &simSyncWriter{w: f}, err
})

// simSyncWriter serialises writes from the Flows' loggers and the trace.
type simSyncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *simSyncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	return s.w.Write(p)
}

// runSimulation runs sc in its own bubble and returns a fingerprint of
// what went over the wire, and when.
func runSimulation(t *testing.T, sc simScenario) (fingerprint uint64) {
	var log io.Writer
	if *simTraceFlag != "" {
		var err error
		log, err = simTraceFile()
		require.NoError(t, err)
		fmt.Fprintf(log, "seed %d: %s\n", sc.seed, sc)
	}

	synctest.Test(t, func(t *testing.T) {
		defer useSimEntropy(sc.seed)()
		w := newSimWorld(t, sc, log)
		defer w.close()
		t.Logf("seed %d: %s", sc.seed, sc)

		w.play()
		if !w.settle(time.Now().Add(20 * time.Minute)) {
			w.report()
			t.Fatalf("not settled 20 minutes after the workload: %s", w.unsettled())
		}
		w.checkSettled()
		w.checkExpiry()
		w.report()
		fingerprint = w.trace.Sum64()
	})
	return fingerprint
}

// The workload.

// play sends the planned messages and arms the planned crashes, each at
// its time.
func (w *simWorld) play() {
	msgs, crashes := w.sc.messages, w.sc.crashes
	for len(msgs) > 0 || len(crashes) > 0 {
		if len(crashes) > 0 && (len(msgs) == 0 || crashes[0].at < msgs[0].at) {
			w.advance(w.start.Add(crashes[0].at))
			w.arm(crashes[0])
			crashes = crashes[1:]
			continue
		}
		w.advance(w.start.Add(msgs[0].at))
		w.send(len(w.sc.messages)-len(msgs), msgs[0])
		msgs = msgs[1:]
	}
}

// arm sets the crash point of c on the peer's run, unless the peer is
// down or its run has one already.
func (w *simWorld) arm(c simCrash) {
	p := w.peers[c.peer]
	if !p.up || !p.run.arm(c.writes, c.after) {
		return
	}
	p.downFor = c.down
	w.note(fmt.Sprintf("arm peer %d at write %d", p.idx, c.writes))
}

// send sends message n from its sender, if it is up.
func (w *simWorld) send(n int, m simPlanned) {
	from, to := w.peers[m.from], w.peers[m.to]
	if !from.up {
		w.counts.skipped++
		return
	}
	id, err := from.flow.CallAsync(context.Background(), to.id, m.payload)
	switch {
	case err != nil && from.run.hasCrashed():
		// The crash may have come right after the message was stored: then
		// it is sent all the same, though CallAsync did not return its id.
		var ok bool
		if id, ok = w.storedAnyway(from, to, m.payload); !ok {
			w.counts.skipped++
			return
		}
		w.counts.stored++
	case err != nil:
		w.fail("CallAsync of message %d: %v", n, err)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()

	w.msgs = append(w.msgs, &simMessage{n: n, from: from, to: to, payload: m.payload, id: id})
	w.known[id] = true
}

// storedAnyway finds the message to to with payload that from's disk
// holds though its CallAsync failed.
func (w *simWorld) storedAnyway(from, to *simPeer, payload []byte) (MsgID, bool) {
	recs, err := from.disk.ListOutgoing(context.Background(), OutPending)
	require.NoError(w.t, err)
	w.mu.Lock()
	defer w.mu.Unlock()

	for _, r := range recs {
		if !w.known[r.MsgID] && r.To.Equal(to.id) && bytes.Equal(r.Payload, payload) {
			return r.MsgID, true
		}
	}
	return MsgID{}, false
}

// settle runs until the exchanges are over: every peer is up, nothing
// waits to be sent or resent, and a longest delay later nothing arrived.
func (w *simWorld) settle(deadline time.Time) bool {
	for time.Now().Before(deadline) {
		w.advance(time.Now().Add(w.sc.retry))
		if w.unsettled() != "" {
			continue
		}
		w.mu.Lock()
		mark := w.counts.deliveries
		w.mu.Unlock()
		w.advance(time.Now().Add(w.sc.faults.MaxDelay + w.sc.retry))
		w.mu.Lock()
		still := w.counts.deliveries == mark
		w.mu.Unlock()
		if still && w.unsettled() == "" {
			return true
		}
	}
	return false
}

// unsettled describes what is left to send or resend, if anything.
func (w *simWorld) unsettled() string {
	ctx := context.Background()
	w.mu.Lock()
	queued := len(w.queue) + len(w.arrivals)
	w.mu.Unlock()

	var why []string
	if queued > 0 {
		why = append(why, fmt.Sprintf("%d calls on their way", queued))
	}
	for _, p := range w.peers {
		if !p.up {
			why = append(why, fmt.Sprintf("peer %d is down", p.idx))
			continue
		}
		for _, s := range []OutState{OutPending, OutAcked} {
			recs, err := p.disk.ListOutgoing(ctx, s)
			require.NoError(w.t, err)
			if len(recs) > 0 {
				why = append(why, fmt.Sprintf("peer %d holds %d %s messages, the first %s to %s",
					p.idx, len(recs), s, recs[0].MsgID, recs[0].To))
			}
		}
		acking, err := p.disk.DueIncoming(ctx, time.Now().Add(w.sc.window), 1)
		require.NoError(w.t, err)
		if len(acking) > 0 {
			why = append(why, fmt.Sprintf("peer %d still acks %s from %s", p.idx,
				acking[0].MsgID, acking[0].From))
		}
	}
	return strings.Join(why, "; ")
}

// The checks once the exchanges are over.

// simHeld is a receiver record and the peers that hold a record of its key.
type simHeld struct {
	rec     Incoming
	holders []int
}

// checkSettled checks the stores and the callbacks against the messages
// sent and the corruptions the network made.
func (w *simWorld) checkSettled() {
	records := make(map[recordKey]*simHeld)
	outgoing := make(map[MsgID]Outgoing)
	now := time.Now()
	for _, p := range w.peers {
		recs, err := p.disk.incoming()
		require.NoError(w.t, err)
		for _, r := range recs {
			k := inKey(r.From, r.MsgID)
			if records[k] == nil {
				records[k] = &simHeld{rec: r}
			}
			records[k].holders = append(records[k].holders, p.idx)
			if r.State != InDone {
				w.fail("peer %d: the record of %s from %s is %s", p.idx, r.MsgID, r.From,
					r.State)
			}
			if err := checkWindow(r.MsgID, now, w.sc.window, DefaultMaxClockSkew); err != nil {
				w.fail("peer %d: holds a record %v", p.idx, err)
			}
		}
		outs, err := p.disk.outgoing()
		require.NoError(w.t, err)
		for _, o := range outs {
			outgoing[o.MsgID] = o
			if o.State != OutCorrupt {
				w.fail("peer %d: message %s is still %s", p.idx, o.MsgID, o.State)
			}
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()

	ours := make(map[recordKey]bool)
	for _, m := range w.msgs {
		k := inKey(m.from.id, m.id)
		ours[k] = true
		h := records[k]
		switch {
		case h == nil && w.renamed(m, records):
			// Its newMessage arrived under an id a bit away, and the ack of
			// that id came back under this one: ids carry no hash.
			w.corrupt.renamed++
			continue
		case h == nil:
			w.failLocked("message %d (%s, peer %d to %d) was never processed", m.n, m.id,
				m.from.idx, m.to.idx)
			continue
		case len(h.holders) != 1 || h.holders[0] != m.to.idx:
			w.failLocked("message %d: records held by peers %v, sent to peer %d", m.n,
				h.holders, m.to.idx)
		}
		w.checkReceiver(m, h.rec)
		out, kept := outgoing[m.id]
		w.checkSender(m, h.rec, out, kept)
	}

	for k, h := range records {
		if !ours[k] && !w.corrupt.phantoms[k] {
			w.failLocked("peers %v hold a record of %s from %x that nobody sent", h.holders,
				k.id, k.from)
		}
	}
	w.checkReports(records)
	w.checkNetwork()
}

// renamed reports whether m's receiver processed a new message whose id,
// a bit away from m's, a corrupted copy of m made up.
func (w *simWorld) renamed(m *simMessage, records map[recordKey]*simHeld) bool {
	for i := range len(m.id) * 8 {
		id := m.id
		id[i/8] ^= 1 << (i % 8)
		k := inKey(m.from.id, id)
		if h := records[k]; h != nil && w.corrupt.phantoms[k] &&
			slices.Contains(h.holders, m.to.idx) {
			return true
		}
	}
	return false
}

// checkReceiver checks the handler and OnProcessed calls of m, and the
// bytes its receiver processed.
func (w *simWorld) checkReceiver(m *simMessage, rec Incoming) {
	k := inKey(m.from.id, m.id)
	handled, processed := w.handled[k], w.processed[k]
	switch {
	// OnProcessed runs at most once: a crash right after the commit skips
	// it for good.
	case handled < 1 || processed > 1:
		w.failLocked("message %d: recorded, but handled %d and processed %d times", m.n,
			handled, processed)
	case m.to.crashes == 0 && (handled != 1 || processed != 1):
		w.failLocked("message %d: handled %d and processed %d times by a receiver that "+
			"never crashed", m.n, handled, processed)
	case !bytes.HasPrefix(rec.Ack, simAnswer(m.id, nil)):
		w.failLocked("message %d: the stored ack %x is not the handler's", m.n, rec.Ack)
	}

	if rec.PayloadHash == HashOf(m.payload).Value {
		return
	}
	if !slices.ContainsFunc(w.corrupt.newPayloads[m.id], func(p []byte) bool {
		return HashOf(p).Value == rec.PayloadHash
	}) {
		w.failLocked("message %d: processed bytes of hash %d that no corrupted copy carried",
			m.n, rec.PayloadHash)
	}
}

// checkSender checks how m ended on its sender: acknowledged, or kept as
// corrupt and reported, for a reason a corrupted copy explains.
func (w *simWorld) checkSender(m *simMessage, rec Incoming, out Outgoing, kept bool) {
	acks := w.acks[m.id]
	reports := w.reported[simReportKey{m.from.idx, SideSender, string(m.to.id.Raw), m.id}]
	otherBytes := rec.PayloadHash != HashOf(m.payload).Value
	fail := func(format string, args ...any) {
		w.failLocked("message %d (%s, peer %d to %d): %s", m.n, m.id, m.from.idx, m.to.idx,
			fmt.Sprintf(format, args...))
	}

	if otherBytes && !kept && !w.sc.strict && len(acks) > 0 &&
		!slices.ContainsFunc(acks, func(d Delivery) bool { return d.Hash.Valid }) &&
		slices.Contains(w.corrupt.ackHashes[m.id], Hash{}) {
		// A corrupted ack lost its hash, and without StrictHash an ack
		// without one is taken unchecked: the other bytes processed go
		// unnoticed, as the protocol allows.
		w.counts.unchecked++
		otherBytes = false
	}
	if otherBytes || kept {
		corruptHash := slices.Contains(w.corrupt.ackHashes[m.id], out.AckHash)
		switch {
		case !kept || out.State != OutCorrupt:
			fail("the receiver processed other bytes, but the sender holds no corrupt record")
		case len(acks) != 0:
			fail("kept as corrupt, but OnAck ran %d times", len(acks))
		case !corruptHash && (!otherBytes || out.AckHash != SomeHash(rec.PayloadHash)):
			fail("kept as corrupt with hash %s, which neither the receiver (%d) nor a "+
				"corrupted ack sent", out.AckHash, rec.PayloadHash)
		case reports > 1 || (m.from.crashes == 0 && reports != 1):
			fail("its corruption was reported %d times", reports)
		}
		return
	}

	switch {
	case len(acks) == 0:
		fail("processed, but OnAck never ran")
	case m.from.crashes == 0 && len(acks) != 1:
		fail("OnAck ran %d times on a sender that never crashed", len(acks))
	case reports != 0:
		fail("acknowledged, and reported as corrupt %d times", reports)
	}
	for _, d := range acks {
		w.checkDelivery(m, rec, d, fail)
	}
}

// checkDelivery checks what OnAck got for m.
func (w *simWorld) checkDelivery(m *simMessage, rec Incoming, d Delivery,
	fail func(string, ...any)) {
	answered := bytes.Equal(d.Received, rec.Ack)
	if !answered {
		w.counts.corruptAcks++
		k := simReportKey{m.to.idx, SideReceiver, string(m.from.id.Raw), m.id}
		if w.reported[k] == 0 {
			w.counts.silentAcks++
			// The receiver learns of it from an ackack, unless one lost
			// its hash to corruption, or the sender restarted and forgot
			// the answer it took.
			nulled := slices.Contains(w.corrupt.ackackHash[inKey(m.from.id, m.id)], Hash{})
			if m.from.crashes == 0 && m.to.crashes == 0 && !nulled {
				fail("OnAck got a corrupted answer that the receiver never reported")
			}
		}
	}
	switch {
	case !d.To.Equal(m.to.id) || !bytes.Equal(d.Sent, m.payload):
		fail("OnAck got the wrong target or payload")
	case d.Hash != HashOf(m.payload) && !slices.Contains(w.corrupt.ackHashes[m.id], d.Hash):
		fail("OnAck got hash %s", d.Hash)
	case !answered && !slices.ContainsFunc(w.corrupt.ackPayloads[m.id], func(p []byte) bool {
		return bytes.Equal(p, d.Received)
	}):
		fail("OnAck got an answer that neither the receiver nor a corruption made")
	}
}

// checkReports checks that every corruption report has a corrupted copy
// behind it that explains the hash it got: no false alarms.
func (w *simWorld) checkReports(records map[recordKey]*simHeld) {
	for _, r := range w.reports {
		c := r.c
		explained := false
		switch c.Side {
		case SideSender:
			h := records[inKey(w.peers[r.peer].id, c.MsgID)]
			explained = slices.Contains(w.corrupt.ackHashes[c.MsgID], c.Got) ||
				h != nil && SomeHash(h.rec.PayloadHash) == c.Got
		case SideReceiver:
			explained = slices.Contains(w.corrupt.ackackHash[inKey(c.Peer, c.MsgID)], c.Got) ||
				slices.ContainsFunc(w.corrupt.ackPayloads[c.MsgID], func(p []byte) bool {
					return HashOf(p) == c.Got
				}) ||
				!c.Got.Valid && (w.restarted(c.Peer) || w.corrupt.phantoms[inKey(c.Peer, c.MsgID)])
			// A sender answers an ack of an id it does not know, or no
			// longer knows after a restart, without a hash, which
			// StrictHash reports: that is how a receiver learns that it
			// processed a message under an id a corruption made up.
		}
		if !explained || c.Expected != HashOf(c.Sent) || c.Got.Matches(c.Sent, w.sc.strict) {
			w.failLocked("peer %d reported a %s-side mismatch of %s, %s for %s, that no "+
				"corrupted copy explains", r.peer, c.Side, c.MsgID, c.Got, c.Expected)
		}
	}
}

// restarted reports whether the peer id has crashed and restarted.
func (w *simWorld) restarted(id principal.Principal) bool {
	for _, p := range w.peers {
		if p.id.Equal(id) {
			return p.crashes > 0
		}
	}
	return false
}

// checkNetwork checks that every copy the network made arrived, and that
// each corrupted one is a bit away from a call sent.
func (w *simWorld) checkNetwork() {
	st := w.net.Stats()
	if int(st.Corrupted) != w.corrupt.copies {
		w.failLocked("the network corrupted %d copies, and %d arrived", st.Corrupted,
			w.corrupt.copies)
	}
	if want := st.Calls - st.Dropped + st.Duplicated; uint64(w.counts.deliveries) != want {
		w.failLocked("the network made %d copies, and %d arrived", want,
			w.counts.deliveries)
	}
	for _, u := range w.corrupt.unexplained {
		w.failLocked("a corrupted copy is a bit away from no call sent: %s", u)
	}
}

// checkExpiry plays the user, who forgets the corrupt messages, then lets
// the dedup window pass: the stores end empty.
func (w *simWorld) checkExpiry() {
	ctx := context.Background()
	latest := w.start
	for _, p := range w.peers {
		p.run.disarm()
		outs, err := p.disk.outgoing()
		require.NoError(w.t, err)
		for _, o := range outs {
			require.NoError(w.t, p.flow.Forget(ctx, o.MsgID))
		}
		recs, err := p.disk.incoming()
		require.NoError(w.t, err)
		for _, r := range recs {
			if t := r.MsgID.Time(); t.After(latest) {
				latest = t
			}
		}
	}

	w.advance(latest.Add(w.sc.window + 2*w.sc.retry))
	for _, p := range w.peers {
		outs, err := p.disk.outgoing()
		require.NoError(w.t, err)
		recs, err := p.disk.incoming()
		require.NoError(w.t, err)
		if len(outs)+len(recs) > 0 {
			w.fail("peer %d holds %d messages and %d records once the window passed",
				p.idx, len(outs), len(recs))
		}
	}
}

// report logs a summary, and fails the test with the broken promises.
func (w *simWorld) report() {
	w.mu.Lock()
	defer w.mu.Unlock()

	st, n, cs := w.net.Stats(), w.counts, w.corrupt
	crashes := 0
	for _, p := range w.peers {
		crashes += p.crashes
	}
	w.t.Logf("sent %d, skipped %d with their sender down, %d stored by a CallAsync that "+
		"failed in a crash; %d crashes", len(w.msgs), n.skipped, n.stored, crashes)
	w.t.Logf("network: %d calls, %d dropped, %d duplicated, %d delayed, %d corrupted; "+
		"%d copies delivered, %d lost to a peer down, %d refused", st.Calls, st.Dropped,
		st.Duplicated, st.Delayed, st.Corrupted, n.deliveries, n.lost, n.refused)
	w.t.Logf("corrupted copies %v, refused %v, %d undecodable; %d reports; %d corrupted "+
		"answers acked, %d never reported; %d corrupted payloads acked without a hash; %d "+
		"messages processed under a corrupted id", cs.byMethod, cs.refused, cs.undecodable,
		len(w.reports), n.corruptAcks, n.silentAcks, n.unchecked, cs.renamed)
	w.t.Logf("trace %016x", w.trace.Sum64())

	const show = 20
	for i, f := range w.failures {
		if i == show {
			w.t.Errorf("... and %d more", len(w.failures)-show)
			break
		}
		w.t.Error(f)
	}
	w.failures = nil
}

// Behaviour the simulation found, shown on its own.

// simTap is a Transport that delivers straight to another Flow, after
// edit had its say: edit returns the bytes to deliver, or false to lose
// the call.
type simTap struct {
	from principal.Principal
	to   func() Inbound
	edit func(method string, arg []byte) ([]byte, bool)
}

func (t *simTap) Send(ctx context.Context, _ principal.Principal, method string,
	arg []byte) error {
	arg, ok := t.edit(method, bytes.Clone(arg))
	if !ok {
		return nil
	}
	return t.to().Deliver(ctx, t.from, method, arg)
}

// The first ack arrives with a bit of its answer flipped and its hash
// intact, so the sender takes it, runs OnAck on the wrong answer and
// forgets the message; the ackack that would have told the receiver is
// lost. The receiver's resent ack, the right one, then finds no message,
// and the sender answers it with the hash of the answer it took: the
// receiver learns that OnAck got bytes it never sent.
func TestACorruptedAnswerIsReportedWhenItsAckAckIsLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a, b *Flow
		var mu sync.Mutex
		var got []byte
		var reports int
		var acks, ackacks int
		cfg := func(tr Transport) Config {
			return Config{Transport: tr, Logger: quiet, RetryAfter: time.Second,
				Handler: func(context.Context, principal.Principal, MsgID, []byte) ([]byte,
					error) {
					return []byte("answer"), nil
				},
				OnAck: func(_ context.Context, d Delivery) {
					mu.Lock()
					defer mu.Unlock()
					got = d.Received
				},
				OnCorrupt: func(context.Context, Corruption) {
					mu.Lock()
					defer mu.Unlock()
					reports++
				}}
		}
		toA := &simTap{from: bob, to: func() Inbound { return a },
			edit: func(method string, arg []byte) ([]byte, bool) {
				mu.Lock()
				defer mu.Unlock()
				if method == MethodAck {
					if acks++; acks == 1 {
						arg[len(arg)-1] ^= 1 // the last byte of the answer
					}
				}
				return arg, true
			}}
		toB := &simTap{from: alice, to: func() Inbound { return b },
			edit: func(method string, arg []byte) ([]byte, bool) {
				mu.Lock()
				defer mu.Unlock()
				if method == MethodAckAck {
					ackacks++
					return arg, ackacks > 1
				}
				return arg, true
			}}
		var err error
		a, err = New(cfg(toB))
		require.NoError(t, err)
		defer a.Close()
		b, err = New(cfg(toA))
		require.NoError(t, err)
		defer b.Close()

		_, err = a.CallAsync(t.Context(), bob, []byte("payload"))
		require.NoError(t, err)
		synctest.Wait()
		time.Sleep(3 * time.Second) // the receiver resends its ack
		synctest.Wait()

		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, 2, acks, "the receiver sent its ack twice")
		require.NotEqual(t, "answer", string(got), "OnAck got a corrupted answer")
		require.NotZero(t, reports, "and no side reported the corruption")
	})
}
