package asyncflow

import (
	"context"

	"github.com/aviate-labs/agent-go/principal"
)

// Transport carries one-shot calls to other principals. Implementations
// must be safe for concurrent use.
type Transport interface {
	// Send submits one call of method with the Candid argument arg to the
	// principal to, and returns once the submission was accepted or
	// refused. It never waits for the call to run or for a reply: delivery
	// is confirmed by the protocol, not by the transport, and a nil error
	// does not mean the call arrived. It returns promptly when ctx is done.
	Send(ctx context.Context, to principal.Principal, method string, arg []byte) error
}

// Router is implemented by transports that know in advance which
// principals they can reach.
type Router interface {
	// Route returns an error wrapping ErrNoRoute when calls to to cannot
	// be sent. CallAsync refuses such a target, so that a message that can
	// never leave is not stored, and a Flow refuses a new message from a
	// caller it could not send the ack back to.
	Route(to principal.Principal) error
}

// Inbound receives calls that a transport accepted. A Flow implements it.
type Inbound interface {
	// Deliver checks the call from the authenticated caller and hands it
	// to the protocol. It returns an error, and changes nothing, for a
	// call it refuses (Flow.Deliver lists them); a transport answers such
	// a call with a refusal. It is safe for concurrent use.
	Deliver(ctx context.Context, caller principal.Principal, method string, arg []byte) error
}
