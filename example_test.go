package asyncflow_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"strings"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/asyncflow/asyncflow"
)

// Two Flows on an in-memory network: one sends, the other answers in
// upper case, and the sender's OnAck sees the answer.
func Example() {
	alice := principal.Principal{Raw: []byte{1}}
	bob := principal.Principal{Raw: []byte{2}}
	network, err := asyncflow.NewNetwork(1, asyncflow.Faults{})
	if err != nil {
		log.Fatal(err)
	}
	defer network.Close()
	quiet := slog.New(slog.DiscardHandler)

	done := make(chan asyncflow.Delivery, 1)
	sender, err := asyncflow.New(asyncflow.Config{
		Transport: network.Transport(alice),
		Store:     asyncflow.NewMemoryStore(), // boltstore.Open keeps it on disk
		OnAck:     func(_ context.Context, d asyncflow.Delivery) { done <- d },
		Logger:    quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sender.Close()
	receiver, err := asyncflow.New(asyncflow.Config{
		Transport: network.Transport(bob),
		Handler: func(_ context.Context, from principal.Principal, _ asyncflow.MsgID,
			payload []byte) ([]byte, error) {
			return []byte(strings.ToUpper(string(payload))), nil
		},
		Store:  asyncflow.NewMemoryStore(),
		Logger: quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer receiver.Close()
	network.Attach(alice, sender)
	network.Attach(bob, receiver)

	id, err := sender.CallAsync(context.Background(), bob, []byte("hello"))
	if err != nil {
		log.Fatal(err)
	}
	d := <-done
	fmt.Println(d.MsgID == id, string(d.Sent), "->", string(d.Received), d.Hash)
	// Output: true hello -> HELLO 907060870
}
