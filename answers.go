package asyncflow

import (
	"sync"

	"github.com/aviate-labs/agent-go/principal"
)

// maxAnswers bounds how many settled messages a sender remembers the
// answer of: at most a few megabytes, whatever the rate.
const maxAnswers = 1 << 16

// answers remembers, for messages the sender settled and forgot, the hash
// of the answer it took, so that it can answer a resent ack (its ackack
// was lost) with that hash rather than the hash of whatever copy arrives:
// the receiver then learns when the answer the sender took was not the one
// it sent. An entry lasts until maxAnswers newer ones push it out; a
// restart forgets them all. It is safe for concurrent use.
type answers struct {
	mu   sync.Mutex
	byID map[MsgID]int
	ring []answer // oldest at next once full
	next int
}

// answer is what the sender took for one settled message.
type answer struct {
	id   MsgID
	to   principal.Principal
	hash Hash
}

// remember records that the sender settled id, sent to to, taking an
// answer of hash h.
func (a *answers) remember(id MsgID, to principal.Principal, h Hash) {
	a.mu.Lock()
	defer a.mu.Unlock()

	if a.byID == nil {
		a.byID = make(map[MsgID]int)
	}
	if len(a.ring) < maxAnswers {
		a.byID[id] = len(a.ring)
		a.ring = append(a.ring, answer{id: id, to: to, hash: h})
		return
	}

	old := a.ring[a.next]
	if a.byID[old.id] == a.next {
		delete(a.byID, old.id)
	}
	a.ring[a.next] = answer{id: id, to: to, hash: h}
	a.byID[id] = a.next
	a.next = (a.next + 1) % maxAnswers
}

// lookup returns the hash of the answer the sender took for id from
// caller, if it still remembers it.
func (a *answers) lookup(id MsgID, caller principal.Principal) (Hash, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()

	i, ok := a.byID[id]
	if !ok {
		return Hash{}, false
	}
	e := a.ring[i]
	if !e.to.Equal(caller) {
		return Hash{}, false
	}
	return e.hash, true
}
