package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix prefixes every environment variable tusou reads.
const EnvPrefix = "TUSOU_"

// Load builds the configuration from, in increasing precedence: the defaults in
// code, the YAML file at path (if path is not empty), TUSOU_* environment
// variables from environ, and "key=value" overrides (dotted yaml paths such as
// "triton.grpc_addr=host:8001"). The result is validated; every problem is
// reported at once, each naming its setting.
func Load(path string, environ []string, overrides []string) (*Config, error) {
	cfg := Default()
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("config file: %w", err)
		}
		defer f.Close()
		if err := decodeYAML(f, cfg); err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	if err := applyEnv(cfg, environ); err != nil {
		return nil, err
	}
	for _, o := range overrides {
		key, val, ok := strings.Cut(o, "=")
		if !ok {
			return nil, fmt.Errorf("--set %q: want key=value", o)
		}
		if err := Set(cfg, key, val); err != nil {
			return nil, fmt.Errorf("--set %s: %w", key, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decodeYAML decodes strictly: unknown keys and trailing documents are errors,
// because a misspelt setting silently falling back to its default is the
// worst kind of configuration bug.
func decodeYAML(r io.Reader, cfg *Config) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document")
	}
	return nil
}

// Field describes one leaf setting, for environment mapping and the reference.
type Field struct {
	// Path is the dotted yaml path, e.g. "triton.image.max_batch_size".
	Path string
	// Env is the environment variable that sets it.
	Env string
	// Doc is the field's `doc` tag.
	Doc string
	// Type is a short type name for the reference.
	Type string
	// Value is the field's current value.
	Value reflect.Value
}

var durationType = reflect.TypeOf(time.Duration(0))

// Fields lists every leaf setting of cfg in declaration order.
func Fields(cfg *Config) []Field {
	var out []Field
	walk(reflect.ValueOf(cfg).Elem(), "", &out)
	return out
}

func walk(v reflect.Value, prefix string, out *[]Field) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		fv := v.Field(i)
		if strings.Contains(sf.Tag.Get("yaml"), ",inline") {
			walk(fv, prefix, out)
			continue
		}
		if sf.Type.Kind() == reflect.Struct && sf.Type != durationType {
			walk(fv, path, out)
			continue
		}
		doc := sf.Tag.Get("doc")
		if doc == "" {
			doc = fieldDocs[t.PkgPath()+"."+t.Name()+"."+sf.Name]
		}
		*out = append(*out, Field{
			Path:  path,
			Env:   EnvPrefix + strings.ToUpper(strings.NewReplacer(".", "_").Replace(path)),
			Doc:   doc,
			Type:  typeName(sf.Type),
			Value: fv,
		})
	}
}

func typeName(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		return typeName(t.Elem()) + " (optional)"
	}
	if t == durationType {
		return "duration"
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "map of " + typeName(t.Elem())
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "integer"
	}
	return t.Kind().String()
}

// applyEnv sets fields from TUSOU_* variables and rejects unknown TUSOU_*
// names, so a typo in a Kubernetes manifest fails loudly at start-up.
func applyEnv(cfg *Config, environ []string) error {
	byEnv := map[string]Field{}
	for _, f := range Fields(cfg) {
		byEnv[f.Env] = f
	}
	var errs []error
	for _, kv := range environ {
		k, val, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		f, ok := byEnv[k]
		if !ok {
			if _, ignored := ignoredEnv[k]; !ignored {
				errs = append(errs, fmt.Errorf("%s: unknown setting (see docs/configuration.md)", k))
			}
			continue
		}
		if err := setValue(f.Value, val); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", k, f.Path, err))
		}
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// ignoredEnv lists TUSOU_* variables that are not settings: used by
// scripts, and by the client commands (tusou ingest, search, models), which
// may well be exported in the shell that starts a gateway.
var ignoredEnv = map[string]struct{}{
	"TUSOU_CONFIG": {}, "TUSOU_INTEGRATION": {}, "TUSOU_MODEL_REPOSITORY": {}, "TUSOU_TRITON_WAIT": {}, "TUSOU_ES_URL": {}, "TUSOU_E2E_BIN": {},
	"TUSOU_URL": {}, "TUSOU_API_KEY": {}, "TUSOU_ADMIN_KEY": {}, "TUSOU_S3_ENV": {},
}

// Set sets the setting at a dotted yaml path from its string form.
func Set(cfg *Config, path, val string) error {
	for _, f := range Fields(cfg) {
		if f.Path == path {
			return setValue(f.Value, val)
		}
	}
	return errors.New("unknown setting")
}

func setValue(v reflect.Value, s string) error {
	s = strings.TrimSpace(s)
	if v.Kind() == reflect.Pointer {
		if s == "" {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		p := reflect.New(v.Type().Elem())
		if err := setValue(p.Elem(), s); err != nil {
			return err
		}
		v.Set(p)
		return nil
	}
	if v.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("want a duration like 250ms or 30s, got %q", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
		if err != nil {
			return fmt.Errorf("want an integer, got %q", s)
		}
		v.SetInt(n)
	case reflect.Float32, reflect.Float64:
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("want a number, got %q", s)
		}
		v.SetFloat(n)
	case reflect.Slice:
		var parts []string
		if s != "" {
			parts = strings.Split(s, ",")
		}
		sl := reflect.MakeSlice(v.Type(), len(parts), len(parts))
		for i, p := range parts {
			if err := setValue(sl.Index(i), p); err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
		}
		v.Set(sl)
	case reflect.Array:
		parts := strings.Split(s, ",")
		if len(parts) != v.Len() {
			return fmt.Errorf("want %d comma-separated values, got %d", v.Len(), len(parts))
		}
		for i, p := range parts {
			if err := setValue(v.Index(i), p); err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
		}
	default:
		return fmt.Errorf("cannot be set from text (type %s)", v.Type())
	}
	return nil
}

// prefixErrors prefixes every error joined in err with section + ".".
func prefixErrors(section string, err error) []error {
	if err == nil {
		return nil
	}
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			list = append(list, prefixErrors(section, e)...)
		}
		return list
	}
	return []error{fmt.Errorf("%s.%s", section, err.Error())}
}
