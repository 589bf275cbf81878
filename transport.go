package asyncflow

import (
	"context"

	"github.com/aviate-labs/agent-go/principal"
)

// Transport carries one-shot calls to other principals.
//
// Send submits one call of method with the Candid argument arg to the
// principal to, and returns once the submission was accepted or refused.
// It never waits for the call to run or for a reply: delivery is confirmed
// by the protocol, not by the transport. A nil error does not mean the call
// arrived. Implementations must be safe for concurrent use and must return
// promptly when ctx is done.
type Transport interface {
	Send(ctx context.Context, to principal.Principal, method string, arg []byte) error
}

// Router is implemented by transports that know in advance which
// principals they can reach. CallAsync refuses a target that Route refuses,
// so a message that can never leave is not stored.
type Router interface {
	Route(to principal.Principal) error
}

// Inbound receives calls that a transport accepted. A Flow implements it.
//
// Deliver checks the call and hands it to the protocol. It returns an
// error, and changes nothing, when the method is unknown or the argument
// does not decode; a transport answers such a call with a refusal. Deliver
// is safe for concurrent use.
type Inbound interface {
	Deliver(ctx context.Context, caller principal.Principal, method string, arg []byte) error
}
