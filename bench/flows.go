package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
	"github.com/asyncflow/asyncflow/ic"
)

// The two peers of the in-memory network have principals of 10 bytes, as
// canisters do.
var (
	senderID   = principal.Principal{Raw: []byte{0, 0, 0, 0, 1, 0x70, 0, 1, 1, 1}}
	receiverID = principal.Principal{Raw: []byte{0, 0, 0, 0, 1, 0x70, 0, 2, 1, 1}}
)

var quiet = slog.New(slog.DiscardHandler)

// ackPayload is the receiver's answer to every message.
var ackPayload = []byte("ok")

// retryAfter is long enough that nothing is resent during a run: a resend
// would mean the benchmark measured the retry timer, not the exchange.
const retryAfter = time.Hour

// flowRig is a sender Flow and a receiver Flow exchanging messages.
type flowRig struct {
	sender, receiver *asyncflow.Flow
	to               principal.Principal
	// closers run in reverse order on close: Flows before their stores
	// and transports, as a program would stop them.
	closers []func() error
}

func (r *flowRig) send(ctx context.Context, payload []byte) error {
	_, err := r.sender.CallAsync(ctx, r.to, payload)
	return err
}

// check reports resends and failed or refused calls: in a run without
// faults, each means the exchange was not the clean one measured.
func (r *flowRig) check() error {
	s, v := r.sender.Stats(), r.receiver.Stats()
	var errs []error
	if n := s.Resent + v.Resent; n > 0 {
		errs = append(errs, fmt.Errorf("%d resends", n))
	}
	if n := s.SendErrors + v.SendErrors; n > 0 {
		errs = append(errs, fmt.Errorf("%d failed sends", n))
	}
	if n := s.Rejected + v.Rejected; n > 0 {
		errs = append(errs, fmt.Errorf("%d refused calls", n))
	}
	if n := s.Corrupt + v.Corrupt + v.HandlerErrors; n > 0 {
		errs = append(errs, fmt.Errorf("%d hash mismatches or handler errors", n))
	}
	return errors.Join(errs...)
}

func (r *flowRig) close() error {
	var errs []error
	for i := len(r.closers) - 1; i >= 0; i-- {
		errs = append(errs, r.closers[i]())
	}
	return errors.Join(errs...)
}

// watchedStore reports its side's end of each round trip: on the sender
// the record deleted after the ack callback ran, on the receiver the
// record stored as done when the ackack arrived. A round trip is complete
// when both happened; neither side then has anything left to send.
type watchedStore struct {
	asyncflow.Store
	ends *ends[asyncflow.MsgID]
}

func (s *watchedStore) DeleteOutgoing(ctx context.Context, id asyncflow.MsgID) error {
	err := s.Store.DeleteOutgoing(ctx, id)
	if err == nil {
		s.ends.see(id)
	}
	return err
}

func (s *watchedStore) PutIncoming(ctx context.Context, m asyncflow.Incoming) error {
	err := s.Store.PutIncoming(ctx, m)
	if err == nil && m.State == asyncflow.InDone {
		s.ends.see(m.MsgID)
	}
	return err
}

// idShard spreads message ids over shards by their last byte, which is
// random.
func idShard(id asyncflow.MsgID) uint8 {
	return id[len(id)-1]
}

// openStore opens one side's store; the returned function closes it.
type openStore func(side string) (asyncflow.Store, func() error, error)

func memoryStores(string) (asyncflow.Store, func() error, error) {
	st := asyncflow.NewMemoryStore()
	return st, st.Close, nil
}

// boltStores returns an openStore that keeps each side's store in its own
// file in a new directory under dir; the last store closed removes it.
func boltStores(dir string) (openStore, error) {
	tmp, err := os.MkdirTemp(dir, "asyncflow-bench-")
	if err != nil {
		return nil, fmt.Errorf("directory for the store files: %w", err)
	}
	open := 0
	return func(side string) (asyncflow.Store, func() error, error) {
		st, err := boltstore.Open(filepath.Join(tmp, side+".db"),
			&boltstore.Options{Logger: quiet})
		if err != nil {
			return nil, nil, err
		}
		open++
		return st, func() error {
			err := st.Close()
			if open--; open == 0 {
				err = errors.Join(err, os.RemoveAll(tmp))
			}
			return err
		}, nil
	}, nil
}

// handle is the receiver's handler: it answers every message with the
// same short ack payload.
func handle(context.Context, principal.Principal, asyncflow.MsgID, []byte) ([]byte, error) {
	return ackPayload, nil
}

