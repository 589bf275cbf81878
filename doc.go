// Package asyncflow delivers one-shot messages between Internet Computer
// principals with confirmation: nothing is lost, nothing is processed
// twice.
//
// On the IC a one-shot call is sent and never awaited. That removes the
// await window in which re-entrancy bugs live and lets a canister upgrade
// without outstanding replies, but nobody confirms delivery. asyncflow adds
// the confirmation as a three-way exchange:
//
//	sender                                   receiver
//	CallAsync -> id, stored
//	  --- newMessage {id, payload} ------------>  handler runs once, result
//	                                              committed
//	  <------------ ack {id, crc(payload), answer}
//	OnAck runs, message forgotten
//	  --- ackack {id, crc(answer)} ------------>  ack no longer resent
//
// Each side resends its step every RetryAfter (5 min 30 s by default)
// until the next step arrives. The receiver keeps a record per (caller,
// id): a duplicate newMessage gets the stored ack again instead of being
// processed again. The hashes are CRC-32 checks of the payloads; a
// mismatch goes to the corruption handler.
//
// # Using it
//
// A Flow runs both sides for one principal. Give it a Transport for
// outgoing calls and a Store, register a Handler for incoming messages and
// an OnAck callback for confirmations, and hand it incoming calls through
// Deliver (the ic package's Endpoint does that for HTTP):
//
//	flow, err := asyncflow.New(asyncflow.Config{
//		Transport: transport,
//		Handler:   handle,
//		OnAck:     confirmed,
//	})
//	id, err := flow.CallAsync(ctx, target, payload)
//
// The package holds the protocol, the wire codec for its three records, a
// memory store and an in-memory network with fault injection for tests.
// Package ic carries the calls over the IC's HTTP interface: outbound
// through agent-go, inbound through a signed-call endpoint.
//
// # Guarantees
//
// "Processed" means the receiver committed (caller, id, ack payload) to
// its store; the ack leaves only after that commit. The handler runs
// before the commit, so across crashes it runs at least once, and exactly
// once without. A handler error records nothing: the sender's retry brings
// the message back. OnAck runs after "acked" is stored: at least once
// across crashes, exactly once without. A processed id is remembered for
// DedupWindow; a new message older than that is refused, so no message is
// processed twice.
//
// These hold across crashes only with a durable store: package boltstore
// keeps both sides' records in a bbolt file, and every change is synced
// before the call that made it returns. A MemoryStore, the default, loses
// everything when the process exits. Package storetest is the conformance
// suite a Store implementation runs.
package asyncflow
