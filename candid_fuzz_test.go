package asyncflow

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The fuzz targets of the Candid codec. `go test` runs their seed corpora
// in testdata/fuzz; `go test -fuzz` explores from there. The seeds are the
// reference vectors and the cases of candid_test.go, which
// TestCandidFuzzCorpus keeps in the corpora.

var writeCandidCorpus = flag.Bool("candid.write-corpus", false,
	"write the seeds of the Candid fuzz targets to testdata/fuzz")

// FuzzUnmarshalCandid decodes any input as each of the three records:
// NewMessage, Ack and AckAck. For every input, decoding does not panic; a
// refusal wraps ErrInvalidCandid or ErrInvalidMsgID and leaves the record
// as it was; a decoded record re-encodes to bytes that decode to the same
// record; the fast path and the general decoder agree; and the records
// agree with each other as the subtyping rules say.
func FuzzUnmarshalCandid(f *testing.F) {
	f.Fuzz(func(t *testing.T, arg []byte) {
		var got [3]candidValue
		var errs [3]error
		for i, like := range candidRecords {
			got[i], errs[i] = candidDecodeAs(like, arg)
			checkCandidDecoded(t, like, arg, got[i], errs[i])
			checkCandidPathsAgree(t, candidShapes[i], arg)
		}
		checkCandidRecordsAgree(t, got, errs)
	})
}

// The three records in one order, with their shapes.
var (
	candidRecords = [3]candidValue{NewMessage{}, Ack{}, AckAck{}}
	candidShapes  = [3]*candidShape{&newMessageShape, &ackShape, &ackAckShape}
)

// checkCandidDecoded checks the result of decoding arg as like's record.
func checkCandidDecoded(t *testing.T, like candidValue, arg []byte, got candidValue,
	err error) {
	t.Helper()
	if err != nil {
		require.True(t, errors.Is(err, ErrInvalidCandid) || errors.Is(err, ErrInvalidMsgID),
			"%T: %v", like, err)
		require.Equal(t, like, got, "%T changed on error", like)
		return
	}

	again, err := candidDecodeAs(like, got.AppendCandid(nil))
	require.NoError(t, err, "%T re-encoded", like)
	require.Equal(t, got, again, "%T re-encoded", like)
}

// checkCandidPathsAgree checks that the general decoder decodes arg as the
// fast path does when its header is canonical, which the fast path alone
// would otherwise see.
func checkCandidPathsAgree(t *testing.T, s *candidShape, arg []byte) {
	t.Helper()
	fast, errFast := decodeCandid(arg, s)
	general, errGeneral := decodeGeneralCandid(arg, s)

	require.Equal(t, errFast == nil, errGeneral == nil, "fast %v, general %v",
		errFast, errGeneral)
	require.Equal(t, errors.Is(errFast, ErrInvalidMsgID),
		errors.Is(errGeneral, ErrInvalidMsgID), "fast %v, general %v", errFast, errGeneral)
	require.Equal(t, fast, general)
}

// checkCandidRecordsAgree checks what the subtyping rules say of one
// argument decoded as each record: NewMessage and Ack read the same fields
// but hash, which NewMessage skips, so they accept the same arguments with
// the same msg_id and payload; AckAck skips the payload, so it accepts
// every argument Ack accepts, with the same msg_id and hash. Near the work
// budget a skipped field may cost the unit that tips it over, so an
// argument refused for its work proves nothing here.
func checkCandidRecordsAgree(t *testing.T, got [3]candidValue, errs [3]error) {
	t.Helper()
	for _, err := range errs {
		if err != nil && strings.Contains(err.Error(), "units of work") {
			return
		}
	}

	require.Equal(t, errs[0] == nil, errs[1] == nil, "new message %v, ack %v",
		errs[0], errs[1])
	require.Equal(t, errors.Is(errs[0], ErrInvalidMsgID), errors.Is(errs[1], ErrInvalidMsgID))
	if errs[1] != nil {
		return
	}

	ack := got[1].(Ack)
	require.Equal(t, NewMessage{MsgID: ack.MsgID, Payload: ack.Payload}, got[0])
	require.NoError(t, errs[2], "ackack")
	require.Equal(t, AckAck{MsgID: ack.MsgID, Hash: ack.Hash}, got[2])
}

// candidSeedMax is the size of the largest seed: larger ones slow the
// fuzzer down and teach it nothing a small one does not.
const candidSeedMax = 16 << 10

// candidHostileSeedSize is the size hostile arguments are built at as
// seeds.
const candidHostileSeedSize = 1 << 10

// candidUnmarshalSeeds returns the seeds of FuzzUnmarshalCandid by name:
// the reference vectors, and the subtyping, refusal, resource and hostile
// cases of candid_test.go.
func candidUnmarshalSeeds(t *testing.T) map[string][]byte {
	seeds := map[string][]byte{}
	add := func(kind, name string, arg []byte) {
		if len(arg) <= candidSeedMax {
			seeds[candidSeedName(kind, name)] = arg
		}
	}

	for _, v := range readCandidVectors(t) {
		add("vector", v.name, v.candid)
	}
	for _, c := range append(candidSubtypingCases(), candidResourceCases()...) {
		add("accepted", c.name, c.arg)
	}
	for _, c := range append(candidRefusalCases(), candidResourceRefusals()...) {
		add("refused", c.name, c.arg)
	}
	for _, h := range candidHostileArgs() {
		add("hostile", h.name, h.arg(candidHostileSeedSize))
	}
	return seeds
}

// candidSeedName turns a case's name into a file name.
func candidSeedName(kind, name string) string {
	name = regexp.MustCompile(`[^a-z0-9^]+`).ReplaceAllString(strings.ToLower(name), "-")
	return kind + "-" + strings.Trim(name, "-")
}

func TestCandidFuzzCorpus(t *testing.T) {
	unmarshal := map[string]string{}
	for name, arg := range candidUnmarshalSeeds(t) {
		unmarshal[name] = fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", arg)
	}
	checkCandidCorpus(t, "FuzzUnmarshalCandid", unmarshal)
}

// checkCandidCorpus checks that the corpus of target holds files, by name
// and content, and first writes them with -candid.write-corpus. Other
// files in the corpus, such as inputs the fuzzer found, are left alone.
func checkCandidCorpus(t *testing.T, target string, files map[string]string) {
	dir := filepath.Join("testdata", "fuzz", target)
	if *writeCandidCorpus {
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for name, content := range files {
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
		}
	}

	for name, content := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err, "run go test -run TestCandidFuzzCorpus -candid.write-corpus")
		require.Equal(t, content, string(got), "%s/%s is out of date", target, name)
	}
}
