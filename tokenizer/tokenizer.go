// Package tokenizer is a BERT WordPiece tokenizer that reproduces the Hugging
// Face `tokenizers` library exactly for BERT/DistilBERT-style tokenizer.json
// files, such as distilbert-base-multilingual-cased's, which the production
// clip_text model uses.
//
// The gateway tokenises text itself and sends input_ids/attention_mask to
// Triton, so any disagreement with the tokenizer the model was trained with is
// a silent quality bug: the model still answers, just with a worse embedding.
// Hence the goal is bit-exact agreement, checked against HF's own output in
// the tests (model_repository/testdata/texts.json and
// expected/tokenizer_corpus.json), not "close enough".
//
// Supported tokenizer.json shape (anything else is rejected by Load):
//   - normalizer: BertNormalizer (clean_text, handle_chinese_chars,
//     strip_accents, lowercase), or null;
//   - pre_tokenizer: BertPreTokenizer;
//   - model: WordPiece (unk_token, continuing_subword_prefix,
//     max_input_chars_per_word);
//   - post_processor: TemplateProcessing or BertProcessing (e.g. [CLS] $A
//     [SEP]), or null;
//   - added_tokens: matched literally in the raw text (normalized: false, no
//     lstrip/rstrip/single_word), as HF does: a user typing "[MASK]" gets the
//     [MASK] id, exactly like the Python tokenizer.
//
// Character classes come from tables generated from the HF library itself
// (gen_tables.py), not from Go's unicode package: HF's punctuation and Mn
// tables are from an older Unicode version, its lowercasing from a newer one.
package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
)

//go:generate ../.local/venv-fixtures/bin/python gen_tables.py

// DefaultMaxLen is the sequence limit used when Load gets maxLen <= 0 and the
// file sets no truncation: the clip_text contract's 128 tokens including
// [CLS] and [SEP] (the production model's position table is larger, but the
// multilingual CLIP text model was trained on 128).
const DefaultMaxLen = 128

// defaultChunkBytes bounds how much text is normalised at once. Long inputs
// are processed chunk by chunk and encoding stops as soon as maxLen tokens
// exist, so cost and memory depend on the kept prefix, not on the input size.
const defaultChunkBytes = 4096

// Tokenizer encodes text to token ids. It is immutable after Load and safe for
// concurrent use.
type Tokenizer struct {
	vocab     map[string]int32 // every vocabulary entry: word-initial lookups
	cont      map[string]int32 // entries with the continuation prefix, prefix removed
	maxInit   int              // longest key of vocab, in bytes
	maxCont   int              // longest key of cont, in bytes
	vocabSize int              // 1 + largest id
	unkID     int64
	padID     int64
	prefix    []int64 // post-processor ids before the sequence ([CLS])
	suffix    []int64 // post-processor ids after the sequence ([SEP])
	maxLen    int
	maxChars  int // max_input_chars_per_word: longer words become one [UNK]
	added     []addedToken
	clean     bool
	chinese   bool
	strip     bool
	lower     bool
	chunk     int // defaultChunkBytes; tests shrink it to exercise chunking
	scratch   sync.Pool
}

type addedToken struct {
	content string
	id      int64
}

// Load reads a Hugging Face tokenizer.json. maxLen is the maximum sequence
// length including special tokens; <= 0 means the file's truncation
// max_length, or DefaultMaxLen if the file has none.
func Load(path string, maxLen int) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := Parse(data, maxLen)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	return t, nil
}

