package ic

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	aviatesecp "github.com/aviate-labs/secp256k1"
	"github.com/stretchr/testify/require"
)

// RFC 8032 test 1: an Ed25519 seed and its public key.
const (
	rfc8032Seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
	rfc8032Pub  = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
	// ed25519DERPrefix is the DER public key header before the 32 key bytes.
	ed25519DERPrefix = "302a300506032b6570032100"
)

// pkcs8PEM wraps hex DER in a "PRIVATE KEY" block.
func pkcs8PEM(t *testing.T, derHex string) []byte {
	t.Helper()
	der, err := hex.DecodeString(derHex)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func rfc8032Sender(t *testing.T) principal.Principal {
	der, err := hex.DecodeString(ed25519DERPrefix + rfc8032Pub)
	require.NoError(t, err)
	return principal.NewSelfAuthenticating(der)
}

func TestParseIdentityReadsEd25519PKCS8Forms(t *testing.T) {
	for name, derHex := range map[string]string{
		// Version 1 (RFC 5208), as crypto/x509 and agent-go write it.
		"v1": "302e020100300506032b657004220420" + rfc8032Seed,
		// Version 2 with an explicitly tagged public key, as dfx writes it.
		"v2 dfx": "3053020101300506032b657004220420" + rfc8032Seed + "a123032100" + rfc8032Pub,
		// Version 2 with an implicitly tagged public key (RFC 5958).
		"v2 rfc 5958": "3051020101300506032b657004220420" + rfc8032Seed + "812100" + rfc8032Pub,
	} {
		t.Run(name, func(t *testing.T) {
			id, err := ParseIdentityPEM(pkcs8PEM(t, derHex))

			require.NoError(t, err)
			require.Equal(t, rfc8032Sender(t), id.Sender())
			msg := []byte("hello")
			require.True(t, id.Verify(msg, id.Sign(msg)))
		})
	}
}

func TestParseIdentityRefusesMismatchedEd25519PublicKey(t *testing.T) {
	otherPub := strings.Repeat("11", 32)
	data := pkcs8PEM(t, "3053020101300506032b657004220420"+rfc8032Seed+"a123032100"+otherPub)

	_, err := ParseIdentityPEM(data)

	require.ErrorContains(t, err, "ed25519 public key does not match the private key")
}

func TestParseIdentityReadsSecp256k1WithAndWithoutParameters(t *testing.T) {
	id, err := identity.NewRandomSecp256k1Identity()
	require.NoError(t, err)
	withParams, err := id.ToPEM()
	require.NoError(t, err)
	_, keyOnly, found := strings.Cut(string(withParams), "-----END EC PARAMETERS-----\n")
	require.True(t, found)

	for name, data := range map[string][]byte{
		"with ec parameters":    withParams,
		"without ec parameters": []byte(keyOnly),
	} {
		t.Run(name, func(t *testing.T) {
			loaded, err := ParseIdentityPEM(data)

			require.NoError(t, err)
			require.Equal(t, id.Sender(), loaded.Sender())
			require.Equal(t, id.PublicKey(), loaded.PublicKey())
		})
	}
}

func TestParseIdentityReadsAgentGoSecp256k1Vector(t *testing.T) {
	// The secp256k1 key file of agent-go's tests, as OpenSSL writes it.
	data := `-----BEGIN EC PARAMETERS-----
BgUrgQQACg==
-----END EC PARAMETERS-----
-----BEGIN EC PRIVATE KEY-----
MHQCAQEEIAgy7nZEcVHkQ4Z1Kdqby8SwyAiyKDQmtbEHTIM+WNeBoAcGBSuBBAAK
oUQDQgAEgO87rJ1ozzdMvJyZQ+GABDqUxGLvgnAnTlcInV3NuhuPv4O3VGzMGzeB
N3d26cRxD99TPtm8uo2OuzKhSiq6EQ==
-----END EC PRIVATE KEY-----
`
	wantDER := "3056301006072a8648ce3d020106052b8104000a0342000480ef3bac9d68cf374c" +
		"bc9c9943e180043a94c462ef8270274e57089d5dcdba1b8fbf83b7546ccc1b3781377776e9" +
		"c4710fdf533ed9bcba8d8ebb32a14a2aba11"

	id, err := ParseIdentityPEM([]byte(data))

	require.NoError(t, err)
	require.Equal(t, wantDER, hex.EncodeToString(id.PublicKey()))
}

func TestParseIdentityReadsP256Forms(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	want := identity.NewPrime256v1Identity(key)
	sec1, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	params, err := hex.DecodeString("06082a8648ce3d030107")
	require.NoError(t, err)

	for name, data := range map[string][]byte{
		"ec private key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}),
		"with ec parameters": append(
			pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: params}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...),
		"pkcs8": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	} {
		t.Run(name, func(t *testing.T) {
			id, err := ParseIdentityPEM(data)

			require.NoError(t, err)
			require.Equal(t, want.Sender(), id.Sender())
			msg := []byte("hello")
			require.True(t, want.Verify(msg, id.Sign(msg)))
		})
	}
}

