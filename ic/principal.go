package ic

import (
	"encoding/base32"
	"fmt"
	"strings"

	"github.com/aviate-labs/agent-go/principal"
)

// ParsePrincipal reads a principal's textual form strictly: it must be
// exactly the form the principal encodes to (lower case, dashes every
// five characters, checksum right). agent-go's principal.Decode accepts
// upper case and ignores the last character's spare bits, so a typo
// there yields a different text for the same principal; here it is an
// error. Errors name the text, never the bytes it decoded to.
func ParsePrincipal(text string) (principal.Principal, error) {
	if text == "" {
		return principal.Principal{}, fmt.Errorf("principal text is empty")
	}
	quoted := quoteShort(text)
	if len(text) > 63 {
		return principal.Principal{}, fmt.Errorf("%s is too long for a principal", quoted)
	}
	raw := strings.ToUpper(strings.ReplaceAll(text, "-", ""))
	if _, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(raw); err != nil {
		return principal.Principal{}, fmt.Errorf("%s is not a principal: not base32", quoted)
	}

	p, err := principal.Decode(text)
	if err != nil || len(p.Raw) > maxPrincipalSize {
		return principal.Principal{}, fmt.Errorf("%s is not a principal: bad length or checksum",
			quoted)
	}
	if p.Encode() != text {
		return principal.Principal{}, fmt.Errorf("%s is not a principal's exact text; "+
			"did you mean %s?", quoted, p.Encode())
	}
	return p, nil
}
