package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/asyncflow/asyncflow"
)

// serveCmd runs a peer whose handler echoes each payload back as its ack
// payload, until it is interrupted. It keeps its state in the store that
// --store or --memory chooses, opened before it listens: a restarted serve
// resends the acks still waiting for their ackack, and does not process a
// message it processed before.
func serveCmd(ctx context.Context, args []string, ev *events, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address to accept calls on")
	idPath := fs.String("identity", "", "PEM identity file (required)")
	peers := peerFlags{}
	fs.Var(peers, "peer", "route PRINCIPAL=URL for calls to that principal (repeatable)")
	retry := fs.Duration("retry-after", asyncflow.DefaultRetryAfter,
		"wait this long for the next step before sending again")
	verbose := fs.Bool("v", false, "log debug detail to stderr")
	storage := addStoreFlags(fs)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := storage.check(); err != nil {
		return err
	}
	if err := checkListen("serve", *listen); err != nil {
		return err
	}
	if err := checkRetryAfter("serve", *retry); err != nil {
		return err
	}

	id, err := loadIdentity(*idPath)
	if err != nil {
		return err
	}
	store, _, err := storage.open(id.Sender())
	if err != nil {
		return err
	}

	log := newLogger(stderr, *verbose, slog.LevelWarn)
	n, err := startNode(nodeConfig{
		id: id, listen: *listen, routes: peers, store: store, log: log,
		onReject: ev.rejected,
		flow: asyncflow.Config{
			Handler:     echo,
			OnAck:       func(_ context.Context, d asyncflow.Delivery) { ev.delivered(d) },
			OnCorrupt:   func(_ context.Context, c asyncflow.Corruption) { ev.corrupt(c) },
			OnProcessed: ev.processed,
			OnReject:    ev.rejected,
			RetryAfter:  *retry,
			SendTimeout: sendTimeout(*retry),
		},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "asyncflow: serving %s on %s\n", id.Sender(), n.url())

	select {
	case <-ctx.Done():
		fmt.Fprintln(stderr, "asyncflow: stopping")
	case err := <-n.served:
		n.served <- err
	}
	return n.close()
}

// echo is serve's handler: the ack payload is the payload.
func echo(_ context.Context, _ principal.Principal, _ asyncflow.MsgID,
	payload []byte) ([]byte, error) {
	return payload, nil
}
