package ic

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	secpecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
)

// requestDomain is the domain separator the IC puts before a request id
// when a request is signed.
const requestDomain = "\x0Aic-request"

// maxPublicKeyDER bounds the DER public key accepted before any parsing:
// the largest supported key (uncompressed ECDSA) takes 91 bytes.
const maxPublicKeyDER = 128

// signatureSize is the size of every supported signature: Ed25519, and
// ECDSA as r||s with each half a 32-byte big-endian integer.
const signatureSize = 64

// Object identifiers of the supported key algorithms (RFC 8410, RFC 5480,
// SEC 2).
var (
	oidEd25519     = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidP256        = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidSecp256k1   = asn1.ObjectIdentifier{1, 3, 132, 0, 10}
)

// keyAlgorithm names a supported signature scheme.
type keyAlgorithm string

const (
	algEd25519   keyAlgorithm = "ed25519"
	algP256      keyAlgorithm = "ecdsa-p256"
	algSecp256k1 keyAlgorithm = "ecdsa-secp256k1"
)

// subjectPublicKeyInfo is the DER structure of a public key (RFC 5280).
type subjectPublicKeyInfo struct {
	Algorithm algorithmIdentifier
	PublicKey asn1.BitString
}

type algorithmIdentifier struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

// publicKey is a parsed sender public key that can check signatures.
type publicKey struct {
	alg keyAlgorithm

	ed25519   ed25519.PublicKey
	p256      *ecdsa.PublicKey
	secp256k1 *secp256k1.PublicKey
}

// parsePublicKey parses a DER-encoded public key as the IC accepts them
// from external users: Ed25519, ECDSA on P-256 or ECDSA on secp256k1.
// ECDSA points must be uncompressed, which is what agent-go, agent-js and
// dfx send. Any malformed, truncated or oversized input is an error.
func parsePublicKey(der []byte) (*publicKey, error) {
	if len(der) == 0 {
		return nil, errors.New("public key is empty")
	}
	if len(der) > maxPublicKeyDER {
		return nil, fmt.Errorf("public key of %d bytes is larger than %d",
			len(der), maxPublicKeyDER)
	}

	var spki subjectPublicKeyInfo
	rest, err := asn1.Unmarshal(der, &spki)
	if err != nil {
		return nil, fmt.Errorf("public key is not valid der: %w", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("public key has %d trailing bytes", len(rest))
	}
	if spki.PublicKey.BitLength != 8*len(spki.PublicKey.Bytes) {
		return nil, errors.New("public key bit string is not whole bytes")
	}

	alg, err := algorithmOf(spki.Algorithm)
	if err != nil {
		return nil, err
	}
	return newPublicKey(alg, spki.PublicKey.Bytes)
}

// algorithmOf maps an algorithm identifier to a supported scheme.
func algorithmOf(id algorithmIdentifier) (keyAlgorithm, error) {
	switch {
	case id.Algorithm.Equal(oidEd25519):
		if len(id.Parameters.FullBytes) != 0 {
			return "", errors.New("ed25519 public key has unexpected parameters")
		}
		return algEd25519, nil
	case id.Algorithm.Equal(oidECPublicKey):
		return curveOf(id.Parameters)
	}
	return "", fmt.Errorf("public key algorithm %s is not supported", id.Algorithm)
}

// curveOf reads the named curve of an ECDSA key.
func curveOf(params asn1.RawValue) (keyAlgorithm, error) {
	var curve asn1.ObjectIdentifier
	rest, err := asn1.Unmarshal(params.FullBytes, &curve)
	if err != nil {
		return "", fmt.Errorf("ecdsa public key has no named curve: %w", err)
	}
	if len(rest) != 0 {
		return "", errors.New("ecdsa curve parameter has trailing bytes")
	}

	switch {
	case curve.Equal(oidP256):
		return algP256, nil
	case curve.Equal(oidSecp256k1):
		return algSecp256k1, nil
	}
	return "", fmt.Errorf("ecdsa curve %s is not supported", curve)
}

// newPublicKey checks the raw key bytes of alg and prepares a verifier.
func newPublicKey(alg keyAlgorithm, raw []byte) (*publicKey, error) {
	key := &publicKey{alg: alg}
	switch alg {
	case algEd25519:
		if len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("ed25519 public key has %d bytes, want %d",
				len(raw), ed25519.PublicKeySize)
		}
		key.ed25519 = ed25519.PublicKey(raw)
		return key, nil
	}

	if len(raw) != 65 || raw[0] != 0x04 {
		return nil, fmt.Errorf("%s public key is not an uncompressed point (%d bytes)",
			alg, len(raw))
	}

	var err error
	switch alg {
	case algP256:
		key.p256, err = ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	case algSecp256k1:
		key.secp256k1, err = secp256k1.ParsePubKey(raw)
	}
	if err != nil {
		return nil, fmt.Errorf("%s public key is not a curve point: %w", alg, err)
	}
	return key, nil
}

// verify reports, as an error, whether sig is key's signature of msg.
//
// ECDSA signatures are 64 bytes r||s over SHA-256 of msg. Both the low-S
// and the high-S form of a signature are accepted: a request is known by
// its request id, not by its signature, so the second form of a valid
// signature lets nobody sign anything new.
func (k *publicKey) verify(msg, sig []byte) error {
	if len(sig) != signatureSize {
		return fmt.Errorf("%s signature has %d bytes, want %d",
			k.alg, len(sig), signatureSize)
	}

	var ok bool
	switch k.alg {
	case algEd25519:
		ok = ed25519.Verify(k.ed25519, msg, sig)
	case algP256:
		ok = verifyP256(k.p256, msg, sig)
	case algSecp256k1:
		ok = verifySecp256k1(k.secp256k1, msg, sig)
	}
	if !ok {
		return fmt.Errorf("%s signature does not verify", k.alg)
	}
	return nil
}

// verifyP256 checks a 64-byte r||s ECDSA signature over SHA-256 of msg.
func verifyP256(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	digest := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, digest[:], r, s)
}

// verifySecp256k1 checks a 64-byte r||s ECDSA signature over SHA-256 of
// msg. Values of r or s at or above the group order are refused rather
// than reduced.
func verifySecp256k1(pub *secp256k1.PublicKey, msg, sig []byte) bool {
	var r, s secp256k1.ModNScalar
	if r.SetByteSlice(sig[:32]) || s.SetByteSlice(sig[32:]) {
		return false
	}
	digest := sha256.Sum256(msg)
	return secpecdsa.NewSignature(&r, &s).Verify(digest[:], pub)
}

// verifyRequest checks that sig is the signature of the request id by the
// key whose DER encoding is der, and returns the parsed key.
func verifyRequest(der []byte, id [32]byte, sig []byte) (*publicKey, error) {
	key, err := parsePublicKey(der)
	if err != nil {
		return nil, err
	}

	msg := make([]byte, 0, len(requestDomain)+len(id))
	msg = append(msg, requestDomain...)
	msg = append(msg, id[:]...)
	if err := key.verify(msg, sig); err != nil {
		return nil, err
	}
	return key, nil
}
