//go:build integration

package app

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/internal/testutil"
	"github.com/tusou/tusou/models"
)

// int8 makes startGateway's index the production default, int8_hnsw (it
// uses a float index unless told otherwise).
func int8(mutate func(*config.Config)) func(*config.Config) {
	return func(c *config.Config) {
		c.Elasticsearch.IndexOptions.Type = "int8_hnsw"
		if mutate != nil {
			mutate(c)
		}
	}
}

// queryEmbedders compute query vectors exactly as the gateway does (same
// tokenizer, preprocessing and Triton models), so a test can recompute a
// hit's exact cosine.
func queryEmbedders(t *testing.T, s *stack) (models.ImageEmbedder, models.TextEmbedder) {
	t.Helper()
	g, err := s.app.catalog.Reader()
	if err != nil {
		t.Fatal(err)
	}
	return g.Images, g.Texts
}

func getJSON(t *testing.T, url string, out any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode
}

// ingestNamed posts the named fixture images in one request and returns
// file name -> id.
func ingestNamed(t *testing.T, s *stack, query string, names ...string) (map[string]string, []byte) {
	t.Helper()
	files := map[string][]byte{}
	ids := map[string]string{}
	for _, f := range mustFixtures(t) {
		if len(names) == 0 || slices.Contains(names, f.File) {
			files[f.File] = readFile(t, f.Path)
			ids[f.File] = f.SHA256
		}
	}
	if len(names) > 0 && len(files) != len(names) {
		t.Fatalf("fixtures %v: found only %d", names, len(files))
	}
	status, body := postFiles(t, s.url+"/v1/images"+query, files, nil)
	if status != 201 && status != 200 {
		t.Fatalf("ingest: %d %s", status, body)
	}
	return ids, body
}

