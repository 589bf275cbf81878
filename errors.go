package asyncflow

import "errors"

// Errors returned by this package, for use with errors.Is. Returned errors
// wrap them with the detail that names what failed.
var (
	// ErrClosed is returned by calls on a Flow, or on a Store, after Close.
	ErrClosed = errors.New("asyncflow: closed")

	// ErrInvalidConfig is returned by New for a configuration it refuses.
	ErrInvalidConfig = errors.New("asyncflow: invalid config")

	// ErrInvalidMsgID is returned for a message id that is not a nat of at
	// most 128 bits or not valid ULID text.
	ErrInvalidMsgID = errors.New("asyncflow: invalid message id")

	// ErrInvalidCandid is returned when a Candid argument cannot be decoded
	// as the record its method expects.
	ErrInvalidCandid = errors.New("asyncflow: invalid candid argument")

	// ErrUnknownMethod is returned for a method that is not one of the three
	// asyncflow methods.
	ErrUnknownMethod = errors.New("asyncflow: unknown method")

	// ErrNoRoute is returned by CallAsync when the transport cannot reach the
	// target principal.
	ErrNoRoute = errors.New("asyncflow: no route to principal")

	// ErrNotPeer is returned when an ack or ackack comes from a principal
	// other than the one the message was exchanged with.
	ErrNotPeer = errors.New("asyncflow: caller is not the message's peer")

	// ErrNoHandler is returned when a new message arrives and no handler is
	// configured.
	ErrNoHandler = errors.New("asyncflow: no message handler")

	// ErrNotFound is returned by a Store for a record it does not hold.
	ErrNotFound = errors.New("asyncflow: record not found")

	// ErrPayloadTooLarge is returned for a payload over Config.MaxPayload.
	ErrPayloadTooLarge = errors.New("asyncflow: payload too large")

	// ErrOutsideWindow is returned for a new message whose id's time lies
	// outside [now - DedupWindow, now + MaxClockSkew]: the receiver may
	// have forgotten it was processed, or would remember it too long.
	ErrOutsideWindow = errors.New("asyncflow: message id outside the dedup window")

	// ErrInvalidPrincipal is returned for an empty or anonymous principal
	// where a real one is needed.
	ErrInvalidPrincipal = errors.New("asyncflow: invalid principal")

	// ErrTooManyInFlight is returned by CallAsync when its target has
	// Config.MaxInFlight messages waiting for their ack, and the call was
	// made with FailWhenFull or its context ended while it waited.
	ErrTooManyInFlight = errors.New("asyncflow: too many messages in flight")
)
