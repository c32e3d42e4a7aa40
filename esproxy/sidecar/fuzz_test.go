package sidecar

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// The fuzz targets' seed corpora are in testdata/fuzz/<Target>/ and run in
// every `go test`; `go test -fuzz=FuzzX ./esproxy/sidecar/` explores further.

// FuzzObjectMembers checks the splicing scanner against encoding/json:
// every object the standard library accepts is scanned to the same keys,
// each member's offsets frame a valid value, and nothing panics on
// anything else.
func FuzzObjectMembers(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var ms []member
		err := objectMembers(data, func(m member) error { ms = append(ms, m); return nil })
		if err == nil {
			last := 0
			for _, m := range ms {
				if m.Start < last || m.ValStart <= m.Start || m.End < m.ValStart || m.End > len(data) || data[m.Start] != '"' {
					t.Fatalf("bad offsets %+v in %q", m, data)
				}
				last = m.End
			}
		}
		valid := json.Valid(data)
		trimmed := bytes.TrimSpace(data)
		if !valid || len(trimmed) == 0 || trimmed[0] != '{' {
			return
		}
		if err != nil {
			t.Fatalf("valid object refused: %v: %q", err, data)
		}
		keys, err := topLevelKeys(data)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != len(ms) {
			t.Fatalf("%d members, encoding/json sees %d: %q", len(ms), len(keys), data)
		}
		for i, m := range ms {
			if m.Key != keys[i] || !json.Valid(data[m.ValStart:m.End]) {
				t.Fatalf("member %d: key %q (want %q) value %q", i, m.Key, keys[i], data[m.ValStart:m.End])
			}
		}
		// arrayElements agrees on arrays inside.
		for _, m := range ms {
			v := data[m.ValStart:m.End]
			if v[0] != '[' {
				continue
			}
			var want []json.RawMessage
			if err := json.Unmarshal(v, &want); err != nil {
				t.Fatal(err)
			}
			n := 0
			if err := arrayElements(v, func(a, b int) error {
				if !json.Valid(v[a:b]) {
					t.Fatalf("element %q", v[a:b])
				}
				n++
				return nil
			}); err != nil || n != len(want) {
				t.Fatalf("array %q: %d elements, %v", v, n, err)
			}
		}
	})
}

// topLevelKeys lists the keys of a JSON object in order, duplicates kept.
func topLevelKeys(data []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// apiNames are the path segments the route table and the namespaces
// accept literally, plus _all.
var apiNames = func() map[string]bool {
	m := map[string]bool{"_all": true}
	for _, s := range routeTable {
		for _, seg := range strings.Split(s.path, "/") {
			if strings.HasPrefix(seg, "_") {
				m[seg] = true
			}
		}
	}
	for ns := range namespaces {
		m[ns] = true
	}
	return m
}()

// FuzzClassify checks the properties the route table's security rests on,
// for any method and path: an accepted path is canonical (no empty, "."
// or ".." segment, no ';'); an API name is only ever accepted spelled
// literally, where the table has it (so no encoding, case or typed-route
// trick turns a placeholder into an API call); and classification is
// deterministic.
func FuzzClassify(f *testing.F) {
	f.Fuzz(func(t *testing.T, method, path string) {
		rt := classify(method, path)
		if again := classify(method, path); again != rt {
			t.Fatalf("not deterministic: %+v then %+v", rt, again)
		}
		if rt.Refusal != "" || rt.Op == "other" {
			return
		}
		if !strings.HasPrefix(path, "/") || strings.Contains(path, "//") || (path != "/" && strings.HasSuffix(path, "/")) || strings.Contains(path, ";") {
			t.Fatalf("non-canonical path accepted: %q -> %+v", path, rt)
		}
		raw := strings.Split(strings.TrimPrefix(path, "/"), "/")
		for i, s := range raw {
			d, err := url.PathUnescape(s)
			if err != nil || d == "." || d == ".." {
				t.Fatalf("segment %q of %q accepted", s, path)
			}
			if _, ns := namespaces[raw[0]]; ns && i > 0 {
				continue // a namespace's own paths: refused unless allowed, never an index
			}
			if rt.Op == "scroll" || rt.Op == "clear_scroll" {
				if i == 2 {
					continue // the scroll id is opaque
				}
			}
			for _, part := range strings.Split(d, ",") {
				part = strings.TrimPrefix(part, "-")
				if strings.HasPrefix(part, "_") && (part != s || !apiNames[part]) {
					t.Fatalf("segment %d %q (raw %q) of %q accepted as %+v", i, d, s, path, rt)
				}
			}
		}
		if rt.Index != "" {
			found := false
			for _, s := range raw {
				if d, _ := url.PathUnescape(s); d == rt.Index {
					found = true
				}
			}
			if !found {
				t.Fatalf("index %q is not a segment of %q", rt.Index, path)
			}
		}
	})
}
