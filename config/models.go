package config

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/tusou/tusou/preprocess"
	"github.com/tusou/tusou/triton"
)

// Models holds the model generations. A generation is one embedding space:
// an image encoder and a text encoder trained together (with their
// preprocessing and tokenizer), and the concrete Elasticsearch index that
// holds its vectors. One generation is active (searched and written); during
// a switch (tusou models switch) a second one is filled and written too.
type Models struct {
	Initial      string        `yaml:"initial" doc:"generation made active when the index alias does not exist yet (first start); empty: the first one listed. Later, Elasticsearch's alias says which generation is active"`
	PollInterval time.Duration `yaml:"poll_interval" doc:"how often a gateway re-reads which generation is active and whether a switch is filling another one (every gateway must write to both during a switch)"`
	MaxStaleness time.Duration `yaml:"max_staleness" doc:"a gateway that could not re-read the generations for this long refuses writes with 503 (it might miss a switch and write to one generation only); searches go on"`
	Backfill     Backfill      `yaml:"backfill" doc:"how a switch re-embeds the stored originals"`
	Generations  []Generation  `yaml:"generations" doc:"the generations this gateway serves (YAML list); empty: one generation named \"default\" built from triton.image_model, triton.text_model, text.tokenizer_path and preprocess"`
}

// Backfill bounds the re-embedding work of a switch.
type Backfill struct {
	Workers   int `yaml:"workers" doc:"documents re-embedded at once during a switch (they share the decode workers and Triton batches with live traffic)"`
	PageSize  int `yaml:"page_size" doc:"document ids compared between the two generations per Elasticsearch page"`
	MaxErrors int `yaml:"max_errors" doc:"documents that may fail to re-embed (e.g. corrupt originals) before a switch stops; any failure blocks the cut-over"`
}

// Generation is one configured generation. Fields left empty take the
// top-level section they mirror, so a second generation usually names only
// its models' versions.
type Generation struct {
	Name          string   `yaml:"name" doc:"generation name: lowercase letters, digits, '_' or '-', at most 32"`
	TokenizerPath string   `yaml:"tokenizer_path" doc:"tokenizer.json of this generation's text model; empty: text.tokenizer_path (and its default)"`
	ImageModel    ModelRef `yaml:"image_model" doc:"the image encoder on Triton; unset fields take triton.image_model's"`
	TextModel     ModelRef `yaml:"text_model" doc:"the text encoder on Triton; unset fields take triton.text_model's"`
	// Preprocess overrides the model-specific part of preprocessing.
	Preprocess PreprocessOverride `yaml:"preprocess" doc:"input size and normalisation of this generation's image encoder; unset fields take preprocess's"`
}

// ModelRef names a Triton model of a generation.
type ModelRef struct {
	Name    string `yaml:"name" doc:"Triton model name"`
	Version string `yaml:"version" doc:"Triton model version; pin it (Triton serves two versions during a switch). Empty: the template's version (triton.image_model.version / text_model.version), or, when name names another model, whichever Triton's version policy picks (the latest)"`
	Dims    int    `yaml:"dims" doc:"embedding width; 0: the template's"`
}

// PreprocessOverride is the model-specific part of preprocess.Config.
type PreprocessOverride struct {
	Size int         `yaml:"size" doc:"square input side in pixels; 0: preprocess.size"`
	Mean *[3]float64 `yaml:"mean" doc:"per-channel mean; unset: preprocess.mean"`
	Std  *[3]float64 `yaml:"std" doc:"per-channel standard deviation; unset: preprocess.std"`
}

// DefaultGeneration is the name of the one generation of a configuration
// that lists none.
const DefaultGeneration = "default"

// ResolvedGeneration is a generation with every setting filled in.
type ResolvedGeneration struct {
	Name          string
	TokenizerPath string
	Image         triton.ImageModelConfig
	Text          triton.TextModelConfig
	Preprocess    preprocess.Config
}

