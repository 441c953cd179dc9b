"""A hand-written client in another language (Python + httpx), as an integrator would write it."""

import uuid

import httpx

SPECIAL = '100% & done + "quoted" ü ✓ 🚀\nline2'
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "code", "request_id"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == "application/problem+json"
    body = response.json()
    missing = PROBLEM_FIELDS - body.keys()
    assert not missing, f"problem document lacks {missing}: {body}"
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith(code), body
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    if "dsm_code" in body:
        assert body["dsm_code"] is None or isinstance(body["dsm_code"], int)
    return body


def test_list_channels(api):
    response = api.get("/channels")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    channels = response.json()["items"]
    assert channels, "demo mode has channels"
    for channel in channels:
        assert isinstance(channel["channel_id"], int) and channel["channel_id"] >= 1
        assert isinstance(channel.get("name", ""), str)
        assert isinstance(channel.get("members", []), list)
    names = {c.get("name") for c in channels}
    assert "general" in names, names


def test_get_one_channel_matches_list(api, channel_id):
    listed = {c["channel_id"]: c for c in api.get("/channels").json()["items"]}[channel_id]
    response = api.get(f"/channels/{channel_id}")
    assert response.status_code == 200, response.text
    assert response.json()["channel_id"] == channel_id
    assert response.json().get("name") == listed.get("name")


def test_post_special_characters_and_read_back(api, channel_id):
    created = api.post(f"/channels/{channel_id}/posts", json={"message": SPECIAL})
    assert created.status_code == 201, created.text
    post = created.json()
    assert post["message"] == SPECIAL
    assert post["channel_id"] == channel_id
    post_id = post["post_id"]

    # The raw bytes on the wire are UTF-8 JSON; the decoded text is identical.
    listed = api.get(f"/channels/{channel_id}/posts", params={"limit": 50, "offset": 0})
    assert listed.status_code == 200, listed.text
    found = [p for p in listed.json()["items"] if p["post_id"] == post_id]
    assert found, f"post {post_id} not in the first page"
    assert found[0]["message"] == SPECIAL
    assert found[0]["message"].encode("utf-8") == SPECIAL.encode("utf-8")


def test_posts_paging(api, channel_id):
    for i in range(3):
        assert api.post(f"/channels/{channel_id}/posts", json={"message": f"paging {i}"}).status_code == 201
    first = api.get(f"/channels/{channel_id}/posts", params={"limit": 2}).json()["items"]
    second = api.get(f"/channels/{channel_id}/posts", params={"limit": 2, "offset": 2}).json()["items"]
    assert len(first) == 2 and len(second) >= 1
    assert not {p["post_id"] for p in first} & {p["post_id"] for p in second}
    assert [p["message"] for p in first] == ["paging 2", "paging 1"]


def test_bad_channel_id_is_400_problem(api):
    body = assert_problem(api.get("/channels/not-a-number"), 400, "invalid_request")
    assert body["instance"].endswith("/api/v1/channels/not-a-number")


def test_bad_query_parameter_is_400_problem(api, channel_id):
    assert_problem(api.get(f"/channels/{channel_id}/posts", params={"limit": "lots"}), 400, "invalid_request")


def test_malformed_json_body_is_400_problem(api, channel_id):
    response = api.post(
        f"/channels/{channel_id}/posts",
        content=b'{"message": ',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 400, "invalid_request")


def test_wrong_content_type_is_415_problem(api, channel_id):
    response = api.post(
        f"/channels/{channel_id}/posts", content=b"hello", headers={"Content-Type": "text/plain"}
    )
    assert_problem(response, 415, "unsupported_media_type")


def test_missing_key_is_401_with_bearer_challenge(anon):
    response = anon.get("/api/v1/channels")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].split()[0] == "Bearer"


def test_unknown_key_is_401(base_url):
    response = httpx.get(
        f"{base_url}/api/v1/channels", headers={"Authorization": "Bearer not-a-key"}, timeout=10
    )
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_unknown_route_is_404_problem(api):
    body = assert_problem(api.get("/no-such-thing"), 404, "route_not_found")
    assert body["instance"] == "/api/v1/no-such-thing"


def test_undocumented_method_is_405_with_allow(anon, openapi_doc):
    methods = {m for m in openapi_doc["paths"]["/healthz"] if m in ("get", "put", "post", "delete", "patch")}
    unused = next(m for m in ("delete", "patch", "put", "post") if m not in methods)
    response = anon.request(unused.upper(), "/healthz")
    assert_problem(response, 405, "method_not_allowed")
    allowed = {m.strip().lower() for m in response.headers["allow"].split(",")}
    assert methods <= allowed, (methods, allowed)


def test_request_id_is_echoed(api):
    request_id = f"e2e-{uuid.uuid4()}"
    ok = api.get("/channels", headers={"X-Request-Id": request_id})
    assert ok.status_code == 200
    assert ok.headers["x-request-id"] == request_id
    failed = api.get("/channels/0", headers={"X-Request-Id": request_id})
    assert failed.status_code in (400, 404)
    assert failed.headers["x-request-id"] == request_id
    assert failed.json()["request_id"] == request_id


def test_generated_request_id_when_none_sent(api):
    first = api.get("/channels").headers.get("x-request-id")
    second = api.get("/channels").headers.get("x-request-id")
    assert first and second and first != second


def test_openapi_servers_name_the_origin_called(base_url, openapi_doc):
    assert openapi_doc["openapi"].startswith("3.1")
    assert [s["url"].rstrip("/") for s in openapi_doc["servers"]] == [base_url]
