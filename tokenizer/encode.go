package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Per-byte classes for ASCII, derived once from the generated tables so that
// the common case never touches a range table.
const (
	normKeep  = iota
	normDrop  // clean_text deletes it (control characters)
	normSpace // clean_text turns it into ' '
)

const (
	preWord  = iota
	preSpace // BertPreTokenizer splits on it and drops it
	prePunct // BertPreTokenizer isolates it as its own word
)

var asciiNorm, asciiPre [utf8.RuneSelf]uint8

func init() {
	for c := rune(0); c < utf8.RuneSelf; c++ {
		switch {
		case unicode.Is(hfControl, c):
			asciiNorm[c] = normDrop
		case unicode.Is(hfCleanSpace, c):
			asciiNorm[c] = normSpace
		}
		switch {
		case unicode.Is(hfSpace, c):
			asciiPre[c] = preSpace
		case unicode.Is(hfPunct, c):
			asciiPre[c] = prePunct
		}
	}
}

// appendBody appends the ids of text (no special tokens) to out and returns
// it. It stops once out has at least limit ids; it may overshoot by the pieces
// of one word, and the caller trims.
//
// HF first splits the raw text on its added tokens (leftmost-longest literal
// matches), then normalises, pre-tokenises and WordPiece-encodes each piece in
// between; the same happens here.
func (t *Tokenizer) appendBody(out []int64, text string, limit int) []int64 {
	s := t.scratch.Get().(*scratch)
	defer t.scratch.Put(s)
	if len(t.added) == 0 {
		return t.appendText(s, out, text, limit)
	}
	// next[i] caches where added token i next occurs at or after pos:
	// -1 none, -2 not searched yet.
	next := s.next[:0]
	for range t.added {
		next = append(next, -2)
	}
	s.next = next
	pos := 0
	for pos < len(text) && len(out) < limit {
		best, bestAt := -1, len(text)
		for i, a := range t.added {
			if next[i] != -1 && next[i] < pos {
				if j := strings.Index(text[pos:], a.content); j >= 0 {
					next[i] = pos + j
				} else {
					next[i] = -1
				}
			}
			// Strict < keeps the longest of tokens starting at the same
			// place: t.added is sorted longest first.
			if next[i] >= 0 && next[i] < bestAt {
				best, bestAt = i, next[i]
			}
		}
		if best < 0 {
			return t.appendText(s, out, text[pos:], limit)
		}
		if bestAt > pos {
			out = t.appendText(s, out, text[pos:bestAt], limit)
			if len(out) >= limit {
				return out
			}
		}
		out = append(out, t.added[best].id)
		pos = bestAt + len(t.added[best].content)
	}
	return out
}

// appendText encodes text that contains no added token, chunk by chunk. A
// chunk ends just after an ASCII space, tab, LF or CR: those are word
// boundaries under every normaliser setting and NFD starters, so encoding
// chunks separately gives exactly the ids of encoding the whole text.
func (t *Tokenizer) appendText(s *scratch, out []int64, text string, limit int) []int64 {
	for text != "" && len(out) < limit {
		n := len(text)
		if n > t.chunk {
			if k := strings.IndexAny(text[t.chunk:], " \t\n\r"); k >= 0 {
				n = t.chunk + k + 1
			}
		}
		out = t.appendWords(out, t.normalize(s, text[:n]), limit)
		text = text[n:]
	}
	return out
}

