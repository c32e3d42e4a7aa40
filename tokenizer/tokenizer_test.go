package tokenizer

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Reference data written by model_repository/testdata/generate.py from the HF
// tokenizers library (see that folder's README.md).
const (
	tokenizerPath = "../model_repository/tiny/clip_text/tokenizer.json"
	textsPath     = "../model_repository/testdata/texts.json"
	corpusPath    = "../model_repository/testdata/expected/tokenizer_corpus.json"
	stripPath     = "testdata/hf_strip_accents.txt"
)

type textsFixture struct {
	TokenizerSHA256 string `json:"tokenizer_sha256"`
	MaxLength       int    `json:"max_length"`
	PadID           int64  `json:"pad_id"`
	Texts           []struct {
		Name          string   `json:"name"`
		Text          string   `json:"text"`
		Tokens        []string `json:"tokens"`
		InputIDs      []int64  `json:"input_ids"`
		AttentionMask []int64  `json:"attention_mask"`
		Truncated     bool     `json:"truncated"`
	} `json:"texts"`
}

type corpusFixture struct {
	TokenizerSHA256 string `json:"tokenizer_sha256"`
	MaxLength       int    `json:"max_length"`
	Cases           []struct {
		Text     string  `json:"text"`
		InputIDs []int64 `json:"input_ids"`
	} `json:"cases"`
	Variants []struct {
		Normalizer map[string]any `json:"normalizer"`
		InputIDs   [][]int64      `json:"input_ids"`
	} `json:"variants"`
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// checkFixtureMatchesTokenizer fails with a clear hint when the committed
// tokenizer.json changed but the fixtures were not regenerated.
func checkFixtureMatchesTokenizer(t testing.TB, want string) {
	t.Helper()
	b, err := os.ReadFile(tokenizerPath)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("fixtures were made from tokenizer.json sha256 %s, the file is now %s: regenerate them (make fixtures)", want, got)
	}
}

