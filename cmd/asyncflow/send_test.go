package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/ic"
)

// TestAwaitSettledFailsOnlyForItsOwnMessageOrAnUnackedOne drives
// awaitSettled with a watch that already saw every outcome, so that no
// timing decides the result: --wait passes only where a message stays
// open.
func TestAwaitSettledFailsOnlyForItsOwnMessageOrAnUnackedOne(t *testing.T) {
	target, err := ic.ParsePrincipal("aaaaa-aa")
	require.NoError(t, err)
	resumed := newMsgID(t, time.Now().Add(-time.Hour))
	own := newMsgID(t, time.Now())
	refuseWith := func(status int, reason string) func(*watch, asyncflow.MsgID) {
		return func(w *watch, id asyncflow.MsgID) {
			w.failedMessage(target, id, &ic.RefusedError{To: target,
				Method: asyncflow.MethodNewMessage, Status: status, Reason: reason})
		}
	}
	refuse := refuseWith(http.StatusBadRequest,
		"call refused: message id outside the dedup window")
	// Refusals that come from the run's setup, not from the message.
	wrongURL := refuseWith(http.StatusNotFound,
		`path "/x/api/v2/canister/aaaaa-aa/call" is not a call endpoint`)
	noRouteBack := refuseWith(http.StatusBadRequest, "call refused: no route back to "+
		"the caller for the ack: ic: aaaaa-aa: asyncflow: no route to principal")
	deliver := func(w *watch, id asyncflow.MsgID) {
		w.delivered(id)
		w.note(id, func(p *progress) { p.forgotten = true })
	}

	cases := []struct {
		name       string
		resumed    func(*watch, asyncflow.MsgID)
		own        func(*watch, asyncflow.MsgID)
		wantErr    string // empty when the run succeeds
		wantForgot []asyncflow.MsgID
	}{
		{"both delivered", deliver, deliver, "", nil},
		{"resumed refused for good", refuse, deliver, "", []asyncflow.MsgID{resumed}},
		{"own refused for good", deliver, refuse,
			"would refuse it again: call refused: message id outside the dedup window; " +
				"it stays pending in sender.db", nil},
		// A refusal that meets the own message too may say nothing about
		// the resumed one, which stays.
		{"both refused for good", refuse, refuse,
			"refused message " + own.Decimal() + ", and would refuse it again: " +
				"call refused: message id outside the dedup window; " +
				"they stay pending in sender.db", nil},
		{"both refused: a wrong url", wrongURL, wrongURL,
			"is not a call endpoint; they stay pending in sender.db", nil},
		{"both refused: no route back", noRouteBack, noRouteBack,
			"no route to principal; they stay pending in sender.db", nil},
		{"resumed refused, own never acked", refuse, func(*watch, asyncflow.MsgID) {},
			"no ack for 2 messages", nil},
		{"resumed never acked", func(*watch, asyncflow.MsgID) {}, deliver,
			"no ack for message " + resumed.Decimal(), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWatch(target, []asyncflow.MsgID{resumed})
			w.expect(own)
			tc.resumed(w, resumed)
			tc.own(w, own)
			var forgot []asyncflow.MsgID
			forget := func(_ context.Context, id asyncflow.MsgID) error {
				forgot = append(forgot, id)
				return nil
			}
			var logs bytes.Buffer
			j := sendJob{target: target, wait: time.Millisecond, storePath: "sender.db",
				log: newLogger(&logs, false, slog.LevelWarn), stderr: io.Discard}

			err := j.awaitSettled(t.Context(), w, own, forget)

			require.Equal(t, tc.wantForgot, forgot)
			if tc.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tc.wantErr)
			}
			for _, id := range tc.wantForgot {
				require.Contains(t, logs.String(), "msg_id="+id.Decimal())
				for _, f := range w.ackackFailures() {
					require.NotEqual(t, id, f.id, "a forgotten message owes no ackack")
				}
			}
		})
	}
}

func newMsgID(t *testing.T, at time.Time) asyncflow.MsgID {
	t.Helper()
	id, err := asyncflow.NewMsgID(at)
	require.NoError(t, err)
	return id
}
