package eeprom

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
)

// PublicKeyBin converts a PEM RSA-2048 public key ("PUBLIC KEY" or "RSA
// PUBLIC KEY") into the bootloader's pubkey.bin layout: the modulus as 256
// bytes, then the exponent as 8 bytes, both little-endian.
func PublicKeyBin(pemData []byte) ([]byte, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("public key: no PEM block found: pass the public key file (openssl rsa -in private.pem -pubout -out public.pem)")
	}
	var key *rsa.PublicKey
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key is %T, the bootloader verifies only RSA-2048 signatures", k)
		}
		key = rk
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		key = k
	case "RSA PRIVATE KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		// Refused rather than converted so a private key never ends up being
		// handled (or copied around) where only the public half belongs.
		return nil, errors.New("public key: this is a private key; pass its public half (openssl rsa -in private.pem -pubout -out public.pem)")
	default:
		return nil, fmt.Errorf("public key: PEM block is %q, want \"PUBLIC KEY\"", block.Type)
	}
	if key.N.BitLen() != 2048 {
		return nil, fmt.Errorf("public key is RSA-%d, the bootloader supports only RSA-2048", key.N.BitLen())
	}
	out := make([]byte, 0, 256+8)
	out = append(out, littleEndian(key.N, 256)...)
	out = append(out, littleEndian(big.NewInt(int64(key.E)), 8)...)
	return out, nil
}

func littleEndian(n *big.Int, size int) []byte {
	b := n.FillBytes(make([]byte, size))
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return b
}
