package ic

import (
	"strings"
	"testing"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/stretchr/testify/require"

	"github.com/asyncflow/asyncflow"
)

func TestParsePrincipalAcceptsExactTextOnly(t *testing.T) {
	p := principal.NewSelfAuthenticating([]byte("some key"))
	text := p.Encode()

	got, err := ParsePrincipal(text)
	require.NoError(t, err)
	require.Equal(t, p, got)
	got, err = ParsePrincipal("aaaaa-aa")
	require.NoError(t, err)
	require.Empty(t, got.Raw, "the management canister")

	last := text[len(text)-1]
	typo := text[:len(text)-1] + string(last+1)
	if _, err := principal.Decode(typo); err != nil {
		typo = text[:len(text)-1] + string(last-1)
	}
	decoded, err := principal.Decode(typo)
	require.NoError(t, err, "agent-go reads the typo %s", typo)
	require.Equal(t, p, decoded, "as the same principal")

	cases := map[string]string{
		"empty":                  "",
		"upper case":             strings.ToUpper(text),
		"typo in the spare bits": typo,
		"bad checksum":           "aaaaa-ab",
		"not base32":             "hello, world",
		"misplaced dash":         strings.Replace(text, "-", "", 1),
		"too long":               strings.Repeat("aaaaa-", 20) + "aa",
	}
	for name, in := range cases {
		_, err := ParsePrincipal(in)
		require.ErrorIs(t, err, asyncflow.ErrInvalidPrincipal, name)
		require.True(t, isPrintable(err.Error()), "%s: %q", name, err.Error())
	}
}

func isPrintable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return false
		}
	}
	return true
}
