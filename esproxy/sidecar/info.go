package sidecar

import (
	"encoding/json"
	"io"
	"net/http"
)

// serveInfo answers GET / and HEAD / (the clients' info() and ping()).
// Elasticsearch answers them itself when its distribution has the root
// handler; a trimmed distribution answers 405, and then the sidecar builds
// the same body from the node info API, so ping() and info() keep working.
// Nothing is cached: each call runs with the client's own credentials.
func (s *Sidecar) serveInfo(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	hdr := internalHeader(r.Header)
	resp, err := s.up.do(ctx, outRequest{method: r.Method, path: "/", header: hdr})
	if err != nil {
		s.upstreamFailed(w, r, err)
		return
	}
	if resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotFound {
		defer resp.Body.Close()
		_ = copyResponse(w, resp)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()

	nodes, err := s.up.do(ctx, outRequest{method: http.MethodGet, path: "/_nodes/_local",
		rawQuery: "filter_path=cluster_name,nodes.*.name,nodes.*.version,nodes.*.build_flavor,nodes.*.build_type,nodes.*.build_hash",
		header:   hdr})
	if err != nil {
		s.upstreamFailed(w, r, err)
		return
	}
	defer nodes.Body.Close()
	if nodes.StatusCode != http.StatusOK {
		_ = copyResponse(w, nodes)
		return
	}
	var ni struct {
		ClusterName string `json:"cluster_name"`
		Nodes       map[string]struct {
			Name        string `json:"name"`
			Version     string `json:"version"`
			BuildFlavor string `json:"build_flavor"`
			BuildType   string `json:"build_type"`
			BuildHash   string `json:"build_hash"`
		} `json:"nodes"`
	}
	if err := json.NewDecoder(io.LimitReader(nodes.Body, 1<<20)).Decode(&ni); err != nil {
		writeESError(w, r, newESError(http.StatusBadGateway, typeUpstream, "Elasticsearch node info is not JSON: "+err.Error()))
		return
	}
	uuid := "_na_"
	if st, err := s.up.do(ctx, outRequest{method: http.MethodGet, path: "/_cluster/state/metadata",
		rawQuery: "filter_path=metadata.cluster_uuid", header: hdr}); err == nil {
		var cs struct {
			Metadata struct {
				ClusterUUID string `json:"cluster_uuid"`
			} `json:"metadata"`
		}
		if st.StatusCode == http.StatusOK && json.NewDecoder(io.LimitReader(st.Body, 64<<10)).Decode(&cs) == nil && cs.Metadata.ClusterUUID != "" {
			uuid = cs.Metadata.ClusterUUID
		}
		st.Body.Close()
	}
	type version struct {
		Number        string `json:"number"`
		BuildFlavor   string `json:"build_flavor"`
		BuildType     string `json:"build_type"`
		BuildHash     string `json:"build_hash"`
		BuildSnapshot bool   `json:"build_snapshot"`
	}
	info := struct {
		Name        string  `json:"name"`
		ClusterName string  `json:"cluster_name"`
		ClusterUUID string  `json:"cluster_uuid"`
		Version     version `json:"version"`
		Tagline     string  `json:"tagline"`
	}{ClusterName: ni.ClusterName, ClusterUUID: uuid, Tagline: "You Know, for Search"}
	for _, n := range ni.Nodes {
		info.Name = n.Name
		info.Version = version{Number: n.Version, BuildFlavor: n.BuildFlavor, BuildType: n.BuildType, BuildHash: n.BuildHash}
	}
	body, _ := json.Marshal(info)
	writeJSON(w, r, http.StatusOK, body)
}

// internalHeader is the client's header set for a call the sidecar makes on
// its behalf: same credentials and request id, no body headers, and no
// compression (the sidecar reads the answer).
func internalHeader(h http.Header) http.Header {
	out := h.Clone()
	for _, k := range []string{"Accept-Encoding", "Content-Type", "Content-Encoding", "Content-Length"} {
		out.Del(k)
	}
	return out
}