// ResolvedGenerations returns the generations with the templates applied,
// in configuration order.
func (c *Config) ResolvedGenerations() []ResolvedGeneration {
	gens := c.Models.Generations
	if len(gens) == 0 {
		gens = []Generation{{Name: DefaultGeneration}}
	}
	out := make([]ResolvedGeneration, len(gens))
	for i, g := range gens {
		r := ResolvedGeneration{Name: g.Name, TokenizerPath: g.TokenizerPath,
			Image: c.Triton.Image, Text: c.Triton.Text, Preprocess: c.Preprocess}
		if r.TokenizerPath == "" {
			r.TokenizerPath = c.Text.TokenizerPath
		}
		applyRef(&r.Image.ModelConfig, g.ImageModel)
		applyRef(&r.Text.ModelConfig, g.TextModel)
		if g.Preprocess.Size > 0 {
			r.Preprocess.Size = g.Preprocess.Size
			r.Image.Height, r.Image.Width = g.Preprocess.Size, g.Preprocess.Size
		}
		if g.Preprocess.Mean != nil {
			r.Preprocess.Mean = *g.Preprocess.Mean
		}
		if g.Preprocess.Std != nil {
			r.Preprocess.Std = *g.Preprocess.Std
		}
		out[i] = r
	}
	return out
}

// InitialGeneration is the generation made active on an empty cluster.
func (c *Config) InitialGeneration() string {
	if c.Models.Initial != "" {
		return c.Models.Initial
	}
	return c.ResolvedGenerations()[0].Name
}

func applyRef(m *triton.ModelConfig, r ModelRef) {
	if r.Name != "" {
		m.Name = r.Name
		// Another model's version is meaningless: a renamed model starts
		// from "latest" unless it names its own.
		m.Version = ""
	}
	if r.Version != "" {
		m.Version = r.Version
	}
	if r.Dims > 0 {
		m.Dims = r.Dims
	}
}

var generationName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

func (c *Config) validateModels() []error {
	m := c.Models
	var errs []error
	if m.PollInterval <= 0 {
		errs = append(errs, fmt.Errorf("models.poll_interval: must be > 0, got %s", m.PollInterval))
	}
	if m.MaxStaleness < 2*m.PollInterval {
		errs = append(errs, fmt.Errorf("models.max_staleness: must be at least twice models.poll_interval (%s), got %s", m.PollInterval, m.MaxStaleness))
	}
	if m.Backfill.Workers < 1 || m.Backfill.Workers > 256 {
		errs = append(errs, fmt.Errorf("models.backfill.workers: must be 1..256, got %d", m.Backfill.Workers))
	}
	if m.Backfill.PageSize < 1 || m.Backfill.PageSize > 10000 {
		errs = append(errs, fmt.Errorf("models.backfill.page_size: must be 1..10000, got %d", m.Backfill.PageSize))
	}
	if m.Backfill.MaxErrors < 0 {
		errs = append(errs, fmt.Errorf("models.backfill.max_errors: must be >= 0, got %d", m.Backfill.MaxErrors))
	}
	seen := map[string]bool{}
	models := map[string]string{} // image+text model refs → generation
	for i, g := range c.ResolvedGenerations() {
		at := fmt.Sprintf("models.generations[%d]", i)
		if len(m.Generations) == 0 {
			at = "models (default generation)"
		}
		if !generationName.MatchString(g.Name) {
			errs = append(errs, fmt.Errorf("%s.name: want lowercase letters, digits, '_' or '-' (at most 32, starting with a letter or digit), got %q", at, g.Name))
		}
		if seen[g.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q is listed twice", at, g.Name))
		}
		seen[g.Name] = true
		if g.TokenizerPath != "" && !strings.HasSuffix(g.TokenizerPath, ".json") {
			errs = append(errs, fmt.Errorf("%s.tokenizer_path: want a HuggingFace tokenizer.json file, got %q", at, g.TokenizerPath))
		}
		if g.Image.Dims != g.Text.Dims {
			errs = append(errs, fmt.Errorf("%s: image_model.dims %d and text_model.dims %d differ: one generation is one embedding space", at, g.Image.Dims, g.Text.Dims))
		}
		if g.Image.Dims != c.Elasticsearch.Dims && len(m.Generations) == 0 {
			// The single-generation case keeps today's cross-check (the
			// index mapping is built from elasticsearch.dims).
			errs = append(errs, fmt.Errorf("%s: image_model.dims %d differs from elasticsearch.dims %d", at, g.Image.Dims, c.Elasticsearch.Dims))
		}
		if err := g.Preprocess.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s.preprocess: %w", at, err))
		}
		key := g.Image.Name + "@" + g.Image.Version + "|" + g.Text.Name + "@" + g.Text.Version
		if other, dup := models[key]; dup {
			errs = append(errs, fmt.Errorf("%s: same image and text models as generation %q: two names for one embedding space", at, other))
		}
		models[key] = g.Name
	}
	if m.Initial != "" && !seen[m.Initial] {
		errs = append(errs, fmt.Errorf("models.initial: %q is not a configured generation", m.Initial))
	}
	return []error{errors.Join(errs...)}
}
