package ic

import (
	"bytes"
	"crypto/elliptic"
	"math/big"
	"testing"

	agent "github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/stretchr/testify/require"
)

// testIdentities returns one identity of every supported key type.
func testIdentities(t *testing.T) map[keyAlgorithm]identity.Identity {
	t.Helper()
	ed, err := identity.NewRandomEd25519Identity()
	require.NoError(t, err)
	k1, err := identity.NewRandomSecp256k1Identity()
	require.NoError(t, err)
	p256, err := identity.NewRandomPrime256v1Identity()
	require.NoError(t, err)
	return map[keyAlgorithm]identity.Identity{
		algEd25519: ed, algSecp256k1: k1, algP256: p256,
	}
}

func TestVerifyAcceptsAgentGoSignatures(t *testing.T) {
	for alg, id := range testIdentities(t) {
		t.Run(string(alg), func(t *testing.T) {
			rid := agent.RequestID(randomBytes(t, 32))

			key, err := verifyRequest(id.PublicKey(), rid, rid.Sign(id))

			require.NoError(t, err)
			require.Equal(t, alg, key.alg)
		})
	}
}

func TestVerifyRefusesSignatureOfOtherRequest(t *testing.T) {
	for alg, id := range testIdentities(t) {
		t.Run(string(alg), func(t *testing.T) {
			signedID := agent.RequestID(randomBytes(t, 32))
			otherID := agent.RequestID(randomBytes(t, 32))

			_, err := verifyRequest(id.PublicKey(), otherID, signedID.Sign(id))

			require.ErrorContains(t, err, "signature does not verify")
		})
	}
}

func TestVerifyRefusesSignaturesOfWrongLength(t *testing.T) {
	for alg, id := range testIdentities(t) {
		t.Run(string(alg), func(t *testing.T) {
			rid := agent.RequestID(randomBytes(t, 32))
			sig := rid.Sign(id)
			for _, n := range []int{0, 1, 3, 32, 63} {
				_, err := verifyRequest(id.PublicKey(), rid, sig[:n])
				require.ErrorContains(t, err, "want 64")
			}
			_, err := verifyRequest(id.PublicKey(), rid, append(sig, 0))
			require.ErrorContains(t, err, "want 64")
		})
	}
}

// TestParsePublicKeyRefusesEveryTruncation feeds every prefix of valid
// keys, and bytes flipped one at a time: each must give an error or a
// key, never a panic.
func TestParsePublicKeyRefusesEveryTruncation(t *testing.T) {
	for alg, id := range testIdentities(t) {
		t.Run(string(alg), func(t *testing.T) {
			der := id.PublicKey()
			for n := range len(der) {
				_, err := parsePublicKey(der[:n])
				require.Error(t, err, "prefix of %d bytes", n)
			}
			for i := range der {
				broken := bytes.Clone(der)
				broken[i] ^= 0xff
				require.NotPanics(t, func() { _, _ = parsePublicKey(broken) })
			}
		})
	}
}

// highS returns the other valid form of an ECDSA r||s signature: s
// replaced by n - s.
func highS(sig []byte, order *big.Int) []byte {
	s := new(big.Int).SetBytes(sig[32:])
	out := bytes.Clone(sig)
	new(big.Int).Sub(order, s).FillBytes(out[32:])
	return out
}

func TestVerifyAcceptsBothFormsOfECDSASignature(t *testing.T) {
	orders := map[keyAlgorithm]*big.Int{
		algP256:      elliptic.P256().Params().N,
		algSecp256k1: secp256k1.S256().N,
	}
	ids := testIdentities(t)
	for alg, order := range orders {
		t.Run(string(alg), func(t *testing.T) {
			rid := agent.RequestID(randomBytes(t, 32))
			sig := rid.Sign(ids[alg])

			_, err := verifyRequest(ids[alg].PublicKey(), rid, highS(sig, order))

			require.NoError(t, err)
		})
	}
}

func TestVerifyRefusesECDSAScalarsOutOfRange(t *testing.T) {
	ids := testIdentities(t)
	for _, alg := range []keyAlgorithm{algP256, algSecp256k1} {
		t.Run(string(alg), func(t *testing.T) {
			rid := agent.RequestID(randomBytes(t, 32))
			sig := rid.Sign(ids[alg])
			order := secp256k1.S256().N
			if alg == algP256 {
				order = elliptic.P256().Params().N
			}

			for _, r := range []*big.Int{
				big.NewInt(0),
				order,
				new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1)),
			} {
				broken := bytes.Clone(sig)
				r.FillBytes(broken[:32])
				_, err := verifyRequest(ids[alg].PublicKey(), rid, broken)
				require.ErrorContains(t, err, "does not verify")
			}
		})
	}
}
