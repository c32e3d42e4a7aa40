package sidecar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// A minimal JSON scanner over raw bytes. The sidecar rewrites documents by
// splicing: it finds the members it changes and copies every other byte as
// the client sent it, so untouched fields are never decoded or re-encoded
// (a bulk of large documents costs one pass of memchr, not a parse). It
// checks structure (strings, nesting, separators) and leaves the full
// validation of values to Elasticsearch, which sees the same bytes.

// member is one "key": value pair of an object, as offsets into the scanned bytes.
type member struct {
	// Key is the unescaped key.
	Key string
	// Start is the offset of the key's opening quote; End is one past the value.
	Start, End int
	// ValStart is the offset of the value's first byte.
	ValStart int
}

// errSyntax is wrapped by every scanner error.
var errSyntax = errors.New("invalid JSON")

func syntaxErr(off int, format string, args ...any) error {
	return fmt.Errorf("%w at offset %d: %s", errSyntax, off, fmt.Sprintf(format, args...))
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// objectMembers calls fn for every member of the JSON object that b holds
// (surrounding whitespace allowed). fn may stop early by returning errStop.
func objectMembers(b []byte, fn func(m member) error) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return syntaxErr(i, "expected an object")
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return trailing(b, i+1)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return syntaxErr(i, "expected a quoted key")
		}
		keyEnd, err := skipString(b, i)
		if err != nil {
			return err
		}
		key, err := unquote(b[i:keyEnd])
		if err != nil {
			return syntaxErr(i, "bad key: %v", err)
		}
		j := skipSpace(b, keyEnd)
		if j >= len(b) || b[j] != ':' {
			return syntaxErr(j, "expected ':' after key %q", key)
		}
		vs := skipSpace(b, j+1)
		ve, err := skipValue(b, vs)
		if err != nil {
			return err
		}
		if err := fn(member{Key: key, Start: i, ValStart: vs, End: ve}); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
		i = skipSpace(b, ve)
		if i >= len(b) {
			return syntaxErr(i, "unterminated object")
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return trailing(b, i+1)
		default:
			return syntaxErr(i, "expected ',' or '}'")
		}
	}
}

// errStop ends a scan early without an error.
var errStop = errors.New("stop")

// arrayElements calls fn with the offsets of every element of the JSON array b holds.
func arrayElements(b []byte, fn func(start, end int) error) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return syntaxErr(i, "expected an array")
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return trailing(b, i+1)
	}
	for {
		e, err := skipValue(b, i)
		if err != nil {
			return err
		}
		if err := fn(i, e); err != nil {
			return err
		}
		i = skipSpace(b, e)
		if i >= len(b) {
			return syntaxErr(i, "unterminated array")
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			return trailing(b, i+1)
		default:
			return syntaxErr(i, "expected ',' or ']'")
		}
	}
}

func trailing(b []byte, i int) error {
	if i = skipSpace(b, i); i != len(b) {
		return syntaxErr(i, "unexpected data after the value")
	}
	return nil
}

// skipString returns the offset after the string starting at b[i] == '"'.
// It jumps from quote to quote with IndexByte, so a multi-megabyte base64
// string costs a memchr.
func skipString(b []byte, i int) (int, error) {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return 0, syntaxErr(i, "unterminated string")
		}
		q := j + k
		// The quote is escaped when preceded by an odd number of backslashes.
		n := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q + 1, nil
		}
		j = q + 1
	}
}

// skipValue returns the offset after the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, syntaxErr(i, "expected a value")
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e, err := skipString(b, j)
				if err != nil {
					return 0, err
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, syntaxErr(i, "unterminated %c", b[i])
	default:
		j := i
		for j < len(b) {
			c := b[j]
			if c == ',' || c == '}' || c == ']' || isSpace(c) {
				break
			}
			j++
		}
		if j == i {
			return 0, syntaxErr(i, "expected a value")
		}
		return j, nil
	}
}

// unquote returns the string a raw JSON string literal (quotes included)
// denotes. Without escapes (and with valid UTF-8) it is a plain copy;
// otherwise encoding/json decides, invalid UTF-8 becoming U+FFFD, so that
// a key or index name reads the same here as in every JSON decoder that
// sees the bytes after us (FuzzObjectMembers found the difference).
func unquote(raw []byte) (string, error) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", errors.New("not a string")
	}
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

// unquoteBytes is unquote returning bytes; without escapes it aliases raw.
func unquoteBytes(raw []byte) ([]byte, error) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return nil, errors.New("not a string")
	}
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return raw[1 : len(raw)-1], nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	return []byte(s), nil
}

// appendQuoted appends s as a JSON string literal.
func appendQuoted(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // strings always marshal
	return append(b, q...)
}
