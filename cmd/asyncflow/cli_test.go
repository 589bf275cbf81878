package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asyncflow/asyncflow"
	"github.com/asyncflow/asyncflow/boltstore"
	"github.com/asyncflow/asyncflow/ic"
)

func TestCandidEncodeMatchesTheReferenceVectors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--method", "newMessage", "--msg-id", "0"},
			"4449444c026d7b6c02d9ece182017d8effd6e90e0001010000"},
		{[]string{"--method", "com_asyncFlow_ack", "--msg-id", "0", "--hash", "891568578"},
			"4449444c036e796d7b6c03d9ece182017dcedfa0a804008effd6e90e0101020001c241243500"},
		{[]string{"--method", "ackack", "--msg-id", "0", "--hash", "null"},
			"4449444c026e796c02d9ece182017dcedfa0a8040001010000"},
		{[]string{"--method", "ack", "--msg-id", "0", "--payload-hex", "4449444c0000"},
			"4449444c036e796d7b6c03d9ece182017dcedfa0a804008effd6e90e0101020000064449444c0000"},
	}
	for _, tc := range cases {
		code, stdout, stderr := runCLI(t, append([]string{"candid", "encode"}, tc.args...)...)
		require.Equal(t, 0, code, stderr)
		require.Equal(t, tc.want+"\n", stdout)
	}
}

func TestCandidDecodePrintsJSON(t *testing.T) {
	cases := []struct {
		method, hex, want string
	}{
		{"newMessage", "4449444c026d7b6c02d9ece182017d8effd6e90e00010100064449444c0000",
			`{"msg_id":"0","payload":"4449444c0000"}`},
		{"ack", "4449444c036e796d7b6c03d9ece182017dcedfa0a804008effd6e90e01010200010000000000",
			`{"msg_id":"0","payload":"","hash":0}`},
		{"com_asyncFlow_ackack", "4449444c026e796c02d9ece182017dcedfa0a8040001010000",
			`{"msg_id":"0","hash":null}`},
	}
	for _, tc := range cases {
		code, stdout, stderr := runCLI(t, "candid", "decode", "--method", tc.method, tc.hex)
		require.Equal(t, 0, code, stderr)
		require.JSONEq(t, tc.want, stdout)
		require.Equal(t, 1, strings.Count(stdout, "\n"))
	}
}

func TestCandidRoundTripsALargeMsgID(t *testing.T) {
	id := "340282366920938463463374607431768211455" // 2^128 - 1
	code, hexArg, stderr := runCLI(t, "candid", "encode", "--method", "ackack",
		"--msg-id", id, "--hash", "7")
	require.Equal(t, 0, code, stderr)

	code, stdout, stderr := runCLI(t, "candid", "decode", "--method", "ackack",
		strings.TrimSpace(hexArg))
	require.Equal(t, 0, code, stderr)
	require.JSONEq(t, `{"msg_id":"`+id+`","hash":7}`, stdout)
}