func loadTiny(t testing.TB, maxLen int) *Tokenizer {
	t.Helper()
	tok, err := Load(tokenizerPath, maxLen)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func loadTexts(t testing.TB) textsFixture {
	t.Helper()
	var f textsFixture
	readJSON(t, textsPath, &f)
	checkFixtureMatchesTokenizer(t, f.TokenizerSHA256)
	if len(f.Texts) == 0 {
		t.Fatal("no texts in fixture")
	}
	return f
}

func loadCorpus(t testing.TB) corpusFixture {
	t.Helper()
	var f corpusFixture
	readJSON(t, corpusPath, &f)
	checkFixtureMatchesTokenizer(t, f.TokenizerSHA256)
	if len(f.Cases) == 0 {
		t.Fatal("no cases in corpus")
	}
	return f
}

func TestFixtureTexts(t *testing.T) {
	f := loadTexts(t)
	tok := loadTiny(t, f.MaxLength)
	if tok.PadID() != f.PadID {
		t.Errorf("PadID() = %d, HF [PAD] = %d", tok.PadID(), f.PadID)
	}
	for _, c := range f.Texts {
		t.Run(c.Name, func(t *testing.T) {
			got, truncated := tok.EncodeTruncated(c.Text)
			if !slices.Equal(got, c.InputIDs) {
				t.Errorf("Encode(%q)\n got %v\nwant %v\n(HF tokens %q)", c.Text, got, c.InputIDs, c.Tokens)
			}
			if truncated != c.Truncated {
				t.Errorf("truncated = %v, HF says %v", truncated, c.Truncated)
			}
			for i, m := range c.AttentionMask {
				if m != 1 {
					t.Errorf("HF attention_mask[%d] = %d for an unpadded sequence", i, m)
				}
			}
		})
	}
}

func TestCorpus(t *testing.T) {
	f := loadCorpus(t)
	tok := loadTiny(t, f.MaxLength)
	bad := 0
	for i, c := range f.Cases {
		if got := tok.Encode(c.Text); !slices.Equal(got, c.InputIDs) {
			bad++
			if bad <= 10 {
				t.Errorf("case %d Encode(%+q)\n got %v\nwant %v", i, c.Text, got, c.InputIDs)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d corpus strings differ from HF", bad, len(f.Cases))
	}
}

// TestCorpusVariants runs the corpus through the tiny vocabulary with other
// BertNormalizer flags (uncased, strip-only, no clean_text/CJK), against HF's
// ids for the same flags.
func TestCorpusVariants(t *testing.T) {
	f := loadCorpus(t)
	if len(f.Variants) == 0 {
		t.Fatal("no variants in corpus")
	}
	raw, err := os.ReadFile(tokenizerPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range f.Variants {
		name := fmt.Sprint(v.Normalizer)
		t.Run(name, func(t *testing.T) {
			var cfg map[string]any
			if err := json.Unmarshal(raw, &cfg); err != nil {
				t.Fatal(err)
			}
			cfg["normalizer"] = v.Normalizer
			b, err := json.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := Parse(b, f.MaxLength)
			if err != nil {
				t.Fatal(err)
			}
			if len(v.InputIDs) != len(f.Cases) {
				t.Fatalf("variant has %d rows for %d cases", len(v.InputIDs), len(f.Cases))
			}
			bad := 0
			for i, c := range f.Cases {
				if got := tok.Encode(c.Text); !slices.Equal(got, v.InputIDs[i]) {
					bad++
					if bad <= 5 {
						t.Errorf("case %d Encode(%+q)\n got %v\nwant %v", i, c.Text, got, v.InputIDs[i])
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d strings differ from HF", bad, len(f.Cases))
			}
		})
	}
}

// allStrings is every fixture text, for invariance tests.
func allStrings(t testing.TB) []string {
	var out []string
	for _, c := range loadTexts(t).Texts {
		out = append(out, c.Text)
	}
	for _, c := range loadCorpus(t).Cases {
		out = append(out, c.Text)
	}
	return out
}

// TestChunkingIsInvisible checks that encoding long text chunk by chunk gives
// the ids of encoding it whole, also with lowercase/strip_accents on.
func TestChunkingIsInvisible(t *testing.T) {
	texts := allStrings(t)
	texts = append(texts, strings.Repeat("Ünïcödé  naïve\u0301 ÇA VA\t日本語テキスト ", 400))
	for _, normalizer := range []string{"", `{"type":"BertNormalizer","lowercase":true}`} {
		whole := loadTinyWithNormalizer(t, normalizer, 1<<20)
		for _, chunk := range []int{1, 7, 64} {
			chunked := loadTinyWithNormalizer(t, normalizer, 1<<20)
			chunked.chunk = chunk
			for _, s := range texts {
				if a, b := whole.Encode(s), chunked.Encode(s); !slices.Equal(a, b) {
					t.Fatalf("normalizer %s chunk %d: Encode(%+q) = %v, whole = %v", normalizer, chunk, s, b, a)
				}
			}
		}
	}
}

func loadTinyWithNormalizer(t testing.TB, normalizer string, maxLen int) *Tokenizer {
	t.Helper()
	if normalizer == "" {
		return loadTiny(t, maxLen)
	}
	raw, err := os.ReadFile(tokenizerPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["normalizer"] = json.RawMessage(normalizer)
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Parse(b, maxLen)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestTruncation checks HF's rule: keep the first maxLen-2 word pieces, then
// add [CLS]/[SEP], for every fixture string and several limits.
func TestTruncation(t *testing.T) {
	full := loadTiny(t, 1<<20)
	texts := allStrings(t)
	for _, maxLen := range []int{3, 4, 10, 128} {
		tok := loadTiny(t, maxLen)
		if tok.MaxLen() != maxLen {
			t.Fatalf("MaxLen() = %d, want %d", tok.MaxLen(), maxLen)
		}
		for _, s := range texts {
			all := full.Encode(s)
			body := all[1 : len(all)-1]
			wantTrunc := len(body) > maxLen-2
			if wantTrunc {
				body = body[:maxLen-2]
			}
			want := append(append([]int64{all[0]}, body...), all[len(all)-1])
			got, truncated := tok.EncodeTruncated(s)
			if !slices.Equal(got, want) || truncated != wantTrunc {
				t.Fatalf("maxLen %d Encode(%+q) = %v (truncated %v), want %v (truncated %v)", maxLen, s, got, truncated, want, wantTrunc)
			}
		}
	}
}

func TestDefaultMaxLen(t *testing.T) {
	tok := loadTiny(t, 0) // the tiny file has no truncation section
	if tok.MaxLen() != DefaultMaxLen {
		t.Fatalf("MaxLen() = %d, want DefaultMaxLen %d", tok.MaxLen(), DefaultMaxLen)
	}
}

func TestEncodeBatch(t *testing.T) {
	f := loadTexts(t)
	tok := loadTiny(t, f.MaxLength)
	texts := make([]string, len(f.Texts))
	longest := 0
	for i, c := range f.Texts {
		texts[i] = c.Text
		longest = max(longest, len(c.InputIDs))
	}
	ids, mask, seqLen := tok.EncodeBatch(texts)
	if seqLen != longest || len(ids) != len(texts)*seqLen || len(mask) != len(ids) {
		t.Fatalf("EncodeBatch: seqLen %d (want %d), len(ids) %d, len(mask) %d", seqLen, longest, len(ids), len(mask))
	}
	for i, c := range f.Texts {
		row, m := ids[i*seqLen:(i+1)*seqLen], mask[i*seqLen:(i+1)*seqLen]
		for j := range seqLen {
			wantID, wantM := tok.PadID(), int64(0)
			if j < len(c.InputIDs) {
				wantID, wantM = c.InputIDs[j], 1
			}
			if row[j] != wantID || m[j] != wantM {
				t.Fatalf("row %d (%s) col %d: id %d mask %d, want %d %d", i, c.Name, j, row[j], m[j], wantID, wantM)
			}
		}
	}
	if ids, mask, n := tok.EncodeBatch(nil); ids != nil || mask != nil || n != 0 {
		t.Errorf("EncodeBatch(nil) = %v, %v, %d", ids, mask, n)
	}
}

func TestConcurrentUse(t *testing.T) {
	tok := loadTiny(t, 0)
	texts := allStrings(t)
	want := make([][]int64, len(texts))
	for i, s := range texts {
		want[i] = tok.Encode(s)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range texts {
				i := (k + g*37) % len(texts)
				if got := tok.Encode(texts[i]); !slices.Equal(got, want[i]) {
					errs <- fmt.Sprintf("goroutine %d: Encode(%+q) = %v, want %v", g, texts[i], got, want[i])
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestStripAccentsTable checks x/text's NFD followed by the generated Mn table
// against HF's strip_accents for every code point HF changes to a non-empty
// string (testdata/hf_strip_accents.txt, written by gen_tables.py).
func TestStripAccentsTable(t *testing.T) {
	fh, err := os.Open(stripPath)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		from, to, ok := strings.Cut(line, "\t")
		if !ok {
			t.Fatalf("bad line %q", line)
		}
		cp, err := strconv.ParseUint(from, 16, 32)
		if err != nil {
			t.Fatal(err)
		}
		var want []rune
		for _, h := range strings.Fields(to) {
			v, err := strconv.ParseUint(h, 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, rune(v))
		}
		var got []rune
		for _, r := range norm.NFD.String(string(rune(cp))) {
			if !unicode.Is(hfMn, r) {
				got = append(got, r)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("U+%04X: NFD minus Mn = %U, HF %U", cp, got, want)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 1000 {
		t.Fatalf("only %d lines in %s", n, stripPath)
	}
}

// TestTablesASCII checks the fast paths' assumptions about ASCII: the ASCII
// lowercase arithmetic matches HF's table, and no ASCII byte is a CJK or Mn char.
func TestTablesASCII(t *testing.T) {
	for c := rune(0); c < utf8.RuneSelf; c++ {
		want := string(c)
		if 'A' <= c && c <= 'Z' {
			want = string(c + 'a' - 'A')
		}
		if got, ok := hfLower[c]; ok && got != want || !ok && want != string(c) {
			t.Errorf("hfLower[%q] = %q, %v; ASCII fast path gives %q", c, got, ok, want)
		}
		if unicode.Is(hfChinese, c) || unicode.Is(hfMn, c) {
			t.Errorf("%q is CJK or Mn in the tables", c)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	raw, err := os.ReadFile(tokenizerPath)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(cfg map[string]any)) []byte {
		var cfg map[string]any
		if err := json.Unmarshal(raw, &cfg); err != nil {
			t.Fatal(err)
		}
		f(cfg)
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	model := func(cfg map[string]any) map[string]any { return cfg["model"].(map[string]any) }
	cases := []struct {
		name    string
		data    []byte
		maxLen  int
		wantErr string
	}{
		{"not json", []byte("{"), 0, "parse"},
		{"bpe model", mutate(func(c map[string]any) { model(c)["type"] = "BPE" }), 0, "model.type"},
		{"unk missing", mutate(func(c map[string]any) { model(c)["unk_token"] = "<nope>" }), 0, "model.unk_token"},
		{"empty vocab", mutate(func(c map[string]any) { model(c)["vocab"] = map[string]any{} }), 0, "model.vocab"},
		{"other normalizer", mutate(func(c map[string]any) { c["normalizer"] = map[string]any{"type": "NFKC"} }), 0, "normalizer.type"},
		{"no pre-tokenizer", mutate(func(c map[string]any) { c["pre_tokenizer"] = nil }), 0, "pre_tokenizer.type"},
		{"roberta processing", mutate(func(c map[string]any) { c["post_processor"] = map[string]any{"type": "RobertaProcessing"} }), 0, "post_processor.type"},
		{"lstrip added token", mutate(func(c map[string]any) {
			c["added_tokens"].([]any)[0].(map[string]any)["lstrip"] = true
		}), 0, "added_tokens"},
		{"left truncation", mutate(func(c map[string]any) {
			c["truncation"] = map[string]any{"max_length": 64, "direction": "Left"}
		}), 0, "truncation.direction"},
		{"max_len too small", raw, 2, "max_len"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.data, c.maxLen)
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Parse error = %v, want one mentioning %q", err, c.wantErr)
			}
		})
	}
	if _, err := Load("testdata/does-not-exist.json", 0); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

func TestParseOptions(t *testing.T) {
	raw, err := os.ReadFile(tokenizerPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	// BertProcessing gives the same ids as the [CLS] $A [SEP] template, a
	// truncation section sets the default limit, a padding section the pad id.
	cfg["post_processor"] = map[string]any{"type": "BertProcessing", "sep": []any{"[SEP]", 102}, "cls": []any{"[CLS]", 101}}
	cfg["truncation"] = map[string]any{"max_length": 16, "direction": "Right", "strategy": "LongestFirst", "stride": 0}
	cfg["padding"] = map[string]any{"pad_id": 7, "pad_token": "[unused7]"}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	alt, err := Parse(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if alt.MaxLen() != 16 || alt.PadID() != 7 {
		t.Fatalf("MaxLen %d PadID %d, want 16 and 7", alt.MaxLen(), alt.PadID())
	}
	ref := loadTiny(t, 16)
	for _, s := range allStrings(t) {
		if a, b := alt.Encode(s), ref.Encode(s); !slices.Equal(a, b) {
			t.Fatalf("BertProcessing Encode(%+q) = %v, template gives %v", s, a, b)
		}
	}
	var m struct {
		Model struct {
			Vocab map[string]int64 `json:"vocab"`
		} `json:"model"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	var maxID int64
	for _, id := range m.Model.Vocab {
		maxID = max(maxID, id)
	}
	if ref.VocabSize() != int(maxID)+1 || ref.UnknownID() != m.Model.Vocab["[UNK]"] {
		t.Fatalf("VocabSize %d UnknownID %d, file: max id %d, [UNK] %d", ref.VocabSize(), ref.UnknownID(), maxID, m.Model.Vocab["[UNK]"])
	}
}

// FuzzEncode checks invariants on arbitrary input: no panic, [CLS] first,
// [SEP] last, at most MaxLen ids, every id inside the vocabulary, chunked and
// whole encoding agree, and the batch helper agrees with Encode.
func FuzzEncode(f *testing.F) {
	var tf textsFixture
	readJSON(f, textsPath, &tf)
	for _, c := range tf.Texts {
		f.Add(c.Text)
	}
	for _, s := range []string{"", " ", "\xff\xfe invalid utf8 \xc3", "[MASK]", "[MAS[MASK]K]", "##", "a##b",
		strings.Repeat("é", 150), strings.Repeat("ab ", 300), "\u0130\u0301\ufb01", "\U0002b820\U0002b920"} {
		f.Add(s)
	}
	tok := loadTiny(f, 0)
	small := loadTiny(f, 6)
	chunked := loadTiny(f, 0)
	chunked.chunk = 3
	cls, sep := tok.Encode("")[0], tok.Encode("")[1]
	f.Fuzz(func(t *testing.T, s string) {
		for _, tk := range []*Tokenizer{tok, small} {
			ids := tk.Encode(s)
			if len(ids) < 2 || len(ids) > tk.MaxLen() || ids[0] != cls || ids[len(ids)-1] != sep {
				t.Fatalf("Encode(%+q) = %v: want [CLS] ... [SEP], at most %d ids", s, ids, tk.MaxLen())
			}
			for _, id := range ids {
				if id < 0 || id >= int64(tk.VocabSize()) {
					t.Fatalf("Encode(%+q): id %d outside the vocabulary", s, id)
				}
			}
		}
		if a, b := tok.Encode(s), chunked.Encode(s); !slices.Equal(a, b) {
			t.Fatalf("Encode(%+q): whole %v, chunked %v", s, a, b)
		}
		ids, mask, n := tok.EncodeBatch([]string{s, "x"})
		want := tok.Encode(s)
		if n < len(want) || !slices.Equal(ids[:len(want)], want) || mask[len(want)-1] != 1 || (n > len(want) && mask[len(want)] != 0) {
			t.Fatalf("EncodeBatch row 0 = %v / %v, Encode = %v", ids[:n], mask[:n], want)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	tok := loadTiny(b, 0)
	texts := allStrings(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		tok.Encode(texts[i%len(texts)])
	}
}
