package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The JetStream rigs run what asyncflow's round trip promises with NATS
// tools: a publisher stores a message in a stream, deduplicated by its
// Nats-Msg-Id, and a pull consumer takes it and acknowledges it with
// DoubleAck, which waits for the server to confirm the ack. The stream
// keeps a message only until it is acked (work-queue retention), as
// asyncflow forgets a message after its ackack. The server runs in this
// process and both clients reach it without a socket.

const (
	jsStream  = "BENCH"
	jsSubject = "bench.messages"
	jsTimeout = 30 * time.Second
)

// jsRig is an embedded NATS server with one stream, a publishing
// connection and a consuming connection.
type jsRig struct {
	srv      *server.Server
	dir      string
	pub, sub *nats.Conn
	js       jetstream.JetStream
	consume  jetstream.ConsumeContext
	msgs     chan jetstream.Msg
	ackers   sync.WaitGroup
	next     atomic.Uint64
	ends     *ends[uint64]
	failed   firstError
}

// jetStreamRig builds a jsRig whose stream keeps its messages in memory,
// or in files under dir that the server syncs after every write.
func jetStreamRig(storage jetstream.StorageType, dir string, inFlight int) buildRig {
	return func(done func()) (rig, error) {
		r := &jsRig{ends: newEnds(done, func(id uint64) uint8 { return uint8(id) })}
		if err := r.start(storage, dir, inFlight); err != nil {
			return nil, errors.Join(err, r.close())
		}
		return r, nil
	}
}

// start runs the server, creates the stream and its consumer, and starts
// one acker per message in flight.
func (r *jsRig) start(storage jetstream.StorageType, dir string, inFlight int) error {
	var err error
	r.dir, err = os.MkdirTemp(dir, "jetstream-bench-")
	if err != nil {
		return fmt.Errorf("directory for the stream files: %w", err)
	}
	r.srv, err = server.NewServer(&server.Options{
		JetStream:  true,
		StoreDir:   r.dir,
		SyncAlways: storage == jetstream.FileStorage,
		DontListen: true,
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	r.srv.Start()
	if !r.srv.ReadyForConnections(10 * time.Second) {
		return errors.New("nats server not ready after 10 s")
	}

	if r.pub, err = nats.Connect("", nats.InProcessServer(r.srv)); err != nil {
		return fmt.Errorf("publisher connection: %w", err)
	}
	if r.sub, err = nats.Connect("", nats.InProcessServer(r.srv)); err != nil {
		return fmt.Errorf("consumer connection: %w", err)
	}
	if r.js, err = jetstream.New(r.pub); err != nil {
		return err
	}
	return r.startConsumer(storage, inFlight)
}

// startConsumer creates the stream and a durable pull consumer, and
// hands what it pulls to the ackers.
func (r *jsRig) startConsumer(storage jetstream.StorageType, inFlight int) error {
	ctx, cancel := context.WithTimeout(context.Background(), jsTimeout)
	defer cancel()

	_, err := r.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      jsStream,
		Subjects:  []string{jsSubject},
		Storage:   storage,
		Retention: jetstream.WorkQueuePolicy,
	})
	if err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	subJS, err := jetstream.New(r.sub)
	if err != nil {
		return err
	}
	cons, err := subJS.CreateOrUpdateConsumer(ctx, jsStream, jetstream.ConsumerConfig{
		Durable:       "bench",
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: 2 * inFlight,
	})
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}

	r.msgs = make(chan jetstream.Msg, inFlight)
	for range inFlight {
		r.ackers.Go(r.ack)
	}
	r.consume, err = cons.Consume(func(m jetstream.Msg) { r.msgs <- m },
		jetstream.PullMaxMessages(inFlight))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	return nil
}

// ack double-acks the messages the consumer pulled; each one's round trip
// ends when the server confirmed its ack.
func (r *jsRig) ack() {
	for m := range r.msgs {
		ctx, cancel := context.WithTimeout(context.Background(), jsTimeout)
		err := m.DoubleAck(ctx)
		cancel()
		if err != nil {
			r.failed.set(fmt.Errorf("double ack: %w", err))
			continue
		}
		id, err := strconv.ParseUint(m.Headers().Get(jetstream.MsgIDHeader), 10, 64)
		if err != nil {
			r.failed.set(fmt.Errorf("message id: %w", err))
			continue
		}
		r.ends.see(id)
	}
}

// send publishes payload under a new message id and waits for the
// server's ack: the message is stored, and a second publish of the same
// id within the stream's duplicate window would be dropped.
func (r *jsRig) send(ctx context.Context, payload []byte) error {
	if err := r.failed.get(); err != nil {
		return err
	}
	id := r.next.Add(1)
	_, err := r.js.Publish(ctx, jsSubject, payload,
		jetstream.WithMsgID(strconv.FormatUint(id, 10)))
	if err != nil {
		return err
	}
	r.ends.see(id)
	return nil
}

func (r *jsRig) check() error {
	return r.failed.get()
}

// close stops the consumer, then the ackers, the connections and the
// server, and removes the stream's files.
func (r *jsRig) close() error {
	if r.consume != nil {
		r.consume.Stop()
		<-r.consume.Closed()
	}
	if r.msgs != nil {
		close(r.msgs)
		r.ackers.Wait()
	}
	for _, nc := range []*nats.Conn{r.pub, r.sub} {
		if nc != nil {
			nc.Close()
		}
	}
	if r.srv != nil {
		r.srv.Shutdown()
		r.srv.WaitForShutdown()
	}
	if r.dir != "" {
		return os.RemoveAll(r.dir)
	}
	return nil
}
