#!/usr/bin/env bash
# deploy/local/elasticsearch-secure.sh — the local stack's second Elasticsearch node, with
# security on: HTTPS on 127.0.0.1:9250 with a generated CA, authentication, a basic-auth user,
# an API key and a role without delete rights; credentials in .local/es-secure.env.
# Same verbs and exit codes as elasticsearch.sh (up|down|status|logs), which does the work
# with ES_NODE=secure; see "The secured node" in deploy/local/README.md.
ES_NODE=secure exec "$(dirname "${BASH_SOURCE[0]}")/elasticsearch.sh" "$@"
