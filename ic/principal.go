package ic

import (
	"encoding/base32"
	"fmt"
	"strings"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/asyncflow/asyncflow"
)

// ParsePrincipal reads a principal's textual form strictly: it must be
// exactly the form the principal encodes to (lower case, dashes every
// five characters, checksum right). agent-go's principal.Decode accepts
// upper case and ignores the last character's spare bits, so a typo
// there yields a different text for the same principal; here it is an
// error. Errors name the text, never the bytes it decoded to.
func ParsePrincipal(text string) (principal.Principal, error) {
	if text == "" {
		return principal.Principal{}, fmt.Errorf("%w: the text is empty",
			asyncflow.ErrInvalidPrincipal)
	}
	quoted := quoteShort(text)
	if len(text) > 63 {
		return principal.Principal{}, fmt.Errorf("%w: %s is too long",
			asyncflow.ErrInvalidPrincipal, quoted)
	}
	raw := strings.ToUpper(strings.ReplaceAll(text, "-", ""))
	if _, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(raw); err != nil {
		return principal.Principal{}, fmt.Errorf("%w: %s is not base32",
			asyncflow.ErrInvalidPrincipal, quoted)
	}

	p, err := principal.Decode(text)
	if err != nil || len(p.Raw) > maxPrincipalSize {
		return principal.Principal{}, fmt.Errorf("%w: %s has a bad length or checksum",
			asyncflow.ErrInvalidPrincipal, quoted)
	}
	if p.Encode() != text {
		return principal.Principal{}, fmt.Errorf("%w: %s is not a principal's exact text; "+
			"did you mean %s?", asyncflow.ErrInvalidPrincipal, quoted, p.Encode())
	}
	return p, nil
}
