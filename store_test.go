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
