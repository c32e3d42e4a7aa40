package esproxy

import (
	"context"
	"encoding/json"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/tusou/tusou/apierr"
)

// healthTimeout bounds Ping and Ready: probes must answer well inside a
// Kubernetes probe period, and a node that needs longer is not ready.
const healthTimeout = 2 * time.Second

// Ping reports whether the cluster answers at all (any health status). It
// uses _cluster/health rather than GET /, which minimal distributions lack.
func (c *Client) Ping(ctx context.Context) (err error) {
	defer c.observe("ping", time.Now(), &err)
	_, err = c.health(ctx, nil)
	return err
}

// Ready reports whether the alias's shards can serve: health green or yellow
// (yellow is a single node with replicas configured: every primary is up).
// A missing alias or a red index is Unavailable.
func (c *Client) Ready(ctx context.Context) (err error) {
	defer c.observe("ready", time.Now(), &err)
	status, err := c.health(ctx, []string{c.Target()})
	if err != nil {
		return err
	}
	if status != "green" && status != "yellow" {
		return apierr.New(apierr.Unavailable, CodeUnavailable,
			"elasticsearch index %q is not ready (health %s)", c.Target(), status).WithRetryAfter(unavailableRetryAfter)
	}
	return nil
}

// health returns the cluster (or index) health status. A 408 (ES gave up
// waiting, e.g. a missing index) is answered as status "red".
func (c *Client) health(ctx context.Context, index []string) (string, error) {
	ctx, cancel := c.opContext(ctx, healthTimeout)
	defer cancel()
	res, err := c.perform(ctx, "health check", esapi.ClusterHealthRequest{
		Index:         index,
		Timeout:       healthTimeout / 2,
		MasterTimeout: healthTimeout / 2,
		FilterPath:    []string{"status"},
	}, 408)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var out struct {
		Status string `json:"status"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return "", apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "elasticsearch health: unreadable answer")
	}
	if res.StatusCode == 408 || out.Status == "" {
		return "red", nil
	}
	return out.Status, nil
}
