package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
)

// Query holds the kNN parameters; zero values mean the gateway's defaults.
type Query struct {
	// K is the number of hits (gateway default 10).
	K int
	// NumCandidates is the kNN candidate count per shard.
	NumCandidates int
	// MinScore drops hits whose cosine is below it.
	MinScore *float64
	// Filter restricts hits by metadata: {"album":["pets","zoo"],"year":2024}.
	Filter map[string]any
}

// Hit is one search result.
type Hit struct {
	ID       string         `json:"id"`
	Score    float64        `json:"score"`
	Metadata map[string]any `json:"metadata,omitempty"`
}

// SearchResponse is the gateway's answer to a search.
type SearchResponse struct {
	Hits   []Hit `json:"hits"`
	TookMS int64 `json:"took_ms"`
}

// SearchText finds the images closest to text.
func (c *Client) SearchText(ctx context.Context, text string, q Query) (*SearchResponse, error) {
	body, err := json.Marshal(struct {
		Text          string         `json:"text"`
		K             int            `json:"k,omitempty"`
		NumCandidates int            `json:"num_candidates,omitempty"`
		MinScore      *float64       `json:"min_score,omitempty"`
		Filter        map[string]any `json:"filter,omitempty"`
	}{text, q.K, q.NumCandidates, q.MinScore, q.Filter})
	if err != nil {
		return nil, err
	}
	var out SearchResponse
	if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/search/text", body: body, contentType: "application/json"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SearchImage finds the images closest to the image in data.
func (c *Client) SearchImage(ctx context.Context, data []byte, q Query) (*SearchResponse, error) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	fields, err := q.values()
	if err != nil {
		return nil, err
	}
	for k, v := range fields {
		if err := w.WriteField(k, v[0]); err != nil {
			return nil, err
		}
	}
	fw, err := w.CreateFormFile("file", "query")
	if err != nil {
		return nil, err
	}
	if _, err := fw.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	var out SearchResponse
	if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/search/image", body: buf.Bytes(), contentType: w.FormDataContentType()}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Similar finds the images closest to the indexed image id, from its stored
// vector (nothing is re-embedded); the image itself is not among the hits.
func (c *Client) Similar(ctx context.Context, id string, q Query) (*SearchResponse, error) {
	if id == "" {
		return nil, errors.New("similar: empty id")
	}
	v, err := q.values()
	if err != nil {
		return nil, err
	}
	var out SearchResponse
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/images/" + url.PathEscape(id) + "/similar", query: v}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// values renders q as form or query-string fields.
func (q Query) values() (url.Values, error) {
	v := url.Values{}
	if q.K > 0 {
		v.Set("k", strconv.Itoa(q.K))
	}
	if q.NumCandidates > 0 {
		v.Set("num_candidates", strconv.Itoa(q.NumCandidates))
	}
	if q.MinScore != nil {
		v.Set("min_score", strconv.FormatFloat(*q.MinScore, 'g', -1, 64))
	}
	if q.Filter != nil {
		b, err := json.Marshal(q.Filter)
		if err != nil {
			return nil, err
		}
		v.Set("filter", string(b))
	}
	return v, nil
}
