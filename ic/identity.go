package ic

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/aviate-labs/agent-go/identity"
	aviatesecp "github.com/aviate-labs/secp256k1"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

// PEM block types of the key files dfx and OpenSSL write.
const (
	pemPrivateKey   = "PRIVATE KEY"
	pemECPrivateKey = "EC PRIVATE KEY"
	pemECParameters = "EC PARAMETERS"
)

// maxIdentityFile bounds the size of a key file read by LoadIdentity.
const maxIdentityFile = 64 << 10

// LoadIdentity reads a dfx-style PEM key file: an Ed25519 key in PKCS#8
// ("PRIVATE KEY", with or without the public key, as dfx writes it), a
// secp256k1 or P-256 key in SEC 1 form ("EC PRIVATE KEY", with or without
// a leading "EC PARAMETERS" block), or a P-256 key in PKCS#8. A public
// key stored beside the private key must match it. Errors name the file
// and the problem in one line.
func LoadIdentity(path string) (identity.Identity, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("ic: identity: %w", err)
	}
	defer f.Close()

	info, err := f.Stat()
	switch {
	case err != nil:
		return nil, fmt.Errorf("ic: identity: %w", err)
	case !info.Mode().IsRegular():
		return nil, fmt.Errorf("ic: identity %s: not a regular file", path)
	case info.Size() > maxIdentityFile:
		return nil, fmt.Errorf("ic: identity %s: file of %d bytes is too large for a key",
			path, info.Size())
	}

	data, err := io.ReadAll(io.LimitReader(f, maxIdentityFile+1))
	if err != nil {
		return nil, fmt.Errorf("ic: identity: %w", err)
	}
	if len(data) > maxIdentityFile {
		return nil, fmt.Errorf("ic: identity %s: file grew too large for a key", path)
	}
	id, err := ParseIdentityPEM(data)
	if err != nil {
		return nil, fmt.Errorf("ic: identity %s: %w", path, err)
	}
	return id, nil
}

// ParseIdentityPEM is LoadIdentity for PEM bytes already in memory.
func ParseIdentityPEM(data []byte) (identity.Identity, error) {
	params, key, err := splitPEM(data)
	if err != nil {
		return nil, err
	}

	switch key.Type {
	case pemPrivateKey:
		if params != nil {
			return nil, errors.New("ec parameters before a pkcs#8 key")
		}
		return parsePKCS8(key.Bytes)
	default:
		return parseSEC1(params, key.Bytes)
	}
}

// splitPEM finds the private key block and the optional EC PARAMETERS
// block before it. Text around the blocks is ignored, as OpenSSL does.
func splitPEM(data []byte) (params, key *pem.Block, err error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case key != nil:
			return nil, nil, fmt.Errorf("pem block %q after the private key", block.Type)
		case block.Type == pemECParameters && params == nil:
			params = block
		case block.Type == pemPrivateKey || block.Type == pemECPrivateKey:
			key = block
		default:
			return nil, nil, fmt.Errorf("unexpected pem block %q", block.Type)
		}
	}
	if key == nil {
		return nil, nil, errors.New("no private key pem block")
	}
	return params, key, nil
}

// oneAsymmetricKey is a PKCS#8 private key, version 1 (RFC 5208) or 2
// (RFC 5958, with the public key). dfx, through ring, writes the public
// key as an explicitly tagged bit string, RFC 5958 as an implicitly tagged
// one; both are read.
type oneAsymmetricKey struct {
	Version    int
	Algorithm  pkix.AlgorithmIdentifier
	PrivateKey []byte
	Attributes asn1.RawValue `asn1:"optional,tag:0"`
	PublicKey  asn1.RawValue `asn1:"optional,tag:1"`
}

// dfxEd25519Key is the PKCS#8 v2 form dfx writes for Ed25519.
type dfxEd25519Key struct {
	Version    int
	Algorithm  pkix.AlgorithmIdentifier
	PrivateKey []byte
	PublicKey  asn1.BitString `asn1:"explicit,tag:1"`
}

