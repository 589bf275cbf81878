package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// binary is the asyncflow command built for tests that run it as a
// separate process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "asyncflow-cli")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "asyncflow")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic("building the asyncflow command: " + err.Error())
	}

	code := 0
	func() {
		defer os.RemoveAll(dir)
		goleak.VerifyTestMain(&exitRecorder{m: m, code: &code})
	}()
	os.Exit(code)
}

// exitRecorder lets TestMain clean up after goleak has run the tests.
type exitRecorder struct {
	m    *testing.M
	code *int
}

func (r *exitRecorder) Run() int {
	*r.code = r.m.Run()
	return *r.code
}

// runCLI runs the command in-process and returns its exit code and output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}
