// Command echo is a minimal asyncflow service: it answers every message
// with the same bytes, over the IC's signed-call HTTP interface.
//
//	go run ./examples/echo -identity id.pem -listen 127.0.0.1:8080 \
//		-peer <sender principal>=http://127.0.0.1:8081 -store echo.db
//
// Every message is processed once; its answer goes back to the sender in
// an ack, which needs a route to the sender (-peer). The record of which
// messages were processed is kept in the -store file, so a restart does
// not process any of them again.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
	"github.com/asyncflow/asyncflow/ic"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func run() error {
	idPath := flag.String("identity", "", "PEM identity file")
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	peer := flag.String("peer", "", "PRINCIPAL=URL of the sender, for the acks")
	storePath := flag.String("store", "echo.db", "file that keeps the processed ids")
	flag.Parse()

	id, err := ic.LoadIdentity(*idPath)
	if err != nil {
		return err
	}
	routes := map[string]string{}
	if *peer != "" {
		name, url, ok := strings.Cut(*peer, "=")
		if !ok {
			return fmt.Errorf("-peer %q: want PRINCIPAL=URL", *peer)
		}
		routes[name] = url
	}
	transport, err := ic.NewTransport(id, ic.TransportConfig{Routes: routes})
	if err != nil {
		return err
	}

	store, err := boltstore.Open(*storePath, nil)
	if err != nil {
		return err
	}
	defer store.Close() // after the Flow: defers run last-in first-out

	flow, err := asyncflow.New(asyncflow.Config{
		Transport: transport,
		Store:     store,
		Handler: func(_ context.Context, from principal.Principal, msgID asyncflow.MsgID,
			payload []byte) ([]byte, error) {
			slog.Info("message", "from", from.String(), "msg_id", msgID.String(),
				"bytes", len(payload))
			return payload, nil
		},
	})
	if err != nil {
		return err
	}
	defer flow.Close()

	endpoint, err := ic.NewEndpoint(id.Sender(), flow, ic.EndpointConfig{})
	if err != nil {
		return err
	}
	server := &http.Server{Addr: *listen, Handler: endpoint,
		ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = server.Shutdown(context.Background())
	}()

	slog.Info("serving", "principal", id.Sender().String(), "listen", *listen)
	if err := server.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
