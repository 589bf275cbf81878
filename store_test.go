package asyncflow

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMemoryStoreMissesWrapErrNotFoundAndNameTheRecord(t *testing.T) {
	st := NewMemoryStore()
	defer st.Close()
	id, err := NewMsgID(time.Now())
	if err != nil {
		t.Fatal(err)
	}

	_, outErr := st.Outgoing(context.Background(), id)
	_, inErr := st.Incoming(context.Background(), alice, id)
	for _, c := range []struct {
		err  error
		want []string
	}{
		{outErr, []string{"record not found", "outgoing message " + id.String()}},
		{inErr, []string{"record not found", "incoming message " + id.String(),
			"from " + alice.String()}},
	} {
		if !errors.Is(c.err, ErrNotFound) {
			t.Fatalf("%v does not wrap ErrNotFound", c.err)
		}
		for _, w := range c.want {
			if !strings.Contains(c.err.Error(), w) {
				t.Errorf("%q does not say %q", c.err, w)
			}
		}
	}
}

func TestMemoryStoreDueScansFindOnlyRecordsThatAreResent(t *testing.T) {
	ctx := context.Background()
	st := NewMemoryStore()
	defer st.Close()
	now := time.Now()

	for i := range 100 {
		id, err := NewMsgID(now)
		if err != nil {
			t.Fatal(err)
		}
		due := now.Add(time.Duration(i) * time.Second)
		out := Outgoing{MsgID: id, To: bob, State: OutPending, NextSend: due}
		in := Incoming{From: alice, MsgID: id, State: InAcking, NextSend: due}
		if err := st.PutOutgoing(ctx, out); err != nil {
			t.Fatal(err)
		}
		if err := st.PutIncoming(ctx, in); err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 0:
			out.State, in.State = OutAcked, InDone
			_ = st.PutOutgoing(ctx, out)
			_ = st.PutIncoming(ctx, in)
		case 1:
			_ = st.DeleteOutgoing(ctx, id)
		}
	}
	if n, _ := st.ExpireIncoming(ctx, now.Add(time.Hour), 50); n != 50 {
		t.Fatalf("%d records expired, want the oldest 50", n)
	}

	// Left due: the senders' records of i%3 == 2, and the receivers' of
	// i%3 != 0 among the 50 newest. A sender's settled record leaves no
	// entry in its due index.
	if len(st.dueOut) != 33 {
		t.Fatalf("%d due entries for the sender, want 33", len(st.dueOut))
	}
	outs, _ := st.DueOutgoing(ctx, now.Add(time.Hour), 1000)
	ins, _ := st.DueIncoming(ctx, now.Add(time.Hour), 1000)
	if len(outs) != 33 || len(ins) != 33 {
		t.Fatalf("%d and %d due records, want 33 each", len(outs), len(ins))
	}
	for i := 1; i < len(outs); i++ {
		if outs[i].NextSend.Before(outs[i-1].NextSend) {
			t.Fatalf("due records out of order at %d", i)
		}
	}
	next, ok, _ := st.NextDue(ctx)
	if !ok || !next.Equal(outs[0].NextSend) {
		t.Fatalf("NextDue %v, %v; want %v", next, ok, outs[0].NextSend)
	}
}
