"""The official Python Elasticsearch client (8.19) against tusou's sidecar.

The Go integration test (TestPythonClient) starts a sidecar on the real
local stack and runs this file with SIDECAR_URL (the sidecar), ES_URL
(Elasticsearch itself, for clean-up: the sidecar refuses index deletion) and
FIXTURE_IMAGES (model_repository/testdata/images).
"""

import base64
import os
import secrets
from pathlib import Path

import pytest
from elasticsearch import ApiError, AuthorizationException, Elasticsearch, helpers

SIDECAR_URL = os.environ.get("SIDECAR_URL", "http://127.0.0.1:9201")
ES_URL = os.environ.get("ES_URL", "http://127.0.0.1:9200")
FIXTURES = Path(os.environ.get("FIXTURE_IMAGES", "model_repository/testdata/images"))

# Unquantised HNSW: the tiny random test models put all images within ~1e-3
# cosine of each other, the order of int8 quantisation error.
MAPPINGS = {
    "properties": {
        "image_embedding": {
            "type": "dense_vector", "dims": 512, "index": True, "similarity": "cosine",
            "index_options": {"type": "hnsw"},
        },
        "file": {"type": "keyword"},
        "n": {"type": "integer"},
    }
}


def fixture_images():
    exts = {".jpg", ".png", ".gif", ".webp"}
    files = sorted(p for p in FIXTURES.iterdir() if p.suffix in exts)
    assert files, f"no fixture images in {FIXTURES}"
    return [(p.name, base64.b64encode(p.read_bytes()).decode()) for p in files]


@pytest.fixture(scope="module")
def client():
    # http_compress: request bodies go gzip-compressed, answers come back
    # compressed; both must work through the sidecar.
    c = Elasticsearch(SIDECAR_URL, http_compress=True, request_timeout=120)
    yield c
    c.close()


@pytest.fixture(scope="module")
def direct():
    c = Elasticsearch(ES_URL, request_timeout=60)
    yield c
    c.close()


@pytest.fixture()
def index(client, direct):
    name = "tusou-sc-py-" + secrets.token_hex(4)
    client.indices.create(index=name, mappings=MAPPINGS,
                          settings={"number_of_shards": 1, "number_of_replicas": 0})
    yield name
    direct.indices.delete(index=name, ignore_unavailable=True)


def test_info_and_ping(client):
    assert client.ping()
    info = client.info()
    assert info["version"]["number"].startswith("8.")
    assert info["tagline"] == "You Know, for Search"
    assert client.cluster.health()["status"] in ("green", "yellow")


def test_helpers_bulk_and_scan(client, index):
    images = fixture_images()
    n = 40
    actions = (
        {"_index": index, "_id": f"py-{i}", "_source": {
            "image_base64": images[i % len(images)][1], "file": images[i % len(images)][0], "n": i}}
        for i in range(n)
    )
    ok, errors = helpers.bulk(client, actions, chunk_size=16, refresh="wait_for")
    assert ok == n and errors == []
    assert client.count(index=index)["count"] == n

    # helpers.scan: scroll in pages of 7, clear_scroll at the end.
    seen = {}
    for hit in helpers.scan(client, index=index, query={"query": {"match_all": {}}}, size=7, scroll="1m"):
        src = hit["_source"]
        assert "image_base64" not in src, "the image must not be stored"
        assert len(src["image_embedding"]) == 512
        seen[hit["_id"]] = src["file"]
    assert len(seen) == n
    assert seen["py-3"] == images[3][0]

    # get, mget
    doc = client.get(index=index, id="py-0")
    assert doc["found"] and doc["_source"]["file"] == images[0][0]
    got = client.mget(index=index, ids=["py-1", "py-2", "nope"])
    assert [d["found"] for d in got["docs"]] == [True, True, False]

    # An indexed image finds itself first (ties allowed for identical pixels).
    for name, b64 in images[:6]:
        res = client.search(index=index, size=5, source=["file"], knn={
            "field": "image_embedding", "k": 5, "num_candidates": 100,
            "query_vector_builder": {"image_embedding": {"model_id": "clip_image", "image": b64}},
        })
        hits = res["hits"]["hits"]
        top = hits[0]["_score"]
        assert any(h["_source"]["file"] == name and h["_score"] >= top - 1e-6 for h in hits), (name, hits)

    # Text builder (Elasticsearch's own query_vector_builder shape).
    res = client.search(index=index, knn={
        "field": "image_embedding", "k": 4, "num_candidates": 50,
        "query_vector_builder": {"text_embedding": {"model_id": "clip_text", "model_text": "一只猫坐在沙发上"}},
    }, source=False)
    assert len(res["hits"]["hits"]) == 4


def test_helpers_bulk_item_errors(client, index):
    images = fixture_images()
    actions = [
        {"_index": index, "_id": "ok-1", "_source": {"image_base64": images[0][1]}},
        {"_index": index, "_id": "broken", "_source": {"image_base64": base64.b64encode(b"not an image").decode()}},
        {"_index": index, "_id": "ok-2", "_source": {"image_base64": images[1][1]}},
    ]
    ok, errors = helpers.bulk(client, actions, raise_on_error=False, refresh="wait_for")
    assert ok == 2
    assert len(errors) == 1
    item = errors[0]["index"]
    assert item["_id"] == "broken" and item["status"] == 400
    assert item["error"]["type"] == "tusou_image_exception"
    assert client.count(index=index)["count"] == 2
    assert not client.exists(index=index, id="broken")

    with pytest.raises(helpers.BulkIndexError) as exc:
        helpers.bulk(client, actions[1:2])
    assert exc.value.errors[0]["index"]["status"] == 400

    with pytest.raises(ApiError) as exc:
        client.index(index=index, id="single-bad", document={"image_base64": "AAAA"})
    assert exc.value.meta.status == 400
    assert exc.value.body["error"]["type"] == "tusou_image_exception"


def test_dangerous_calls_refused(client, index, direct):
    for call in (
        lambda: client.indices.delete(index=index),
        lambda: client.delete_by_query(index=index, query={"match_all": {}}),
        lambda: client.cluster.put_settings(persistent={"cluster.routing.allocation.enable": "none"}),
        lambda: client.indices.put_settings(index=index, settings={"number_of_replicas": 1}),
    ):
        with pytest.raises(AuthorizationException) as exc:
            call()
        assert exc.value.meta.status == 403
        assert exc.value.body["error"]["type"] == "security_exception"
    assert direct.indices.exists(index=index)