func TestBadInputGivesOneLineErrorAndNonZeroExit(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))

	cases := [][]string{
		{},
		{"frobnicate"},
		{"candid"},
		{"candid", "encode", "--method", "nope", "--msg-id", "1"},
		{"candid", "encode", "--method", "ack"},
		{"candid", "encode", "--method", "ack", "--msg-id", "-1"},
		{"candid", "encode", "--method", "ack", "--msg-id", "1", "--hash", "4294967296"},
		{"candid", "encode", "--method", "ack", "--msg-id", "1", "--payload-hex", "zz"},
		{"candid", "encode", "--method", "newMessage", "--msg-id", "1", "--hash", "1"},
		{"candid", "encode", "--method", "ackack", "--msg-id", "1", "--payload-hex", "00"},
		{"candid", "encode", "--method", "ack", "--msg-id",
			"340282366920938463463374607431768211456"},
		{"candid", "decode", "--method", "ack", "4449"},
		{"candid", "decode", "--method", "ack", "xyz"},
		{"candid", "decode", "--method", "ack"},
		{"candid", "decode", "--method", "newMessage",
			"4449444c026e796c02d9ece182017dcedfa0a8040001010000"},
		{"identity", "new"},
		{"identity", "old", "--out", "x"},
		{"serve", "--bogus"},
		{"serve"},
		{"serve", "--identity", filepath.Join(dir, "missing.pem")},
		{"serve", "--identity", notPEM},
		{"serve", "--identity", notPEM, "--peer", "nonsense"},
		{"send", "--identity", notPEM},
		{"send", "--to", "aaaaa-aa", "--url", "http://127.0.0.1:1", "--payload-hex", "q"},
		{"send", "--identity", notPEM, "--to", "aaaaa-aa", "--url", "http://127.0.0.1:1"},
		{"send", "--to", "aaaaa-ab", "--url", "http://127.0.0.1:1", "--listen", ":0"},
		{"send", "--to", "AAAAA-AA", "--url", "http://127.0.0.1:1", "--listen", ":0"},
		{"send", "--to", "aaaaa-aa", "--url", "127.0.0.1:1", "--listen", ":0"},
		{"serve", "--identity", notPEM, "--peer", "aaaaa-aa=localhost:1"},
	}
	for _, args := range cases {
		code, stdout, stderr := runCLI(t, args...)
		require.NotEqual(t, 0, code, "%v", args)
		require.Empty(t, stdout, "%v", args)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		last := lines[len(lines)-1]
		require.True(t, strings.HasPrefix(last, "asyncflow: "), "%v: %q", args, stderr)
		require.NotContains(t, stderr, "goroutine ", "%v: no stack trace", args)
	}
}

func TestIdentityNewWritesAPEMAndRefusesToOverwrite(t *testing.T) {
	out := filepath.Join(t.TempDir(), "id.pem")

	code, stdout, stderr := runCLI(t, "identity", "new", "--out", out)
	require.Equal(t, 0, code, stderr)
	pem, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Contains(t, string(pem), "-----BEGIN PRIVATE KEY-----")
	principalText := strings.TrimSpace(stdout)
	require.Regexp(t, `^[a-z2-7]{5}(-[a-z2-7]{1,5})+$`, principalText)

	code, _, stderr = runCLI(t, "identity", "new", "--out", out)
	require.NotEqual(t, 0, code)
	require.Contains(t, stderr, out)
	again, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, pem, again, "an existing identity is never overwritten")
}

// newIdentity writes an identity file and returns its path and principal.
func newIdentity(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	path := filepath.Join(dir, name+".pem")
	code, stdout, stderr := runCLI(t, "identity", "new", "--out", path)
	require.Equal(t, 0, code, stderr)
	return path, strings.TrimSpace(stdout)
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// pair is a serve process and the identity and address of a sender that
// it routes its acks to, both with dir as their working directory.
type pair struct {
	dir               string
	serverP           string
	serve             serveProc
	senderID, senderP string
	sendAddr          string
}

// startPair makes two identities in a new folder and starts serve there,
// with a route back to the sender's address and serveArgs.
func startPair(ctx context.Context, t *testing.T, serveArgs ...string) pair {
	t.Helper()
	p := pair{dir: t.TempDir(), sendAddr: freeAddr(t)}
	var serverID string
	serverID, p.serverP = newIdentity(t, p.dir, "server")
	p.senderID, p.senderP = newIdentity(t, p.dir, "sender")
	p.serve = startServe(ctx, t, p.dir, append([]string{"--identity", serverID,
		"--peer", p.senderP + "=http://" + p.sendAddr}, serveArgs...)...)
	return p
}

// send runs send as a process in the pair's folder, from the pair's
// sender to its serve, and returns its exit code and output.
func (p pair) send(ctx context.Context, t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runSend(ctx, t, p.dir, append([]string{"--identity", p.senderID,
		"--listen", p.sendAddr, "--to", p.serverP, "--url", p.serve.url}, args...)...)
}

// runSend runs send as a process in dir and returns its exit code and
// output.
func runSend(ctx context.Context, t *testing.T, dir string, args ...string) (
	int, string, string) {
	t.Helper()
	send := exec.CommandContext(ctx, binary, append([]string{"send"}, args...)...)
	send.Dir = dir
	var stdout, stderr bytes.Buffer
	send.Stdout, send.Stderr = &stdout, &stderr
	err := send.Run()
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		require.NoError(t, err)
	}
	return send.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func TestServeAndSendDeliverBetweenTwoProcesses(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	p := startPair(ctx, t)

	code, out, stderr := p.send(ctx, t, "--payload-hex", "68656c6c6f", "--wait", "30s",
		"--retry-after", "1s")
	require.Equal(t, 0, code, "send failed: %s", stderr)

	var delivered map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &delivered), out)
	require.Equal(t, "delivered", delivered["event"])
	require.Equal(t, p.serverP, delivered["to"])
	require.Equal(t, "68656c6c6f", delivered["sent"])
	require.Equal(t, "68656c6c6f", delivered["received"])
	require.EqualValues(t, 907060870, delivered["hash"]) // CRC-32 of "hello"
	msgID := delivered["msg_id"].(string)

	processed := readEvent(t, p.serve.out)
	require.Equal(t, map[string]any{"event": "processed", "from": p.senderP,
		"msg_id": msgID, "payload": "68656c6c6f"}, processed)
}