// parsePKCS8 reads an Ed25519 key, or hands a P-256 key to crypto/x509.
func parsePKCS8(der []byte) (identity.Identity, error) {
	var key oneAsymmetricKey
	rest, err := asn1.Unmarshal(der, &key)
	if err != nil {
		return nil, fmt.Errorf("pkcs#8 key is not valid der: %w", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("pkcs#8 key has %d trailing bytes", len(rest))
	}
	if key.Version != 0 && key.Version != 1 {
		return nil, fmt.Errorf("pkcs#8 version %d is not supported", key.Version)
	}

	if !key.Algorithm.Algorithm.Equal(oidEd25519) {
		return parsePKCS8ECDSA(der)
	}

	var seed []byte
	rest, err = asn1.Unmarshal(key.PrivateKey, &seed)
	if err != nil || len(rest) != 0 || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("ed25519 private key is not a %d-byte seed", ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)

	if len(key.PublicKey.FullBytes) != 0 {
		stored, err := pkcs8PublicKey(key.PublicKey)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(stored, pub) {
			return nil, errors.New("ed25519 public key does not match the private key")
		}
	}
	return identity.NewEd25519Identity(pub, priv)
}

// pkcs8PublicKey reads the [1] public key of a PKCS#8 v2 key in either
// tagging.
func pkcs8PublicKey(v asn1.RawValue) ([]byte, error) {
	var bits asn1.BitString
	var err error
	if v.IsCompound {
		var rest []byte
		rest, err = asn1.Unmarshal(v.Bytes, &bits)
		if err == nil && len(rest) != 0 {
			err = errors.New("trailing bytes")
		}
	} else {
		_, err = asn1.UnmarshalWithParams(v.FullBytes, &bits, "tag:1")
	}
	if err != nil {
		return nil, fmt.Errorf("pkcs#8 public key is malformed: %v", err)
	}
	if bits.BitLength != 8*len(bits.Bytes) {
		return nil, errors.New("pkcs#8 public key is not whole bytes")
	}
	return bits.Bytes, nil
}

// parsePKCS8ECDSA reads a PKCS#8 P-256 key.
func parsePKCS8ECDSA(der []byte) (identity.Identity, error) {
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("pkcs#8 key: %w", err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("pkcs#8 key of type %T is not ed25519 or p-256", key)
	}
	return identity.NewPrime256v1Identity(ec), nil
}

// ecPrivateKey is a SEC 1 private key (RFC 5915).
type ecPrivateKey struct {
	Version    int
	PrivateKey []byte
	Curve      asn1.ObjectIdentifier `asn1:"optional,explicit,tag:0"`
	PublicKey  asn1.BitString        `asn1:"optional,explicit,tag:1"`
}

// parseSEC1 reads a secp256k1 or P-256 "EC PRIVATE KEY", taking the curve
// from the key or, failing that, from the EC PARAMETERS block.
func parseSEC1(params *pem.Block, der []byte) (identity.Identity, error) {
	var key ecPrivateKey
	rest, err := asn1.Unmarshal(der, &key)
	if err != nil {
		return nil, fmt.Errorf("ec private key is not valid der: %w", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("ec private key has %d trailing bytes", len(rest))
	}
	if key.Version != 1 {
		return nil, fmt.Errorf("ec private key version %d is not 1", key.Version)
	}

	curve, err := sec1Curve(params, key.Curve)
	if err != nil {
		return nil, err
	}
	// SEC 1 writes the scalar in 32 bytes; agent-go drops its leading
	// zero bytes, so a shorter one is padded back.
	if len(key.PrivateKey) == 0 || len(key.PrivateKey) > 32 {
		return nil, fmt.Errorf("%s private key has %d bytes, want 32", curve,
			len(key.PrivateKey))
	}
	key.PrivateKey = append(make([]byte, 32-len(key.PrivateKey)), key.PrivateKey...)

	switch curve {
	case algSecp256k1:
		return newSecp256k1Identity(key)
	default:
		return newP256Identity(key)
	}
}

// sec1Curve returns the curve named by the key or by the parameters; if
// both name one, they must agree.
func sec1Curve(params *pem.Block, inKey asn1.ObjectIdentifier) (keyAlgorithm, error) {
	curve := inKey
	if params != nil {
		var fromParams asn1.ObjectIdentifier
		rest, err := asn1.Unmarshal(params.Bytes, &fromParams)
		if err != nil || len(rest) != 0 {
			return "", errors.New("ec parameters are not a named curve")
		}
		if len(curve) != 0 && !curve.Equal(fromParams) {
			return "", fmt.Errorf("ec parameters name curve %s, the key %s", fromParams, curve)
		}
		curve = fromParams
	}

	switch {
	case len(curve) == 0:
		return "", errors.New("ec private key names no curve")
	case curve.Equal(oidSecp256k1):
		return algSecp256k1, nil
	case curve.Equal(oidP256):
		return algP256, nil
	}
	return "", fmt.Errorf("ec curve %s is not supported", curve)
}

// newSecp256k1Identity checks a secp256k1 scalar and its stored public
// key, then makes agent-go's identity.
func newSecp256k1Identity(key ecPrivateKey) (identity.Identity, error) {
	var d secp256k1.ModNScalar
	if overflow := d.SetByteSlice(key.PrivateKey); overflow || d.IsZero() {
		return nil, errors.New("secp256k1 private key is out of range")
	}
	pub := secp256k1.NewPrivateKey(&d).PubKey()
	if err := matchPoint(key.PublicKey, pub.SerializeUncompressed(),
		pub.SerializeCompressed()); err != nil {
		return nil, err
	}

	priv, _ := aviatesecp.PrivKeyFromBytes(aviatesecp.S256(), key.PrivateKey)
	return identity.NewSecp256k1Identity(priv)
}

// newP256Identity checks a P-256 scalar and its stored public key, then
// makes agent-go's identity.
func newP256Identity(key ecPrivateKey) (identity.Identity, error) {
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), key.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("p-256 private key: %w", err)
	}
	point, err := priv.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("p-256 public key: %w", err)
	}
	compressed := elliptic.MarshalCompressed(elliptic.P256(), priv.X, priv.Y)
	if err := matchPoint(key.PublicKey, point, compressed); err != nil {
		return nil, err
	}
	return identity.NewPrime256v1Identity(priv), nil
}