// file mirrors the parts of tokenizer.json that matter for encoding.
type file struct {
	AddedTokens []struct {
		ID         int64  `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
		Special    bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer *struct {
		Type               string `json:"type"`
		CleanText          *bool  `json:"clean_text"`
		HandleChineseChars *bool  `json:"handle_chinese_chars"`
		StripAccents       *bool  `json:"strip_accents"`
		Lowercase          *bool  `json:"lowercase"`
	} `json:"normalizer"`
	PreTokenizer *struct {
		Type string `json:"type"`
	} `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Truncation    *struct {
		MaxLength int    `json:"max_length"`
		Direction string `json:"direction"`
	} `json:"truncation"`
	Padding *struct {
		PadID int64 `json:"pad_id"`
	} `json:"padding"`
	Model struct {
		Type                    string           `json:"type"`
		UnkToken                string           `json:"unk_token"`
		ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
		MaxInputCharsPerWord    *int             `json:"max_input_chars_per_word"`
		Vocab                   map[string]int64 `json:"vocab"`
	} `json:"model"`
}

// Parse builds a Tokenizer from the contents of a tokenizer.json; maxLen as in Load.
func Parse(data []byte, maxLen int) (*Tokenizer, error) {
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	t := &Tokenizer{chunk: defaultChunkBytes, maxChars: 100}
	var errs []error

	// Model.
	if f.Model.Type != "WordPiece" {
		errs = append(errs, fmt.Errorf("model.type: want WordPiece, got %q", f.Model.Type))
	}
	prefix := "##"
	if f.Model.ContinuingSubwordPrefix != nil {
		prefix = *f.Model.ContinuingSubwordPrefix
	}
	if f.Model.MaxInputCharsPerWord != nil {
		t.maxChars = *f.Model.MaxInputCharsPerWord
	}
	if len(f.Model.Vocab) == 0 {
		errs = append(errs, errors.New("model.vocab: empty"))
	}
	t.vocab = make(map[string]int32, len(f.Model.Vocab))
	t.cont = make(map[string]int32, len(f.Model.Vocab)/2)
	for tok, id := range f.Model.Vocab {
		if id < 0 || id > 1<<31-1 {
			errs = append(errs, fmt.Errorf("model.vocab: id %d of %q out of range", id, tok))
			continue
		}
		t.vocab[tok] = int32(id)
		t.maxInit = max(t.maxInit, len(tok))
		if prefix != "" && strings.HasPrefix(tok, prefix) {
			rest := tok[len(prefix):]
			t.cont[rest] = int32(id)
			t.maxCont = max(t.maxCont, len(rest))
		}
		t.vocabSize = max(t.vocabSize, int(id)+1)
	}
	if prefix == "" { // HF looks up prefix+piece: with no prefix, the whole vocabulary
		t.cont, t.maxCont = t.vocab, t.maxInit
	}
	if id, ok := f.Model.Vocab[f.Model.UnkToken]; ok {
		t.unkID = id
	} else {
		errs = append(errs, fmt.Errorf("model.unk_token: %q is not in the vocabulary", f.Model.UnkToken))
	}

	// Added tokens: literal matches on the raw text.
	for _, a := range f.AddedTokens {
		switch {
		case a.Content == "":
			errs = append(errs, fmt.Errorf("added_tokens: id %d has empty content", a.ID))
		case a.Normalized || a.LStrip || a.RStrip || a.SingleWord:
			errs = append(errs, fmt.Errorf("added_tokens: %q uses normalized/lstrip/rstrip/single_word, which this tokenizer does not implement", a.Content))
		default:
			t.added = append(t.added, addedToken{content: a.Content, id: a.ID})
		}
		t.vocabSize = max(t.vocabSize, int(a.ID)+1)
	}
	// Longest first, so that at one position the longest token wins (HF matches leftmost-longest).
	sort.SliceStable(t.added, func(i, j int) bool { return len(t.added[i].content) > len(t.added[j].content) })

	// Normalizer.
	if n := f.Normalizer; n != nil {
		if n.Type != "BertNormalizer" {
			errs = append(errs, fmt.Errorf("normalizer.type: want BertNormalizer or null, got %q", n.Type))
		}
		// HF defaults when a field is absent: clean_text, handle_chinese_chars and lowercase true.
		t.clean = n.CleanText == nil || *n.CleanText
		t.chinese = n.HandleChineseChars == nil || *n.HandleChineseChars
		t.lower = n.Lowercase == nil || *n.Lowercase
		t.strip = t.lower // strip_accents null follows lowercase
		if n.StripAccents != nil {
			t.strip = *n.StripAccents
		}
	}

	// Pre-tokenizer.
	if f.PreTokenizer == nil || f.PreTokenizer.Type != "BertPreTokenizer" {
		got := "null"
		if f.PreTokenizer != nil {
			got = fmt.Sprintf("%q", f.PreTokenizer.Type)
		}
		errs = append(errs, fmt.Errorf("pre_tokenizer.type: want BertPreTokenizer, got %s", got))
	}

	// Post-processor.
	var err error
	t.prefix, t.suffix, err = parsePostProcessor(f.PostProcessor)
	if err != nil {
		errs = append(errs, err)
	}

	// Padding id: the file's padding config, else the [PAD] token.
	switch {
	case f.Padding != nil:
		t.padID = f.Padding.PadID
	default:
		if id, ok := f.Model.Vocab["[PAD]"]; ok {
			t.padID = id
		} else {
			errs = append(errs, errors.New("padding: null and no [PAD] token in the vocabulary"))
		}
	}

	// Sequence limit.
	if f.Truncation != nil && f.Truncation.Direction != "" && f.Truncation.Direction != "Right" {
		errs = append(errs, fmt.Errorf("truncation.direction: only Right is implemented, got %q", f.Truncation.Direction))
	}
	t.maxLen = maxLen
	if t.maxLen <= 0 {
		t.maxLen = DefaultMaxLen
		if f.Truncation != nil && f.Truncation.MaxLength > 0 {
			t.maxLen = f.Truncation.MaxLength
		}
	}
	if specials := len(t.prefix) + len(t.suffix); t.maxLen <= specials {
		errs = append(errs, fmt.Errorf("max_len: must be > %d (the special tokens), got %d", specials, t.maxLen))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	t.scratch.New = func() any { return new(scratch) }
	return t, nil
}

// parsePostProcessor returns the ids the post-processor puts around a single sequence.
func parsePostProcessor(raw json.RawMessage) (prefix, suffix []int64, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil, nil
	}
	var p struct {
		Type   string `json:"type"`
		Single []struct {
			SpecialToken *struct {
				ID string `json:"id"`
			} `json:"SpecialToken"`
			Sequence *struct {
				ID string `json:"id"`
			} `json:"Sequence"`
		} `json:"single"`
		SpecialTokens map[string]struct {
			IDs []int64 `json:"ids"`
		} `json:"special_tokens"`
		CLS []json.RawMessage `json:"cls"`
		SEP []json.RawMessage `json:"sep"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, nil, fmt.Errorf("post_processor: %w", err)
	}
	switch p.Type {
	case "TemplateProcessing":
		seen := false
		for _, piece := range p.Single {
			switch {
			case piece.Sequence != nil:
				if seen || piece.Sequence.ID != "A" {
					return nil, nil, errors.New("post_processor.single: want exactly one sequence $A")
				}
				seen = true
			case piece.SpecialToken != nil:
				st, ok := p.SpecialTokens[piece.SpecialToken.ID]
				if !ok {
					return nil, nil, fmt.Errorf("post_processor: special token %q not in special_tokens", piece.SpecialToken.ID)
				}
				if seen {
					suffix = append(suffix, st.IDs...)
				} else {
					prefix = append(prefix, st.IDs...)
				}
			default:
				return nil, nil, errors.New("post_processor.single: unknown piece")
			}
		}
		if !seen {
			return nil, nil, errors.New("post_processor.single: no sequence $A")
		}
		return prefix, suffix, nil
	case "BertProcessing":
		cls, err1 := pairID(p.CLS)
		sep, err2 := pairID(p.SEP)
		if err := errors.Join(err1, err2); err != nil {
			return nil, nil, fmt.Errorf("post_processor: %w", err)
		}
		return []int64{cls}, []int64{sep}, nil
	default:
		return nil, nil, fmt.Errorf("post_processor.type: want TemplateProcessing, BertProcessing or null, got %q", p.Type)
	}
}

// pairID reads the id of a BertProcessing ["[CLS]", 101] pair.
func pairID(pair []json.RawMessage) (int64, error) {
	var id int64
	if len(pair) != 2 {
		return 0, errors.New("cls/sep: want [token, id]")
	}
	if err := json.Unmarshal(pair[1], &id); err != nil {
		return 0, fmt.Errorf("cls/sep id: %w", err)
	}
	return id, nil
}

// MaxLen is the maximum number of ids Encode returns, special tokens included.
func (t *Tokenizer) MaxLen() int { return t.maxLen }

// PadID is the id to pad batches with ([PAD]).
func (t *Tokenizer) PadID() int64 { return t.padID }

// UnknownID is the [UNK] id, for callers that count unknown tokens.
func (t *Tokenizer) UnknownID() int64 { return t.unkID }

// VocabSize is 1 + the largest id the tokenizer can emit; the model's
// embedding table must have at least that many rows.
func (t *Tokenizer) VocabSize() int { return t.vocabSize }

// Encode returns the token ids of text with the special tokens added
// ([CLS] ... [SEP]), truncated to MaxLen ids, exactly as HF's
// Tokenizer.encode(text) with truncation max_length=MaxLen. Invalid UTF-8
// bytes are read as U+FFFD (which clean_text deletes).
func (t *Tokenizer) Encode(text string) []int64 {
	ids, _ := t.EncodeTruncated(text)
	return ids
}

// EncodeTruncated is Encode that also reports whether tokens were dropped to
// fit MaxLen (for a metric or a warning; search still works on the prefix).
func (t *Tokenizer) EncodeTruncated(text string) (ids []int64, truncated bool) {
	budget := t.maxLen - len(t.prefix) - len(t.suffix)
	ids = make([]int64, 0, min(t.maxLen+1, len(text)/2+len(t.prefix)+len(t.suffix)+2))
	ids = append(ids, t.prefix...)
	start := len(ids)
	// One token past the budget proves truncation without encoding the rest.
	ids = t.appendBody(ids, text, start+budget+1)
	if len(ids)-start > budget {
		ids = ids[:start+budget]
		truncated = true
	}
	ids = append(ids, t.suffix...)
	return ids, truncated
}

// EncodeBatch encodes texts and pads them to the longest: ids and mask are
// row-major [len(texts)][seqLen] (mask 1 for real tokens, 0 for padding), the
// layout of Triton's input_ids/attention_mask tensors.
func (t *Tokenizer) EncodeBatch(texts []string) (ids, mask []int64, seqLen int) {
	if len(texts) == 0 {
		return nil, nil, 0
	}
	rows := make([][]int64, len(texts))
	for i, s := range texts {
		rows[i] = t.Encode(s)
		seqLen = max(seqLen, len(rows[i]))
	}
	ids = make([]int64, len(texts)*seqLen)
	mask = make([]int64, len(texts)*seqLen)
	for i, r := range rows {
		row := ids[i*seqLen : (i+1)*seqLen]
		copy(row, r)
		for j := len(r); j < seqLen; j++ {
			row[j] = t.padID
		}
		m := mask[i*seqLen : i*seqLen+len(r)]
		for j := range m {
			m[j] = 1
		}
	}
	return ids, mask, seqLen
}

// scratch holds per-call buffers, pooled so that Encode does not allocate
// them on every call.
type scratch struct {
	a, b []byte // normalisation buffers, swapped between passes
	next []int  // per added token: next match position
}