func TestSendToAnUnreachablePeerFailsWithOneLine(t *testing.T) {
	dir := t.TempDir()
	senderID, _ := newIdentity(t, dir, "sender")
	_, targetP := newIdentity(t, dir, "target")

	store := filepath.Join(dir, "sender.db")

	code, stdout, stderr := runCLI(t, "send", "--identity", senderID, "--to", targetP,
		"--url", "http://"+freeAddr(t), "--listen", freeAddr(t), "--payload-hex", "00",
		"--wait", "2s", "--store", store)
	require.Equal(t, 1, code)
	require.Empty(t, stdout)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	require.Len(t, lines, 2, stderr)
	require.Contains(t, lines[0], "send failed; it is retried", "said at once, not after --wait")
	require.Contains(t, lines[1], "no ack")
	require.Contains(t, lines[1], "connection refused")
	require.Contains(t, lines[1], "it stays pending in "+store)
}

// waitForLine reads r until a line contains want, returns that line, and
// keeps draining r.
func waitForLine(t *testing.T, r io.Reader, want string) string {
	t.Helper()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if strings.Contains(sc.Text(), want) {
			go func() { _, _ = io.Copy(io.Discard, r) }()
			return sc.Text()
		}
	}
	t.Fatalf("the process ended without printing %q", want)
	return ""
}

// readEvent reads one JSON line from r.
func readEvent(t *testing.T, r io.Reader) map[string]any {
	t.Helper()
	line, err := bufio.NewReader(r).ReadBytes('\n')
	require.NoError(t, err)
	var ev map[string]any
	require.NoError(t, json.Unmarshal(line, &ev), string(line))
	return ev
}

func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func TestMistakesInFlagsExitWithTwo(t *testing.T) {
	dir := t.TempDir()
	idPath, p := newIdentity(t, dir, "someone")
	peer := p + "=http://127.0.0.1:1"

	cases := [][]string{
		{"serve", "--identity", idPath, "--listen", ""},
		{"serve", "--identity", idPath, "--retry-after", "1ms"},
		{"serve", "--identity", idPath, "--peer", peer, "--peer", peer},
		{"serve", "--identity", idPath, "--peer", p + "=http://h/?q=1"},
		{"send", "--identity", idPath, "--to", p, "--url", "http://h:1", "--listen", ":0",
			"--payload-hex", "00", "--retry-after", "-5s"},
		{"send", "--identity", idPath, "--to", p, "--url", "http://h:1", "--listen", ":0"},
		{"send", "--identity", idPath, "--to", p, "--url", "http://h:1", "--listen", ":0",
			"--payload-hex", "00", "--payload-file", "-"},
		{"serve", "--identity", idPath, "--store", filepath.Join(dir, "x.db"), "--memory"},
		{"send", "--identity", idPath, "--to", p, "--url", "http://h:1", "--listen", ":0",
			"--memory", "--store", filepath.Join(dir, "x.db")},
		{"demo", "--corrupt", "1"},
		{"demo", "--retry-after", "1ms"},
		{"candid", "encode", "--method", "ack", "--msg-id", "-1"},
	}
	for _, args := range cases {
		code, stdout, stderr := runCLI(t, args...)
		require.Equal(t, 2, code, "%v: %s", args, stderr)
		require.Empty(t, stdout)
		require.Equal(t, 1, strings.Count(stderr, "\n"), "%v: one line: %q", args, stderr)
	}
	require.NoFileExists(t, filepath.Join(dir, "x.db"), "a mistake opens no store")
}