// scoreErrors runs text and image searches and returns, over every hit,
// the largest |score - exact cosine| against the vectors stored in
// Elasticsearch, and the number of hits checked.
func scoreErrors(t *testing.T, s *stack, texts []string, images []testutil.FixtureImage) (worst float64, hits int) {
	t.Helper()
	imgEmb, textEmb := queryEmbedders(t, s)
	ctx := context.Background()
	stored := map[string][]float32{}
	check := func(what string, q []float32, res searchResponse) {
		if len(res.Hits) == 0 {
			t.Fatalf("%s: no hits", what)
		}
		for _, h := range res.Hits {
			v, ok := stored[h.ID]
			if !ok {
				v = esVector(t, s.alias, h.ID, "image_embedding")
				stored[h.ID] = v
			}
			exact := testutil.Cosine(q, v)
			worst = max(worst, math.Abs(h.Score-exact))
			hits++
		}
	}
	for _, text := range texts {
		q, err := textEmb.Embed(ctx, text)
		if err != nil {
			t.Fatal(err)
		}
		status, body := postRaw(t, s.url+"/v1/search/text", "application/json", []byte(fmt.Sprintf(`{"text":%q,"k":10}`, text)))
		var res searchResponse
		if status != 200 || json.Unmarshal(body, &res) != nil {
			t.Fatalf("text %q: %d %s", text, status, body)
		}
		check("text "+text, q, res)
	}
	for _, f := range images {
		data := readFile(t, f.Path)
		q, _, err := imgEmb.Embed(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		status, body := postRaw(t, s.url+"/v1/search/image?k=10", "application/octet-stream", data)
		var res searchResponse
		if status != 200 || json.Unmarshal(body, &res) != nil {
			t.Fatalf("image %s: %d %s", f.File, status, body)
		}
		check("image "+f.File, q, res)
	}
	return worst, hits
}

// TestScoresAreExactCosinesOnInt8: on the default quantised index every
// /v1 score equals the exact cosine between the query vector and the stored
// float vector, and without rescoring (rescore_oversample 0) it does not.
func TestScoresAreExactCosinesOnInt8(t *testing.T) {
	s := startGateway(t, int8(nil))
	ingestNamed(t, s, "")
	fx := mustFixtures(t)
	texts := []string{"a photo of a cat", "an astronaut", "a rocket on the launch pad", "a cup of coffee", "黑白照片"}
	queries := []testutil.FixtureImage{fx[0], fx[len(fx)/2], fx[len(fx)-1]}

	worst, n := scoreErrors(t, s, texts, queries)
	t.Logf("rescored (oversample %g): %d hits, max |score - exact cosine| = %.2e", s.app.cfg.Elasticsearch.RescoreOversample, n, worst)
	if worst > 1e-5 {
		t.Errorf("rescored scores differ from the exact cosine by up to %.2e (> 1e-5)", worst)
	}

	// The same data through a gateway that does not rescore: the int8
	// approximation shows.
	raw := startGateway(t, int8(func(c *config.Config) {
		c.Elasticsearch.Index = s.alias
		c.Elasticsearch.RescoreOversample = 0
	}))
	rawWorst, _ := scoreErrors(t, raw, texts, queries)
	t.Logf("not rescored: max |score - exact cosine| = %.2e", rawWorst)
	if rawWorst < 10*max(worst, 1e-6) {
		t.Errorf("without rescoring the error is %.2e, not measurably above the rescored %.2e: the test shows nothing", rawWorst, worst)
	}
}

type nearDupResponse struct {
	Items []struct {
		ID             string
		Result         string
		Error          *struct{ Code, Message string }
		NearDuplicates *[]struct {
			ID    string
			Score float64
		} `json:"near_duplicates"`
	}
}

// The fixtures hold two near-duplicate pairs: neardup_b.jpg is neardup_a.jpg
// resized to 0.6x and re-encoded at JPEG q70, flower_lossy.webp is
// flower_progressive.jpg as lossy WebP. Among the images below, every other
// pair is below 0.995 cosine with the tiny test model, the pairs above 0.9999.
var distinctFixtures = []string{"china_original.jpg", "flower_progressive.jpg", "rocket_444.jpg", "coffee_420.jpg",
	"hopper_gray.jpg", "chelsea.png", "coins_gray.png", "horse_palette_trns.png", "hubble_3000x2000.jpg", "neardup_a.jpg"}

// nearDupThreshold separates the pairs from the rest for the tiny random
// test model, whose images all lie within a few percent of cosine of each
// other (real CLIP weights spread them out; the default is 0.95).
const nearDupThreshold = 0.999

func TestSimilarFindsTheResizedCopyFirst(t *testing.T) {
	s := startGateway(t, int8(nil))
	ids, _ := ingestNamed(t, s, "", append(slices.Clone(distinctFixtures), "neardup_b.jpg", "flower_lossy.webp")...)
	a, b := ids["neardup_a.jpg"], ids["neardup_b.jpg"]

	for _, pair := range [][2]string{{a, b}, {b, a}} {
		var res searchResponse
		if status := getJSON(t, s.url+"/v1/images/"+pair[0]+"/similar?k=5", &res); status != 200 {
			t.Fatalf("similar: %d %+v", status, res)
		}
		if len(res.Hits) != 5 {
			t.Fatalf("k=5 with 11 other images: %d hits", len(res.Hits))
		}
		if res.Hits[0].ID != pair[1] {
			t.Errorf("similar to %s: first %s, want its near-duplicate %s (%+v)", pair[0], res.Hits[0].ID, pair[1], res.Hits)
		}
		self := esVector(t, s.alias, pair[0], "image_embedding")
		for _, h := range res.Hits {
			if h.ID == pair[0] {
				t.Errorf("similar to %s returned the image itself", pair[0])
			}
			if d := math.Abs(h.Score - testutil.Cosine(self, esVector(t, s.alias, h.ID, "image_embedding"))); d > 1e-5 {
				t.Errorf("similar hit %s: score off the exact cosine by %.2e", h.ID, d)
			}
		}
	}
	// min_score and filter work as on the search routes.
	var res searchResponse
	getJSON(t, fmt.Sprintf("%s/v1/images/%s/similar?k=10&min_score=%g", s.url, a, nearDupThreshold), &res)
	if len(res.Hits) != 1 || res.Hits[0].ID != b {
		t.Errorf("min_score %g: %+v, want only %s", nearDupThreshold, res.Hits, b)
	}
	var e struct{ Error struct{ Code string } }
	if status := getJSON(t, s.url+"/v1/images/"+strings.Repeat("0", 64)+"/similar", &e); status != 404 || e.Error.Code != "image_not_found" {
		t.Errorf("unknown id: %d %+v", status, e)
	}
}

func TestIngestReportsNearDuplicates(t *testing.T) {
	s := startGateway(t, int8(func(c *config.Config) { c.Search.NearDuplicateThreshold = nearDupThreshold }))

	// No two of these are near-duplicates: every item says so with [].
	_, body := ingestNamed(t, s, "?near_duplicates=true", distinctFixtures...)
	var first nearDupResponse
	json.Unmarshal(body, &first)
	for _, it := range first.Items {
		if it.NearDuplicates == nil || len(*it.NearDuplicates) != 0 {
			t.Errorf("%s: near_duplicates %v in %s", it.ID, it.NearDuplicates, body)
		}
	}

	// The copies find their originals, with exact scores.
	_, body = ingestNamed(t, s, "?near_duplicates=true", "neardup_b.jpg", "flower_lossy.webp")
	var second nearDupResponse
	json.Unmarshal(body, &second)
	fx := map[string]string{}
	for _, f := range mustFixtures(t) {
		fx[f.SHA256] = f.File
	}
	want := map[string]string{"neardup_b.jpg": "neardup_a.jpg", "flower_lossy.webp": "flower_progressive.jpg"}
	sha := map[string]string{}
	for id, file := range fx {
		sha[file] = id
	}
	if len(second.Items) != 2 {
		t.Fatalf("%s", body)
	}
	for _, it := range second.Items {
		orig := sha[want[fx[it.ID]]]
		if it.Result != "created" || it.NearDuplicates == nil || len(*it.NearDuplicates) != 1 || (*it.NearDuplicates)[0].ID != orig {
			t.Errorf("%s: want near_duplicates [%s], got %s", fx[it.ID], want[fx[it.ID]], body)
			continue
		}
		d := (*it.NearDuplicates)[0]
		exact := testutil.Cosine(esVector(t, s.alias, it.ID, "image_embedding"), esVector(t, s.alias, orig, "image_embedding"))
		if d.Score < nearDupThreshold || math.Abs(d.Score-exact) > 1e-5 {
			t.Errorf("%s: score %.7f, exact cosine %.7f", fx[it.ID], d.Score, exact)
		}
	}

	// Ingesting the original again: "exists", and it lists its copy, not itself.
	_, body = ingestNamed(t, s, "?near_duplicates=true", "neardup_a.jpg")
	var again nearDupResponse
	json.Unmarshal(body, &again)
	if it := again.Items[0]; it.Result != "exists" || it.NearDuplicates == nil || len(*it.NearDuplicates) != 1 ||
		(*it.NearDuplicates)[0].ID != sha["neardup_b.jpg"] {
		t.Errorf("exists item: %s", body)
	}
	// Without the parameter, no field.
	_, body = ingestNamed(t, s, "", "neardup_a.jpg")
	if strings.Contains(string(body), "near_duplicates") {
		t.Errorf("not asked: %s", body)
	}
}

func TestExistsEndpoint(t *testing.T) {
	s := startGateway(t, nil)
	ids, _ := ingestNamed(t, s, "", "chelsea.png", "rocket_444.jpg")
	// Stored but not yet searchable (refresh=false) is found too: the check
	// reads in realtime.
	late, _ := ingestNamed(t, s, "?refresh=false", "coffee_420.jpg")
	unknown := strings.Repeat("f", 64)
	req := fmt.Sprintf(`{"ids":[%q,%q,%q,%q,%q]}`, ids["rocket_444.jpg"], unknown, late["coffee_420.jpg"], ids["chelsea.png"], ids["rocket_444.jpg"])
	status, body := postRaw(t, s.url+"/v1/images/_exists", "application/json", []byte(req))
	var res struct{ Found []string }
	if status != 200 || json.Unmarshal(body, &res) != nil {
		t.Fatalf("%d %s", status, body)
	}
	want := []string{ids["rocket_444.jpg"], late["coffee_420.jpg"], ids["chelsea.png"]}
	if !slices.Equal(res.Found, want) {
		t.Fatalf("found %v, want %v (request order, each once)", res.Found, want)
	}
	status, body = postRaw(t, s.url+"/v1/images/_exists", "application/json", []byte(`{"ids":[]}`))
	if status != 400 || !strings.Contains(string(body), "invalid_ids") {
		t.Fatalf("empty ids: %d %s", status, body)
	}
}
