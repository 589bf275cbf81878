package boltstore_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
	"github.com/asyncflow/asyncflow/storetest"
)

// TestMain runs the tests, or, in a child process that a test started
// (see runChild), that child's job alone.
func TestMain(m *testing.M) {
	if job := os.Getenv(childEnv); job != "" {
		os.Exit(runChildJob(job))
	}
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
