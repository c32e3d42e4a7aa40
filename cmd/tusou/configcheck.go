package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/tusou/tusou/config"
)

// configSummary is what `tusou config check -o json` prints after a
// successful check: the model generations resolved exactly as the gateway
// resolves them (templates and defaults applied), so deployment tests and
// operators see which Triton versions and tokenizers a configuration really
// uses. It carries no secrets: keys are only counted.
type configSummary struct {
	Valid       bool                `json:"valid"`
	Initial     string              `json:"initial"`
	Generations []generationSummary `json:"generations"`
	APIKeys     int                 `json:"api_keys"`
	AdminKeys   int                 `json:"admin_keys"`
}

type generationSummary struct {
	Name          string            `json:"name"`
	TokenizerPath string            `json:"tokenizer_path"`
	ImageModel    modelSummary      `json:"image_model"`
	TextModel     modelSummary      `json:"text_model"`
	Preprocess    preprocessSummary `json:"preprocess"`
}

type modelSummary struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Dims    int    `json:"dims"`
}

type preprocessSummary struct {
	Size int        `json:"size"`
	Mean [3]float64 `json:"mean"`
	Std  [3]float64 `json:"std"`
}

func summarize(cfg *config.Config) configSummary {
	s := configSummary{Valid: true, Initial: cfg.InitialGeneration(),
		APIKeys: len(cfg.Auth.APIKeys), AdminKeys: len(cfg.Auth.AdminKeys)}
	for _, g := range cfg.ResolvedGenerations() {
		s.Generations = append(s.Generations, generationSummary{
			Name:          g.Name,
			TokenizerPath: g.TokenizerPath,
			ImageModel:    modelSummary{Name: g.Image.Name, Version: g.Image.Version, Dims: g.Image.Dims},
			TextModel:     modelSummary{Name: g.Text.Name, Version: g.Text.Version, Dims: g.Text.Dims},
			Preprocess:    preprocessSummary{Size: g.Preprocess.Size, Mean: g.Preprocess.Mean, Std: g.Preprocess.Std},
		})
	}
	return s
}

// configCheckCmd is `tusou config check`: load and validate, then say so
// (text) or print the resolved summary (-o json).
func configCheckCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	output := fs.String("o", "text", "output: text (one line per generation) or json (resolved generations, key counts)")
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return err
	}
	s := summarize(cfg)
	switch *output {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	case "text":
		fmt.Fprintln(stdout, "configuration is valid")
		for _, g := range s.Generations {
			initial := ""
			if g.Name == s.Initial {
				initial = " (initial)"
			}
			tok := g.TokenizerPath
			if tok == "" {
				tok = "(unset)"
			}
			fmt.Fprintf(stdout, "generation %s%s: image %s, text %s, %d dims, tokenizer %s\n", g.Name, initial,
				modelRef(g.ImageModel), modelRef(g.TextModel), g.ImageModel.Dims, tok)
		}
		return nil
	}
	return fmt.Errorf("config check: -o: want text or json, got %q", *output)
}

func modelRef(m modelSummary) string {
	if m.Version == "" {
		return m.Name + "@latest"
	}
	return m.Name + "@" + m.Version
}