// PEM blocks of the wrong kind for a key file.
const (
	certificatePEM = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
	publicKeyPEM   = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
)

func TestParseIdentityRefusesBadFiles(t *testing.T) {
	secp, err := identity.NewRandomSecp256k1Identity()
	require.NoError(t, err)
	secpPEM, err := secp.ToPEM()
	require.NoError(t, err)
	p256Params := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS",
		Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	_, secpKey, _ := strings.Cut(string(secpPEM), "-----END EC PARAMETERS-----\n")

	for name, tc := range map[string]struct {
		data string
		want string
	}{
		"empty":        {"", "no private key pem block"},
		"not pem":      {"hello", "no private key pem block"},
		"certificate":  {certificatePEM, "CERTIFICATE"},
		"garbage der":  {string(pkcs8PEM(t, "3003020101")), "pkcs#8 key is not valid der"},
		"short seed":   {string(pkcs8PEM(t, "300e020100300506032b6570040204")), "pkcs#8"},
		"curve clash":  {string(p256Params) + secpKey, "ec parameters name curve"},
		"two keys":     {string(secpPEM) + secpKey, "after the private key"},
		"public block": {publicKeyPEM, "PUBLIC KEY"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseIdentityPEM([]byte(tc.data))
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "\n")
		})
	}
}

func TestNewIdentityPEMRoundTripsThroughAFile(t *testing.T) {
	data, id, err := NewIdentityPEM()
	require.NoError(t, err)
	// The base64 of dfx's PKCS#8 v2 header.
	require.True(t, strings.HasPrefix(string(data),
		"-----BEGIN PRIVATE KEY-----\nMFMCAQEwBQYDK2VwBCIEI"))
	path := filepath.Join(t.TempDir(), "identity.pem")

	require.NoError(t, WriteIdentity(path, data))
	loaded, err := LoadIdentity(path)

	require.NoError(t, err)
	require.Equal(t, id.Sender(), loaded.Sender())
	require.Equal(t, id.PublicKey(), loaded.PublicKey())
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}

func TestNewIdentityPEMMatchesDfxLayout(t *testing.T) {
	data, id, err := NewIdentityPEM()
	require.NoError(t, err)
	block, _ := pem.Decode(data)
	require.NotNil(t, block)

	der := hex.EncodeToString(block.Bytes)
	pub := hex.EncodeToString(id.PublicKey()[len(id.PublicKey())-32:])
	require.Len(t, block.Bytes, 85)
	require.True(t, strings.HasPrefix(der, "3053020101300506032b657004220420"))
	require.True(t, strings.HasSuffix(der, "a123032100"+pub))
}

func TestWriteIdentityRefusesToOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.pem")
	require.NoError(t, os.WriteFile(path, []byte("keep me"), 0o600))
	data, _, err := NewIdentityPEM()
	require.NoError(t, err)

	err = WriteIdentity(path, data)

	require.ErrorIs(t, err, os.ErrExist)
	kept, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "keep me", string(kept))
}

func TestLoadIdentityErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not a key"), 0o600))
	missing := filepath.Join(dir, "missing.pem")

	for path, want := range map[string]string{
		garbage: "no private key pem block",
		missing: "no such file",
	} {
		_, err := LoadIdentity(path)
		require.ErrorContains(t, err, path)
		require.ErrorContains(t, err, want)
		require.NotContains(t, err.Error(), "\n")
	}
}

// TestLoadedIdentityIsUsableByAgentGo checks that agent-go reads the PEM
// this package writes, so keys move freely between the two.
func TestLoadedIdentityIsUsableByAgentGo(t *testing.T) {
	data, id, err := NewIdentityPEM()
	require.NoError(t, err)

	back, err := identity.NewEd25519IdentityFromPEM(data)

	require.NoError(t, err)
	require.Equal(t, id.Sender(), back.Sender())
}

func TestLoadIdentityRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.pem")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	zero := filepath.Join(dir, "zero.pem")
	require.NoError(t, os.Symlink("/dev/zero", zero))

	for _, path := range []string{fifo, zero, dir} {
		_, err := LoadIdentity(path)
		require.ErrorContains(t, err, "not a regular file", path)
	}
}

// agent-go writes a secp256k1 scalar without its leading zero bytes, so one
// key in 256 has a 31-byte scalar in its PEM file.
func TestParseIdentityReadsAScalarWithoutItsLeadingZeros(t *testing.T) {
	scalar := append([]byte{0}, bytes.Repeat([]byte{0x11}, 31)...)
	priv, _ := aviatesecp.PrivKeyFromBytes(aviatesecp.S256(), scalar)
	id, err := identity.NewSecp256k1Identity(priv)
	require.NoError(t, err)
	data, err := id.ToPEM()
	require.NoError(t, err)

	loaded, err := ParseIdentityPEM(data)
	require.NoError(t, err)
	require.Equal(t, id.Sender(), loaded.Sender())
	msg := []byte("signed by the loaded key")
	require.True(t, id.Verify(msg, loaded.Sign(msg)))
}