// serveProc is a serve process that startServe started.
type serveProc struct {
	cmd *exec.Cmd
	url string
	out io.Reader // its standard output
}

// startServe runs serve as a process in dir, on a port it picks unless
// args name another --listen, and returns once it serves. The test's end
// interrupts it.
func startServe(ctx context.Context, t *testing.T, dir string, args ...string) serveProc {
	t.Helper()
	serve := exec.CommandContext(ctx, binary, append([]string{"serve", "--listen",
		"127.0.0.1:0", "--retry-after", "1s"}, args...)...)
	serve.Dir = dir
	out, err := serve.StdoutPipe()
	require.NoError(t, err)
	errOut, err := serve.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, serve.Start())
	t.Cleanup(func() {
		_ = serve.Process.Signal(os.Interrupt)
		_ = serve.Wait()
	})

	banner := waitForLine(t, errOut, "serving ")
	return serveProc{cmd: serve, url: banner[strings.LastIndex(banner, " ")+1:], out: out}
}

// stop interrupts serve, waits for it to exit cleanly and returns the
// event lines it printed that were not read yet.
func (s serveProc) stop(t *testing.T) []map[string]any {
	t.Helper()
	require.NoError(t, s.cmd.Process.Signal(os.Interrupt))
	var events []map[string]any
	sc := bufio.NewScanner(s.out)
	for sc.Scan() {
		var ev map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &ev), sc.Text())
		events = append(events, ev)
	}
	require.NoError(t, sc.Err())
	require.NoError(t, s.cmd.Wait())
	return events
}

func TestSendReadsThePayloadFromAFileOrStandardInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	p := startPair(ctx, t)
	payload := make([]byte, 300<<10) // more than a command line can hold as hex
	for i := range payload {
		payload[i] = byte(i)
	}
	file := filepath.Join(p.dir, "payload.bin")
	require.NoError(t, os.WriteFile(file, payload, 0o600))

	for _, source := range []string{file, "-"} {
		send := exec.CommandContext(ctx, binary, "send", "--identity", p.senderID,
			"--listen", p.sendAddr, "--to", p.serverP, "--url", p.serve.url,
			"--payload-file", source, "--retry-after", "1s")
		send.Dir = p.dir
		send.Stdin = bytes.NewReader(payload)
		out, err := send.Output()
		require.NoError(t, err, "%s: %s", source, exitStderr(err))

		var delivered map[string]any
		require.NoError(t, json.Unmarshal(out, &delivered))
		require.Equal(t, hex.EncodeToString(payload), delivered["received"], source)
	}
}

func TestSendStopsAtARefusalThatARetryCannotChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	serverID, serverP := newIdentity(t, dir, "server")
	senderID, _ := newIdentity(t, dir, "sender")
	serve := startServe(ctx, t, dir, "--identity", serverID) // no route back

	code, _, stderr := runSend(ctx, t, dir, "--identity", senderID,
		"--listen", freeAddr(t), "--to", serverP, "--url", serve.url,
		"--payload-hex", "00", "--wait", "50s")

	require.Equal(t, 1, code)
	require.Contains(t, stderr, "would refuse it again")
	require.Contains(t, stderr, "no route back to the caller")
	require.NotContains(t, stderr, "no ack", "it did not wait for --wait")
}

func TestServeAndSendKeepTheirStoresInPrincipalNamedFilesByDefault(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	p := startPair(ctx, t)
	require.FileExists(t, filepath.Join(p.dir, p.serverP+".db"), "opened before serving")

	code, _, stderr := p.send(ctx, t, "--payload-hex", "00", "--retry-after", "1s")
	require.Equal(t, 0, code, stderr)
	require.FileExists(t, filepath.Join(p.dir, p.senderP+".db"))
}

func TestMemoryStoresLeaveNoFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	p := startPair(ctx, t, "--memory")

	code, _, stderr := p.send(ctx, t, "--payload-hex", "00", "--retry-after", "1s",
		"--memory")
	require.Equal(t, 0, code, stderr)
	p.serve.stop(t)
	stores, err := filepath.Glob(filepath.Join(p.dir, "*.db"))
	require.NoError(t, err)
	require.Empty(t, stores)
}

