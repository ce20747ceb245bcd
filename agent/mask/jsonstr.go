package mask

import (
	"unicode/utf16"
	"unicode/utf8"
)

// decodeString appends to dst the decoded form of raw, the bytes between the
// quotes of a valid JSON string, as encoding/json decodes it (a lone
// surrogate becomes U+FFFD) except that bytes that are not UTF-8 are kept as
// they are. If off is not nil, it gets for each decoded byte the offset in
// raw of the escape or byte it came from, or -1 for the later bytes of an
// escape that decodes to several, and finally len(raw).
func decodeString(dst, raw []byte, off *[]int) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			if off != nil {
				*off = append(*off, i)
			}
			dst = append(dst, c)
			i++
			continue
		}
		n := len(dst)
		var w int
		dst, w = decodeEscape(dst, raw[i:])
		if off != nil {
			*off = append(*off, i)
			for k := n + 1; k < len(dst); k++ {
				*off = append(*off, -1)
			}
		}
		i += w
	}
	if off != nil {
		*off = append(*off, len(raw))
	}
	return dst
}

// decodeEscape appends the decoding of the escape at the start of e and
// returns how many bytes of e it took.
func decodeEscape(dst, e []byte) ([]byte, int) {
	switch e[1] {
	case 'b':
		return append(dst, '\b'), 2
	case 'f':
		return append(dst, '\f'), 2
	case 'n':
		return append(dst, '\n'), 2
	case 'r':
		return append(dst, '\r'), 2
	case 't':
		return append(dst, '\t'), 2
	case 'u':
		r := hex4(e[2:6])
		if utf16.IsSurrogate(r) {
			if len(e) >= 12 && e[6] == '\\' && e[7] == 'u' {
				if pair := utf16.DecodeRune(r, hex4(e[8:12])); pair != utf8.RuneError {
					return utf8.AppendRune(dst, pair), 12
				}
			}
			r = utf8.RuneError
		}
		return utf8.AppendRune(dst, r), 6
	}
	return append(dst, e[1]), 2 // '"', '\\', '/'
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendJSONString appends s escaped for the inside of a JSON string:
// quotes, backslashes and control characters are escaped, other bytes are
// kept.
func appendJSONString(dst, s []byte) []byte {
	const hexDigits = "0123456789abcdef"
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// appendPathKey appends an object key to a JSON path: .key for a name of
// ASCII letters, digits and underscores that does not start with a digit,
// else ['key'] with the escapes of RFC 9535.
func appendPathKey(p, key []byte) []byte {
	if isName(key) {
		return append(append(p, '.'), key...)
	}
	p = append(p, '[', '\'')
	for _, c := range key {
		switch {
		case c == '\'' || c == '\\':
			p = append(p, '\\', c)
		case c < 0x20:
			p = appendJSONString(p, []byte{c})
		default:
			p = append(p, c)
		}
	}
	return append(p, '\'', ']')
}

func isName(key []byte) bool {
	if len(key) == 0 || '0' <= key[0] && key[0] <= '9' {
		return false
	}
	for _, c := range key {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
