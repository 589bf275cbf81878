// Package ic carries asyncflow calls in the Internet Computer's own signed
// call format.
//
// Transport sends: it signs each call with an agent-go identity and
// submits it with agent-go's client, to a canister through an IC boundary
// node or to another Go service. Endpoint receives: it is an http.Handler
// that accepts the same submissions, verifies them as the IC would
// (request id, signature, self-authenticating sender, ingress expiry,
// target) and delivers them to an asyncflow.Inbound such as a Flow. Both
// stop at submission: a 202 Accepted means the call was taken, not that
// it ran; the asyncflow protocol confirms delivery.
//
// LoadIdentity, NewIdentityPEM and WriteIdentity handle the PEM key files
// dfx uses.
//
// Sender delegations (Internet Identity sessions) are refused, because
// verifying their chain, and the canister signatures it may contain, is
// not implemented.
package ic