func TestASecondServeOnTheSameStoreFailsAsInUse(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	serverID, _ := newIdentity(t, dir, "server")
	first := startServe(ctx, t, dir, "--identity", serverID, "--store", "shared.db")

	// The store's lock timeout is 2 s: a second serve that waited for the
	// first to end would be stopped by this bound instead of failing.
	secondCtx, cancelSecond := context.WithTimeout(ctx, 15*time.Second)
	defer cancelSecond()
	second := exec.CommandContext(secondCtx, binary, "serve", "--identity", serverID,
		"--listen", "127.0.0.1:0", "--store", "shared.db")
	second.Dir = dir
	var errOut bytes.Buffer
	second.Stderr = &errOut
	err := second.Run()

	require.Error(t, err)
	require.Equal(t, 1, second.ProcessState.ExitCode(), errOut.String())
	require.Equal(t, 1, strings.Count(errOut.String(), "\n"), errOut.String())
	require.Contains(t, errOut.String(), "store in use by another process: shared.db")
	conn, err := net.Dial("tcp", strings.TrimPrefix(first.url, "http://"))
	require.NoError(t, err, "the first serve still runs")
	require.NoError(t, conn.Close())
}

func TestAStoreFileThatIsNotAStoreIsRefusedAndLeftAlone(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	idPath, p := newIdentity(t, dir, "someone")
	notes := filepath.Join(dir, "notes.txt")
	text := []byte("these are notes, not messages\n")
	require.NoError(t, os.WriteFile(notes, text, 0o644))

	commands := [][]string{
		{"serve", "--identity", idPath, "--listen", "127.0.0.1:0", "--store", notes},
		{"send", "--identity", idPath, "--listen", "127.0.0.1:0", "--to", p,
			"--url", "http://127.0.0.1:1", "--payload-hex", "00", "--store", notes},
	}
	for _, args := range commands {
		cmd := exec.CommandContext(ctx, binary, args...)
		cmd.Dir = dir
		out, err := cmd.Output()

		require.Error(t, err, args[0])
		require.Equal(t, 1, cmd.ProcessState.ExitCode(), args[0])
		require.Empty(t, out)
		stderr := exitStderr(err)
		require.Equal(t, 1, strings.Count(stderr, "\n"), "%s: %q", args[0], stderr)
		require.Contains(t, stderr, "not an asyncflow store: "+notes)
		after, err := os.ReadFile(notes)
		require.NoError(t, err)
		require.Equal(t, text, after, args[0])
	}
}

func TestSendResendsWhatAnInterruptedSendLeftPending(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	serverID, serverP := newIdentity(t, dir, "server")
	senderID, senderP := newIdentity(t, dir, "sender")
	serveAddr, sendAddr := freeAddr(t), freeAddr(t)
	send := func(payload, wait string) (int, string, string) {
		return runSend(ctx, t, dir, "--identity", senderID, "--listen", sendAddr,
			"--to", serverP, "--url", "http://"+serveAddr, "--store", "sender.db",
			"--payload-hex", payload, "--wait", wait, "--retry-after", "200ms")
	}

	// Nothing serves yet: the first send gives up and leaves its message.
	code, stdout, stderr := send("6669727374", "1s") // "first"
	require.Equal(t, 1, code, stderr)
	require.Empty(t, stdout)
	require.Contains(t, stderr, "it stays pending in sender.db")

	serve := startServe(ctx, t, dir, "--identity", serverID, "--listen", serveAddr,
		"--peer", senderP+"=http://"+sendAddr, "--memory")
	code, stdout, stderr = send("7365636f6e64", "30s") // "second"
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "resuming 1 message left in sender.db")

	delivered := map[string]string{} // msg id -> payload
	for line := range strings.Lines(stdout) {
		var ev map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &ev), line)
		require.Equal(t, "delivered", ev["event"], line)
		require.Equal(t, ev["sent"], ev["received"], line)
		delivered[ev["msg_id"].(string)] = ev["sent"].(string)
	}
	require.ElementsMatch(t, []string{"6669727374", "7365636f6e64"}, slices.Collect(
		maps.Values(delivered)), stdout)

	processed := map[string]string{}
	for _, ev := range serve.stop(t) {
		require.Equal(t, "processed", ev["event"], ev)
		id := ev["msg_id"].(string)
		require.NotContains(t, processed, id, "processed twice")
		processed[id] = ev["payload"].(string)
	}
	require.Equal(t, delivered, processed)
}

