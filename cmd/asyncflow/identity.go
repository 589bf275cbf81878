package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/asyncflow/asyncflow/ic"
)

// identityCmd runs "asyncflow identity new --out FILE".
func identityCmd(args []string, stderr io.Writer, ev *events) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(stderr, "usage: asyncflow identity new --out FILE")
		return flag.ErrHelp
	}
	if len(args) == 0 || args[0] != "new" {
		return usagef("identity: the only subcommand is \"new\"")
	}
	fs := newFlags("identity new", stderr)
	out := fs.String("out", "", "file to write the PEM identity to (required)")
	if err := parse(fs, args[1:], 0); err != nil {
		return err
	}
	if *out == "" {
		return usagef("identity new: --out is required")
	}

	pem, id, err := ic.NewIdentityPEM()
	if err != nil {
		return err
	}
	if err := ic.WriteIdentity(*out, pem); err != nil {
		return err
	}
	ev.line(id.Sender().String())
	return nil
}