// normalize applies BertNormalizer to text in HF's order: clean_text,
// handle_chinese_chars, strip_accents (NFD, drop Mn), lowercase. The result
// aliases s's buffers and is valid until the next call with s.
func (t *Tokenizer) normalize(s *scratch, text string) []byte {
	buf := s.a[:0]
	ascii := true
	for i := 0; i < len(text); {
		c := text[i]
		if c < utf8.RuneSelf {
			i++
			if t.clean {
				switch asciiNorm[c] {
				case normDrop:
					continue
				case normSpace:
					c = ' '
				}
			}
			buf = append(buf, c)
			continue
		}
		ascii = false
		r, size := utf8.DecodeRuneInString(text[i:])
		i += size // invalid bytes decode as U+FFFD, one byte at a time
		if t.clean {
			if unicode.Is(hfControl, r) { // includes U+FFFD
				continue
			}
			if unicode.Is(hfCleanSpace, r) {
				buf = append(buf, ' ')
				continue
			}
		}
		if t.chinese && unicode.Is(hfChinese, r) {
			buf = append(buf, ' ')
			buf = utf8.AppendRune(buf, r)
			buf = append(buf, ' ')
			continue
		}
		buf = utf8.AppendRune(buf, r)
	}
	s.a = buf

	if t.strip && !ascii {
		d := norm.NFD.Append(s.b[:0], buf...)
		kept := d[:0]
		for i := 0; i < len(d); {
			if d[i] < utf8.RuneSelf {
				kept = append(kept, d[i])
				i++
				continue
			}
			r, size := utf8.DecodeRune(d[i:])
			if !unicode.Is(hfMn, r) {
				kept = append(kept, d[i:i+size]...) // in place: kept never passes i
			}
			i += size
		}
		s.a, s.b = kept, buf // swap so both buffers stay owned by s
		buf = kept
	}

	if t.lower {
		if ascii {
			for i, c := range buf {
				if 'A' <= c && c <= 'Z' {
					buf[i] = c + ('a' - 'A')
				}
			}
		} else {
			l := s.b[:0]
			for i := 0; i < len(buf); {
				c := buf[i]
				if c < utf8.RuneSelf {
					if 'A' <= c && c <= 'Z' {
						c += 'a' - 'A'
					}
					l = append(l, c)
					i++
					continue
				}
				r, size := utf8.DecodeRune(buf[i:])
				if m, ok := hfLower[r]; ok {
					l = append(l, m...)
				} else {
					l = append(l, buf[i:i+size]...)
				}
				i += size
			}
			s.a, s.b = l, buf
			buf = l
		}
	}
	return buf
}

// appendWords runs BertPreTokenizer (split on whitespace, isolate each
// punctuation character) and WordPiece on normalised text.
func (t *Tokenizer) appendWords(out []int64, b []byte, limit int) []int64 {
	start := -1
	for i := 0; i < len(b); {
		var cls uint8
		size := 1
		if c := b[i]; c < utf8.RuneSelf {
			cls = asciiPre[c]
		} else {
			var r rune
			r, size = utf8.DecodeRune(b[i:])
			switch {
			case unicode.Is(hfSpace, r):
				cls = preSpace
			case unicode.Is(hfPunct, r):
				cls = prePunct
			}
		}
		if cls != preWord {
			if start >= 0 {
				out = t.wordPiece(out, b[start:i])
				start = -1
				if len(out) >= limit {
					return out
				}
			}
			if cls == prePunct {
				out = t.wordPiece(out, b[i:i+size])
				if len(out) >= limit {
					return out
				}
			}
		} else if start < 0 {
			start = i
		}
		i += size
	}
	if start >= 0 {
		out = t.wordPiece(out, b[start:])
	}
	return out
}

// wordPiece appends the ids of one word: greedy longest-match-first against
// the vocabulary, continuation pieces looked up without their "##" prefix.
// A word longer than max_input_chars_per_word characters, or one with a part
// that matches nothing, becomes a single [UNK], as in HF.
func (t *Tokenizer) wordPiece(out []int64, word []byte) []int64 {
	if utf8.RuneCount(word) > t.maxChars {
		return append(out, t.unkID)
	}
	mark := len(out)
	for start := 0; start < len(word); {
		m, longest := t.vocab, t.maxInit
		if start > 0 {
			m, longest = t.cont, t.maxCont
		}
		// No key is longer than `longest` bytes, so start there, on a rune boundary.
		end := min(len(word), start+longest)
		for end > start && end < len(word) && !utf8.RuneStart(word[end]) {
			end--
		}
		for end > start {
			if id, ok := m[string(word[start:end])]; ok { // no allocation: map index by []byte
				out = append(out, int64(id))
				break
			}
			_, size := utf8.DecodeLastRune(word[start:end])
			end -= size
		}
		if end == start {
			return append(out[:mark], t.unkID)
		}
		start = end
	}
	return out
}
