package asyncflow_test

import (
	"testing"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/storetest"
)

func TestMemoryStoreConformance(t *testing.T) {
	storetest.Run(t, storetest.Suite{
		Open: func(*testing.T, string) (asyncflow.Store, error) {
			return asyncflow.NewMemoryStore(), nil
		},
	})
}
