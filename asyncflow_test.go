package asyncflow

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	alice = principal.Principal{Raw: []byte{0xa1, 0x01, 0x01}}
	bob   = principal.Principal{Raw: []byte{0xb0, 0x02, 0x02}}
	carol = principal.Principal{Raw: []byte{0xc0, 0x03, 0x03}}
)

var quiet = slog.New(slog.DiscardHandler)

// call is one submission seen by a probe.
type call struct {
	from, to principal.Principal
	method   string
	arg      []byte
	at       time.Time
}

// probe is a Transport that records every call and passes it on to next
// unless drop says to lose it. It is how tests watch the wire.
type probe struct {
	from principal.Principal
	next Transport

	mu    sync.Mutex
	calls []call
	drop  func(c call) bool
	check func(c call)
}

func (p *probe) Send(ctx context.Context, to principal.Principal, method string,
	arg []byte) error {
	c := call{from: p.from, to: to, method: method, arg: arg, at: time.Now()}
	p.mu.Lock()
	p.calls = append(p.calls, c)
	drop, check := p.drop, p.check
	p.mu.Unlock()

	if check != nil {
		check(c)
	}
	if drop != nil && drop(c) {
		return nil
	}
	return p.next.Send(ctx, to, method, arg)
}

// Route passes the question on, so that a probe routes as its transport.
func (p *probe) Route(to principal.Principal) error {
	if r, ok := p.next.(Router); ok {
		return r.Route(to)
	}
	return nil
}

func (p *probe) setDrop(drop func(c call) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()

	p.drop = drop
}

// sent returns the recorded calls of method.
func (p *probe) sent(method string) []call {
	p.mu.Lock()
	defer p.mu.Unlock()

	var out []call
	for _, c := range p.calls {
		if c.method == method {
			out = append(out, c)
		}
	}
	return out
}

// recorder collects what a Flow reports through its callbacks.
type recorder struct {
	mu         sync.Mutex
	handled    []NewMessage
	deliveries []Delivery
	corrupt    []Corruption
	processed  []Processed
	rejections []Rejection
}

func (r *recorder) handler(_ context.Context, _ principal.Principal, id MsgID,
	payload []byte) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()

	r.handled = append(r.handled, NewMessage{MsgID: id, Payload: payload})
	return append([]byte("ack:"), payload...), nil
}

func (r *recorder) onAck(_ context.Context, d Delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()

	r.deliveries = append(r.deliveries, d)
}

func (r *recorder) onCorrupt(_ context.Context, c Corruption) {
	r.mu.Lock()
	defer r.mu.Unlock()

	r.corrupt = append(r.corrupt, c)
}

func (r *recorder) onProcessed(p Processed) {
	r.mu.Lock()
	defer r.mu.Unlock()

	r.processed = append(r.processed, p)
}

func (r *recorder) onReject(j Rejection) {
	r.mu.Lock()
	defer r.mu.Unlock()

	r.rejections = append(r.rejections, j)
}

func (r *recorder) snapshot() recorder {
	r.mu.Lock()
	defer r.mu.Unlock()

	return recorder{
		handled:    append([]NewMessage(nil), r.handled...),
		deliveries: append([]Delivery(nil), r.deliveries...),
		corrupt:    append([]Corruption(nil), r.corrupt...),
		processed:  append([]Processed(nil), r.processed...),
		rejections: append([]Rejection(nil), r.rejections...),
	}
}

// peer is one Flow on a test network, with its probe and recorder.
type peer struct {
	id    principal.Principal
	flow  *Flow
	store *MemoryStore
	probe *probe
	rec   *recorder
}

// newPeer starts a Flow for id on net. edit may change its config.
func newPeer(t *testing.T, net *Network, id principal.Principal,
	edit func(*Config)) *peer {
	t.Helper()

	p := &peer{id: id, store: NewMemoryStore(), rec: &recorder{}}
	p.probe = &probe{from: id, next: net.Transport(id)}
	cfg := Config{
		Transport:   p.probe,
		Store:       p.store,
		Handler:     p.rec.handler,
		OnAck:       p.rec.onAck,
		OnCorrupt:   p.rec.onCorrupt,
		OnProcessed: p.rec.onProcessed,
		OnReject:    p.rec.onReject,
		Logger:      quiet,
	}
	if edit != nil {
		edit(&cfg)
	}
	f, err := New(cfg)
	require.NoError(t, err)
	p.flow = f
	net.Attach(id, f)
	t.Cleanup(func() {
		require.NoError(t, f.Close())
		require.NoError(t, p.store.Close())
	})
	return p
}

// newPair returns a sender a and a receiver b on a clean network.
func newPair(t *testing.T, edit func(*Config)) (*Network, *peer, *peer) {
	t.Helper()

	net, err := NewNetwork(1, Faults{})
	require.NoError(t, err)
	t.Cleanup(net.Close)
	return net, newPeer(t, net, alice, edit), newPeer(t, net, bob, edit)
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	net, err := NewNetwork(1, Faults{})
	require.NoError(t, err)
	tr := net.Transport(alice)

	cases := []struct {
		name string
		cfg  Config
	}{
		{"no transport", Config{}},
		{"negative retry", Config{Transport: tr, RetryAfter: -time.Second}},
		{"negative workers", Config{Transport: tr, SendWorkers: -1}},
		{"negative send timeout", Config{Transport: tr, SendTimeout: -time.Second}},
		{"window not above skew", Config{Transport: tr, DedupWindow: time.Minute,
			MaxClockSkew: time.Minute}},
		{"negative skew", Config{Transport: tr, MaxClockSkew: -time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			require.ErrorIs(t, err, ErrInvalidConfig)
		})
	}
}

func TestNewFillsDefaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net, err := NewNetwork(1, Faults{})
		require.NoError(t, err)
		f, err := New(Config{Transport: net.Transport(alice), Logger: quiet})
		require.NoError(t, err)
		defer f.Close()

		require.Equal(t, DefaultRetryAfter, f.cfg.RetryAfter)
		require.Equal(t, 5*time.Minute+30*time.Second, f.cfg.RetryAfter)
		require.Equal(t, 24*time.Hour, f.cfg.DedupWindow)
		require.Equal(t, 5*time.Minute, f.cfg.MaxClockSkew)
		require.NotNil(t, f.store)
		require.True(t, f.ownsStore)
	})
}

func TestCloseStopsEverythingAndRefusesLaterCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, b := newPair(t, nil)
		_, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		synctest.Wait()

		require.NoError(t, a.flow.Close())
		require.NoError(t, a.flow.Close(), "Close is idempotent")

		_, err = a.flow.CallAsync(t.Context(), bob, []byte("y"))
		require.ErrorIs(t, err, ErrClosed)
		_, err = a.flow.CallAsync(t.Context(), carol, []byte("y"))
		require.ErrorIs(t, err, ErrClosed, "even to a target with no route")
		err = a.flow.Deliver(t.Context(), bob, MethodAck, Ack{}.AppendCandid(nil))
		require.ErrorIs(t, err, ErrClosed)
		_, err = a.flow.Messages(t.Context(), OutPending)
		require.ErrorIs(t, err, ErrClosed)
		require.ErrorIs(t, a.flow.Forget(t.Context(), MsgID{}), ErrClosed)
		_ = b
	})
}

func TestCloseCancelsARunningHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		started := make(chan struct{})
		_, a, b := newPair(t, func(c *Config) {
			c.Handler = func(ctx context.Context, _ principal.Principal, _ MsgID,
				_ []byte) ([]byte, error) {
				close(started)
				<-ctx.Done()
				return nil, ctx.Err()
			}
		})
		_, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		<-started

		require.NoError(t, b.flow.Close())
		require.Empty(t, b.rec.snapshot().processed)
	})
}

func TestDeliverRefusesBadInputAndChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, b := newPair(t, nil)
		id, err := a.flow.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		synctest.Wait()
		before := b.flow.Stats()

		cases := []struct {
			name   string
			caller principal.Principal
			method string
			arg    []byte
			want   error
		}{
			{"unknown method", alice, "com_asyncFlow_other",
				NewMessage{MsgID: id}.AppendCandid(nil), ErrUnknownMethod},
			{"not candid", alice, MethodNewMessage, []byte("hello"), ErrInvalidCandid},
			{"wrong record", alice, MethodNewMessage,
				AckAck{MsgID: id}.AppendCandid(nil), ErrInvalidCandid},
			{"anonymous caller", principal.AnonymousID, MethodNewMessage,
				NewMessage{MsgID: id}.AppendCandid(nil), ErrInvalidPrincipal},
			{"empty caller", principal.Principal{}, MethodAckAck,
				AckAck{MsgID: id}.AppendCandid(nil), ErrInvalidPrincipal},
		}
		for _, tc := range cases {
			err := b.flow.Deliver(t.Context(), tc.caller, tc.method, tc.arg)
			require.ErrorIs(t, err, tc.want, tc.name)
		}

		after := b.flow.Stats()
		require.Equal(t, before.Rejected+uint64(len(cases)), after.Rejected)
		before.Rejected = after.Rejected
		require.Equal(t, before, after, "a refused call changes nothing")
		require.Len(t, b.rec.snapshot().rejections, len(cases))
		require.Len(t, b.rec.snapshot().handled, 1)
	})
}

func TestNoHandlerRefusesNewMessages(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, b := newPair(t, func(c *Config) { c.Handler = nil })
		id, err := NewMsgID(time.Now())
		require.NoError(t, err)

		err = b.flow.Deliver(t.Context(), alice, MethodNewMessage,
			NewMessage{MsgID: id, Payload: []byte("x")}.AppendCandid(nil))
		require.ErrorIs(t, err, ErrNoHandler)
		_, err = b.store.Incoming(t.Context(), alice, id)
		require.ErrorIs(t, err, ErrNotFound)
		require.Empty(t, b.probe.sent(MethodAck))
		_ = a
	})
}

func TestCloseCancelsSendsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cancelled := make(chan error, 1)
		f, err := New(Config{Transport: stuckTransport{cancelled: cancelled}, Logger: quiet})
		require.NoError(t, err)

		_, err = f.CallAsync(t.Context(), bob, []byte("x"))
		require.NoError(t, err)
		synctest.Wait()

		require.NoError(t, f.Close())
		require.ErrorIs(t, <-cancelled, context.Canceled)
	})
}

// stuckTransport holds every send until its context ends.
type stuckTransport struct {
	cancelled chan error
}

func (b stuckTransport) Send(ctx context.Context, _ principal.Principal, _ string,
	_ []byte) error {
	<-ctx.Done()
	b.cancelled <- ctx.Err()
	return ctx.Err()
}

func newID(t *testing.T) MsgID {
	t.Helper()
	id, err := NewMsgID(time.Now())
	require.NoError(t, err)
	return id
}