// matchPoint checks a stored public key, if any, against the derived one
// in either point form.
func matchPoint(stored asn1.BitString, uncompressed, compressed []byte) error {
	if stored.BitLength == 0 {
		return nil
	}
	if bytes.Equal(stored.Bytes, uncompressed) || bytes.Equal(stored.Bytes, compressed) {
		return nil
	}
	return errors.New("ec public key does not match the private key")
}

// NewIdentityPEM makes a new Ed25519 identity and returns it with its PEM
// encoding in the PKCS#8 v2 form dfx writes (the public key included), as
// LoadIdentity reads it.
func NewIdentityPEM() ([]byte, identity.Identity, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ic: new ed25519 key: %w", err)
	}

	seed, err := asn1.Marshal(priv.Seed())
	if err != nil {
		return nil, nil, fmt.Errorf("ic: encode ed25519 seed: %w", err)
	}
	der, err := asn1.Marshal(dfxEd25519Key{
		Version:    1,
		Algorithm:  pkix.AlgorithmIdentifier{Algorithm: oidEd25519},
		PrivateKey: seed,
		PublicKey:  asn1.BitString{Bytes: pub, BitLength: 8 * len(pub)},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("ic: encode ed25519 key: %w", err)
	}

	id, err := identity.NewEd25519Identity(pub, priv)
	if err != nil {
		return nil, nil, fmt.Errorf("ic: new ed25519 identity: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), id, nil
}

// WriteIdentity writes a PEM key file readable by its owner only (mode
// 0600). It refuses to overwrite an existing file, and removes what it
// wrote if writing fails, so a key is never half replaced.
func WriteIdentity(path string, pemData []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("ic: write identity: %w", err)
	}

	_, err = f.Write(pemData)
	if err == nil {
		err = f.Sync()
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("ic: write identity %s: %w", path, err)
	}
	return nil
}