func TestSendLeavesMessagesForAnotherPrincipalPendingAndSaysSo(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	p := startPair(ctx, t)
	_, elsewhereP := newIdentity(t, p.dir, "elsewhere")

	code, _, stderr := runSend(ctx, t, p.dir, "--identity", p.senderID,
		"--listen", p.sendAddr, "--to", elsewhereP, "--url", "http://"+freeAddr(t),
		"--payload-hex", "00", "--wait", "1s", "--retry-after", "200ms")
	require.Equal(t, 1, code, stderr)

	code, stdout, stderr := p.send(ctx, t, "--payload-hex", "01", "--retry-after", "200ms")
	require.Equal(t, 0, code, stderr)
	require.Equal(t, 1, strings.Count(stdout, "\n"), "only its own message: %s", stdout)
	require.Contains(t, stdout, `"sent":"01"`)
	require.Regexp(t, `level=WARN msg=".*another principal.*" count=1 to=`+elsewhereP,
		stderr)
	require.NotContains(t, stderr, "resuming")
}

// leavePending writes into the store file in p's folder a pending message
// from p's sender to its serve, as a send that gave up on it leaves it,
// with an id made at idTime, and returns the id.
func (p pair) leavePending(ctx context.Context, t *testing.T, file string, idTime time.Time,
	payload []byte) asyncflow.MsgID {
	t.Helper()
	target, err := ic.ParsePrincipal(p.serverP)
	require.NoError(t, err)
	id, err := asyncflow.NewMsgID(idTime)
	require.NoError(t, err)

	st := p.openStore(t, file)
	require.NoError(t, st.PutOutgoing(ctx, asyncflow.Outgoing{MsgID: id, To: target,
		Payload: payload, State: asyncflow.OutPending, Attempts: 3, NextSend: time.Now()}))
	require.NoError(t, st.Close())
	return id
}

// pendingIn returns the pending messages in the store file in p's folder.
func (p pair) pendingIn(ctx context.Context, t *testing.T, file string) []asyncflow.Outgoing {
	t.Helper()
	st := p.openStore(t, file)
	defer st.Close()
	pending, err := st.ListOutgoing(ctx, asyncflow.OutPending)
	require.NoError(t, err)
	return pending
}

// openStore opens the store file in p's folder as p's sender.
func (p pair) openStore(t *testing.T, file string) *boltstore.Store {
	t.Helper()
	owner, err := ic.ParsePrincipal(p.senderP)
	require.NoError(t, err)
	st, err := boltstore.Open(filepath.Join(p.dir, file), &boltstore.Options{Owner: owner})
	require.NoError(t, err)
	return st
}

func TestSendForgetsALeftoverOlderThanTheDedupWindowWithoutResendingIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	p := startPair(ctx, t, "--memory")
	old := p.leavePending(ctx, t, "sender.db",
		time.Now().Add(-asyncflow.DefaultDedupWindow-time.Hour), []byte("old"))

	code, stdout, stderr := p.send(ctx, t, "--payload-hex", "01", "--store", "sender.db",
		"--retry-after", "200ms")

	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `level=WARN msg=".*older than the default dedup window.*" msg_id=`+
		old.Decimal(), stderr)
	require.NotContains(t, stderr, "resuming")
	require.Equal(t, 1, strings.Count(stdout, "\n"), "only its own message: %s", stdout)
	require.Contains(t, stdout, `"sent":"01"`)
	require.Empty(t, p.pendingIn(ctx, t, "sender.db"), "a later send finds nothing left")
	for _, ev := range p.serve.stop(t) {
		if ev["event"] == "processed" {
			require.Equal(t, "01", ev["payload"], "the old message was not resent")
		}
	}
}

