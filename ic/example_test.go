package ic_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
	"github.com/asyncflow/asyncflow/ic"
)

// service is one Go service: an identity, a Flow, and the endpoint that
// receives its calls.
type service struct {
	id     identity.Identity
	routes *ic.Transport
	store  *boltstore.Store
	flow   *asyncflow.Flow
	server *httptest.Server
}

// newService starts a service whose handler answers every message, and
// whose OnAck hands each confirmation to acked. Its state is kept in a
// bbolt file in dir.
func newService(dir string, acked chan<- asyncflow.Delivery) *service {
	_, id, err := ic.NewIdentityPEM() // or ic.LoadIdentity("service.pem")
	if err != nil {
		log.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	routes, err := ic.NewTransport(id, ic.TransportConfig{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}

	// Messages and processed ids survive a crash: open the file again to
	// resume them.
	store, err := boltstore.Open(filepath.Join(dir, id.Sender().String()+".db"),
		&boltstore.Options{Owner: id.Sender()})
	if err != nil {
		log.Fatal(err)
	}
	flow, err := asyncflow.New(asyncflow.Config{
		Transport: routes,
		Store:     store,
		Handler: func(_ context.Context, from principal.Principal, _ asyncflow.MsgID,
			payload []byte) ([]byte, error) {
			return fmt.Appendf(nil, "got %q", payload), nil // travels back in the ack
		},
		OnAck:      func(_ context.Context, d asyncflow.Delivery) { acked <- d },
		RetryAfter: 2 * time.Second, // for the example; the default is 5m30s
		Logger:     quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	endpoint, err := ic.NewEndpoint(id.Sender(), flow, ic.EndpointConfig{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	// A real service serves it with http.ListenAndServe(":8080", endpoint).
	return &service{id: id, routes: routes, store: store, flow: flow,
		server: httptest.NewServer(endpoint)}
}

// close stops the service: the endpoint first, then the Flow, and the
// store the Flow used last.
func (s *service) close() {
	s.server.Close()
	s.flow.Close()
	s.store.Close()
}

// Two Go services exchange a message over HTTP, each call signed with the
// sender's identity and verified by the receiver's endpoint.
func Example() {
	dir, err := os.MkdirTemp("", "asyncflow-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	acked := make(chan asyncflow.Delivery, 1)
	alice, bob := newService(dir, acked), newService(dir, nil)
	defer alice.close()
	defer bob.close()

	// Each needs a route to the other: alice's message goes to bob, and
	// bob's ack comes back to alice.
	if err := alice.routes.AddRoute(bob.id.Sender(), bob.server.URL); err != nil {
		log.Fatal(err)
	}
	if err := bob.routes.AddRoute(alice.id.Sender(), alice.server.URL); err != nil {
		log.Fatal(err)
	}

	msgID, err := alice.flow.CallAsync(context.Background(), bob.id.Sender(), []byte("hello"))
	if err != nil {
		log.Fatal(err)
	}
	d := <-acked
	fmt.Println(d.MsgID == msgID, d.To.Equal(bob.id.Sender()), string(d.Received))
	// Output: true true got "hello"
}