// newFlow starts a Flow on a watched store; the rig closes both.
func (r *flowRig) newFlow(tr asyncflow.Transport, stores openStore, side string,
	e *ends[asyncflow.MsgID], handler asyncflow.Handler) (*asyncflow.Flow, error) {
	st, closeStore, err := stores(side)
	if err != nil {
		return nil, fmt.Errorf("%s store: %w", side, err)
	}
	r.closers = append(r.closers, closeStore)

	f, err := asyncflow.New(asyncflow.Config{
		Transport:  tr,
		Store:      &watchedStore{Store: st, ends: e},
		Handler:    handler,
		RetryAfter: retryAfter,
		Logger:     quiet,
	})
	if err != nil {
		return nil, fmt.Errorf("%s flow: %w", side, err)
	}
	r.closers = append(r.closers, f.Close)
	return f, nil
}

// networkRig builds two Flows on the in-memory network, without faults,
// each on a store from stores.
func networkRig(stores openStore) buildRig {
	return func(done func()) (rig, error) {
		network, err := asyncflow.NewNetwork(1, asyncflow.Faults{})
		if err != nil {
			return nil, err
		}
		r := &flowRig{to: receiverID}
		r.closers = append(r.closers, func() error { network.Close(); return nil })

		e := newEnds(done, idShard)
		r.sender, err = r.newFlow(network.Transport(senderID), stores, "sender", e, nil)
		if err == nil {
			r.receiver, err = r.newFlow(network.Transport(receiverID), stores, "receiver",
				e, handle)
		}
		if err != nil {
			return nil, errors.Join(err, r.close())
		}
		network.Attach(senderID, r.sender)
		network.Attach(receiverID, r.receiver)
		return r, nil
	}
}

// httpRig builds two Flows on memory stores that send to each other
// through ic.Transport, signed with Ed25519 keys, to an ic.Endpoint each
// serves on a loopback port.
//
// agent-go sends through http.DefaultTransport, which keeps two idle
// connections per host. With 64 send workers on a side, most calls then
// open a new connection and leave it in TIME_WAIT: a run of one second
// left 5,500 of them, and a long one runs out of loopback ports.
// idleConns, when positive, raises that limit for the whole process.
func httpRig(idleConns int) buildRig {
	return func(done func()) (rig, error) {
		if t, ok := http.DefaultTransport.(*http.Transport); ok && idleConns > 0 {
			t.MaxIdleConnsPerHost = idleConns
		}
		r := &flowRig{}
		if err := r.buildHTTP(done); err != nil {
			return nil, errors.Join(err, r.close())
		}
		return r, nil
	}
}

// buildHTTP sets up the two services of httpRig.
func (r *flowRig) buildHTTP(done func()) error {
	e := newEnds(done, idShard)
	senderKey, err := identity.NewRandomEd25519Identity()
	if err != nil {
		return err
	}
	receiverKey, err := identity.NewRandomEd25519Identity()
	if err != nil {
		return err
	}
	r.to = receiverKey.Sender()

	sendTr, err := ic.NewTransport(senderKey, ic.TransportConfig{Logger: quiet})
	if err != nil {
		return err
	}
	recvTr, err := ic.NewTransport(receiverKey, ic.TransportConfig{Logger: quiet})
	if err != nil {
		return err
	}
	r.closers = append(r.closers, func() error {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		return nil
	})

	r.sender, err = r.newFlow(sendTr, memoryStores, "sender", e, nil)
	if err != nil {
		return err
	}
	r.receiver, err = r.newFlow(recvTr, memoryStores, "receiver", e, handle)
	if err != nil {
		return err
	}

	sendURL, err := r.serve(senderKey.Sender(), r.sender)
	if err != nil {
		return err
	}
	recvURL, err := r.serve(receiverKey.Sender(), r.receiver)
	if err != nil {
		return err
	}
	return errors.Join(sendTr.AddRoute(receiverKey.Sender(), recvURL),
		recvTr.AddRoute(senderKey.Sender(), sendURL))
}

// serve runs an ic.Endpoint of self for f on a loopback port and returns
// its base URL. The server is closed before the Flow, so that no call
// arrives at a closed Flow.
func (r *flowRig) serve(self principal.Principal, f *asyncflow.Flow) (string, error) {
	ep, err := ic.NewEndpoint(self, f, ic.EndpointConfig{Logger: quiet})
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("loopback listener: %w", err)
	}
	srv := &http.Server{Handler: ep, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	r.closers = append(r.closers, srv.Close)
	return "http://" + ln.Addr().String(), nil
}
