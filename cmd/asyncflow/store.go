package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
)

// storeFlags are the --store and --memory flags of serve and send, which
// choose where a peer keeps its messages.
type storeFlags struct {
	fs     *flag.FlagSet
	path   string
	memory bool
}

// addStoreFlags defines --store and --memory on fs.
func addStoreFlags(fs *flag.FlagSet) *storeFlags {
	s := &storeFlags{fs: fs}
	fs.StringVar(&s.path, "store", "",
		"bbolt file that keeps the messages across restarts "+
			"(default: <principal>.db in the working directory)")
	fs.BoolVar(&s.memory, "memory", false,
		"keep the messages in memory only: a restart loses them (instead of --store)")
	return s
}

// check refuses --store together with --memory. It runs after parsing,
// before anything is opened.
func (s *storeFlags) check() error {
	if !s.memory {
		return nil
	}
	given := false
	s.fs.Visit(func(f *flag.Flag) { given = given || f.Name == "store" })
	if given {
		return usagef("%s: give --store or --memory, not both", s.fs.Name())
	}
	return nil
}

// open opens the store the flags choose for the peer p: a new memory
// store, or the bbolt file, created if it does not exist. It also returns
// the file's path, empty for a memory store. The file is held by this
// process until the store is closed; a second process fails within
// boltstore.DefaultLockTimeout.
//
// The file belongs to p from its first use on, and is refused to any
// other identity: its messages were signed as p, and the receiver keeps
// its records per caller, so resending them as another principal would
// have them processed a second time.
func (s *storeFlags) open(p principal.Principal) (asyncflow.Store, string, error) {
	if s.memory {
		return asyncflow.NewMemoryStore(), "", nil
	}

	path := s.path
	if path == "" {
		path = p.String() + ".db"
	}
	st, err := boltstore.Open(path, &boltstore.Options{Owner: p})
	switch {
	case errors.Is(err, boltstore.ErrInUse):
		return nil, "", fmt.Errorf("%s: opening the store: %w; "+
			"each running serve or send needs a --store of its own", s.fs.Name(), err)
	case errors.Is(err, boltstore.ErrOwner):
		return nil, "", fmt.Errorf("%s: %s belongs to another identity than %s, "+
			"whose messages it keeps; give this identity a --store of its own",
			s.fs.Name(), path, p)
	case err != nil:
		return nil, "", fmt.Errorf("%s: opening the store: %w", s.fs.Name(), err)
	}
	return st, path, nil
}