func TestSendForgetsAResumedMessageThatTheReceiverRefusesForGood(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	p := startPair(ctx, t, "--memory")
	// An id further ahead of the receiver's clock than the skew it allows
	// is refused for good, as outside the dedup window, although it is not
	// stale.
	ahead := p.leavePending(ctx, t, "sender.db",
		time.Now().Add(asyncflow.DefaultMaxClockSkew+time.Hour), []byte("ahead"))

	code, stdout, stderr := p.send(ctx, t, "--payload-hex", "01", "--store", "sender.db",
		"--retry-after", "200ms")

	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "resuming 1 message left in sender.db")
	require.Regexp(t, `level=WARN msg=".*refused it, and would refuse it again" msg_id=`+
		ahead.Decimal()+` to=`+p.serverP+` refusal=".*outside the dedup window.*"`, stderr)
	require.Equal(t, 1, strings.Count(stdout, "\n"), "only its own message: %s", stdout)
	require.Contains(t, stdout, `"sent":"01"`)
	require.Empty(t, p.pendingIn(ctx, t, "sender.db"), "a later send finds nothing left")
}

func TestAStoreIsRefusedToAnotherIdentity(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	aID, _ := newIdentity(t, dir, "a")
	bID, bP := newIdentity(t, dir, "b")
	startServe(ctx, t, dir, "--identity", aID, "--store", "a.db").stop(t)

	commands := [][]string{
		{"serve", "--identity", bID, "--listen", "127.0.0.1:0", "--store", "a.db"},
		{"send", "--identity", bID, "--listen", "127.0.0.1:0", "--to", bP,
			"--url", "http://127.0.0.1:1", "--payload-hex", "00", "--store", "a.db"},
	}
	for _, args := range commands {
		cmd := exec.CommandContext(ctx, binary, args...)
		cmd.Dir = dir
		out, err := cmd.Output()

		require.Error(t, err, args[0])
		require.Equal(t, 1, cmd.ProcessState.ExitCode(), args[0])
		require.Empty(t, out)
		stderr := exitStderr(err)
		require.Equal(t, 1, strings.Count(stderr, "\n"), "%s: %q", args[0], stderr)
		require.Contains(t, stderr, "a.db belongs to another identity", args[0])
		require.Contains(t, stderr, "a --store of its own", args[0])
	}
	startServe(ctx, t, dir, "--identity", aID, "--store", "a.db").stop(t)
}

func TestALeftoverIsNotResentUnderAnotherIdentity(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	serverID, serverP := newIdentity(t, dir, "server")
	aID, aP := newIdentity(t, dir, "a")
	bID, bP := newIdentity(t, dir, "b")
	bAddr := freeAddr(t)
	serve := startServe(ctx, t, dir, "--identity", serverID, "--memory",
		"--peer", aP+"=http://"+freeAddr(t), // nothing listens there: A's acks are lost
		"--peer", bP+"=http://"+bAddr)
	send := func(id, listen, payload string) (int, string, string) {
		return runSend(ctx, t, dir, "--identity", id, "--listen", listen,
			"--to", serverP, "--url", serve.url, "--store", "shared.db",
			"--payload-hex", payload, "--wait", "2s", "--retry-after", "200ms")
	}

	code, _, stderr := send(aID, freeAddr(t), "6f6e6365") // "once"
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "it stays pending in shared.db")

	code, stdout, stderr := send(bID, bAddr, "02")
	require.Equal(t, 1, code, stderr)
	require.Empty(t, stdout)
	require.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
	require.Contains(t, stderr, "shared.db belongs to another identity")

	var processed []string
	for _, ev := range serve.stop(t) {
		if ev["event"] == "processed" {
			processed = append(processed, ev["payload"].(string))
		}
	}
	require.Equal(t, []string{"6f6e6365"}, processed, "processed once, and B sent nothing")
}

func TestCandidMistakesSayWhatIsExpected(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"candid", "decode", "4449444c"}, "--method is required: newMessage, ack or ackack"},
		{[]string{"candid", "encode", "--method", "newmessage", "--msg-id", "1"},
			"the methods are newMessage, ack and ackack"},
		{[]string{"candid", "encode", "--method", "ack", "--msg-id", "-1"},
			"-1 is negative, and a msg_id is a nat"},
	}
	for _, tc := range cases {
		code, stdout, stderr := runCLI(t, tc.args...)
		require.Equal(t, 2, code, "%v", tc.args)
		require.Empty(t, stdout)
		require.Contains(t, stderr, tc.want, "%v", tc.args)
	}
}
