package driver

import "fmt"

// MaxIDLength bounds an ID so that it always fits in one path component
// together with the suffixes backends add for staging names.
const MaxIDLength = 128

// ValidateID reports whether id may name a layer. IDs become path
// components, dataset names and device names, so the alphabet is kept to
// what all of those accept: ASCII letters, digits, '_', '-' and '.', not
// starting with '.' or '-'.
func ValidateID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidID)
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidID, len(id), MaxIDLength)
	}
	if id[0] == '.' || id[0] == '-' {
		return fmt.Errorf("%w: %q starts with %q", ErrInvalidID, id, id[0])
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return fmt.Errorf("%w: %q has byte %q at %d", ErrInvalidID, id, c, i)
		}
	}
	return nil
}
