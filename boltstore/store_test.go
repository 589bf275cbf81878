package boltstore_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
	"github.com/asyncflow/asyncflow/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Suite{
		Open: func(_ *testing.T, path string) (asyncflow.Store, error) {
			return boltstore.Open(path, nil)
		},
		Durable: true,
	})
}
