package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"unicode/utf8"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/service"
)

// readLimited reads all of r, refusing more than max bytes without buffering
// them. what names the thing being read in the error.
func readLimited(r io.Reader, max int64, what, code string) ([]byte, error) {
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, max+1))
	if err != nil {
		return nil, bodyReadError(err)
	}
	if n > max {
		return nil, apierr.New(apierr.TooLarge, code, "%s is larger than the limit of %d bytes", what, max)
	}
	return buf.Bytes(), nil
}

// bodyReadError classifies a failure to read the request body.
func bodyReadError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return apierr.New(apierr.TooLarge, "request_too_large", "request body is larger than the limit of %d bytes", mbe.Limit)
	}
	if apierr.As(err) != nil {
		return err
	}
	return apierr.Wrap(err, apierr.InvalidArgument, "body_unreadable", "could not read the request body: %v", err)
}

// decodeJSON decodes body into v strictly and names the problem precisely.
func decodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	// Not dec.More(): it reports a stray '}' or ']' as the end of input,
	// so `{"a":1}}` would pass (found by FuzzMetadata).
	if _, err := dec.Token(); err != io.EOF {
		return apierr.New(apierr.InvalidArgument, "invalid_json", "unexpected data after the JSON value")
	}
	return nil
}

func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return apierr.New(apierr.InvalidArgument, "invalid_json", "the request body is empty; a JSON object is required")
	case errors.As(err, &syn):
		return apierr.New(apierr.InvalidArgument, "invalid_json", "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		return apierr.New(apierr.InvalidArgument, "invalid_json", "field %q: want %s, got JSON %s", typ.Field, typ.Type, typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apierr.New(apierr.InvalidArgument, "invalid_json", "the JSON body is truncated")
	}
	// encoding/json reports unknown fields as a plain error: `json: unknown field "x"`.
	return apierr.New(apierr.InvalidArgument, "invalid_json", "%s", trimJSONPrefix(err.Error()))
}

func trimJSONPrefix(s string) string {
	if len(s) > 6 && s[:6] == "json: " {
		return s[6:]
	}
	return s
}

// searchParams are the kNN parameters before validation; nil means "not given".
type searchParams struct {
	K             *int           `json:"k"`
	NumCandidates *int           `json:"num_candidates"`
	Filter        map[string]any `json:"filter"`
	MinScore      *float32       `json:"min_score"`
}

// parseFormInt parses an integer form or query field.
func parseFormInt(name, s string) (*int, error) {
	if s == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return nil, apierr.New(apierr.InvalidArgument, "invalid_"+name, "%s: want an integer, got %q", name, truncate(s, 32))
	}
	return &n, nil
}

// setFormField applies one text field of a multipart or query-string search.
func (p *searchParams) setFormField(name, val string) error {
	var err error
	switch name {
	case "k":
		p.K, err = parseFormInt("k", val)
	case "num_candidates":
		p.NumCandidates, err = parseFormInt("num_candidates", val)
	case "min_score":
		if val == "" {
			return nil
		}
		f, perr := strconv.ParseFloat(val, 32)
		if perr != nil {
			return apierr.New(apierr.InvalidArgument, "invalid_min_score", "min_score: want a number, got %q", truncate(val, 32))
		}
		f32 := float32(f)
		p.MinScore = &f32
	case "filter":
		if val == "" {
			return nil
		}
		if err := decodeJSON([]byte(val), &p.Filter); err != nil {
			return apierr.New(apierr.InvalidArgument, "invalid_filter", "filter: want a JSON object: %s", apierr.As(err).Message)
		}
	default:
		return apierr.New(apierr.InvalidArgument, "unknown_field", "unknown field %q (want file, k, num_candidates, filter, min_score)", truncate(name, 64))
	}
	return err
}

var filterKey = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`)

// query validates p against the configured limits.
func (p *searchParams) query(cfg config.Search) (service.Query, error) {
	q := service.Query{K: cfg.DefaultK, Filter: p.Filter, MinScore: p.MinScore}
	if p.K != nil {
		q.K = *p.K
	}
	if q.K < 1 || q.K > cfg.MaxK {
		return q, apierr.New(apierr.InvalidArgument, "invalid_k", "k must be between 1 and %d, got %d", cfg.MaxK, q.K)
	}
	// Unset num_candidates stays 0: esproxy applies elasticsearch.num_candidates_factor.
	if p.NumCandidates != nil {
		q.NumCandidates = *p.NumCandidates
		if q.NumCandidates < q.K || q.NumCandidates > cfg.MaxNumCandidates {
			return q, apierr.New(apierr.InvalidArgument, "invalid_num_candidates",
				"num_candidates must be between k (%d) and %d, got %d", q.K, cfg.MaxNumCandidates, q.NumCandidates)
		}
	}
	if p.MinScore != nil && (*p.MinScore < -1 || *p.MinScore > 1 || *p.MinScore != *p.MinScore) {
		return q, apierr.New(apierr.InvalidArgument, "invalid_min_score", "min_score must be between -1 and 1, got %v", *p.MinScore)
	}
	if len(p.Filter) > cfg.MaxFilterKeys {
		return q, apierr.New(apierr.InvalidArgument, "invalid_filter", "filter has %d keys; the limit is %d", len(p.Filter), cfg.MaxFilterKeys)
	}
	for k, v := range p.Filter {
		if !filterKey.MatchString(k) {
			return q, apierr.New(apierr.InvalidArgument, "invalid_filter", "filter key %q: want letters, digits, '_', '.', '-' (at most 64)", truncate(k, 64))
		}
		if err := checkFilterValue(k, v); err != nil {
			return q, err
		}
	}
	return q, nil
}

func checkFilterValue(key string, v any) error {
	switch x := v.(type) {
	case string, float64, bool:
		return nil
	case []any:
		if len(x) == 0 || len(x) > 1024 {
			return apierr.New(apierr.InvalidArgument, "invalid_filter", "filter %q: a list must have 1..1024 values, got %d", key, len(x))
		}
		for _, e := range x {
			switch e.(type) {
			case string, float64, bool:
			default:
				return apierr.New(apierr.InvalidArgument, "invalid_filter", "filter %q: list values must be strings, numbers or booleans", key)
			}
		}
		return nil
	}
	return apierr.New(apierr.InvalidArgument, "invalid_filter", "filter %q: want a string, number, boolean or a list of them, got %s", key, jsonKind(v))
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// checkID validates a client-chosen document id.
func checkID(id string) error {
	if !validID.MatchString(id) {
		return apierr.New(apierr.InvalidArgument, "invalid_id",
			"id must be 1-128 characters of letters, digits, '.', '_', ':', '-' and start with a letter or digit, got %q", truncate(id, 64))
	}
	return nil
}

// parseMetadata parses a metadata JSON object.
func parseMetadata(raw []byte) (map[string]any, error) {
	var md map[string]any
	if err := decodeJSON(raw, &md); err != nil {
		return nil, apierr.New(apierr.InvalidArgument, "invalid_metadata", "metadata: want a JSON object: %s", apierr.As(err).Message)
	}
	if md == nil {
		return nil, apierr.New(apierr.InvalidArgument, "invalid_metadata", "metadata: want a JSON object, got null")
	}
	return md, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
