"""Generate a Python client from the live /openapi.json with openapi-python-client and use it.

A document the generator rejects, or any warning it prints (it warns when it skips an operation,
a response or a parameter), fails the test: users generate clients, so the document must be
consumable as it is.
"""

import importlib
import json
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).resolve().parent
SPECIAL = '100% & done + "quoted" ü ✓ 🚀\nline2'


def _generator() -> list[str]:
    exe = Path(sys.executable).with_name("openapi-python-client")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("openapi-python-client")
    assert found, "openapi-python-client is not installed (tests/e2e/requirements.txt)"
    return [found]


_GENERATED: dict = {}


@pytest.fixture()
def generated(base_url, tmp_path_factory):
    """The generated package, imported from a temporary directory; generated once per session.

    Generation failing is reported once, as the first test's error; the other tests skip.
    """
    if "error" in _GENERATED:
        pytest.skip("the client could not be generated (see the first error)")
    if "package" not in _GENERATED:
        try:
            _GENERATED["package"] = _generate(base_url, tmp_path_factory)
        except AssertionError as error:
            _GENERATED["error"] = str(error)
            pytest.fail(str(error), pytrace=False)
    return _GENERATED["package"]


def _generate(base_url, tmp_path_factory):
    work = tmp_path_factory.mktemp("generated-client")
    spec = work / "openapi.json"
    spec.write_bytes(httpx.get(f"{base_url}/openapi.json", timeout=10).raise_for_status().content)
    out = work / "gateway_client"
    proc = subprocess.run(
        [*_generator(), "generate", "--path", str(spec), "--meta", "none",
         "--output-path", str(out), "--config", str(HERE / "generator-config.yaml")],
        capture_output=True, text=True, timeout=180,
    )
    report = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or not out.is_dir():
        raise AssertionError(f"openapi-python-client failed (exit {proc.returncode}):\n{report}")
    lowered = report.lower()
    if "warning" in lowered or "error" in lowered:
        raise AssertionError(f"openapi-python-client reported problems:\n{report}")

    sys.path.insert(0, str(work))
    try:
        return importlib.import_module("gateway_client")
    except Exception as error:
        sys.path.remove(str(work))
        raise AssertionError(f"the generated package does not import: {error!r}") from error


def _operation(package, operation_id: str):
    """The generated module of one operation, found by its operationId in whatever tag."""
    api = importlib.import_module(f"{package.__name__}.api")
    for info in pkgutil.walk_packages(api.__path__, prefix=f"{api.__name__}."):
        if info.name.rsplit(".", 1)[-1] == operation_id:
            return importlib.import_module(info.name)
    raise AssertionError(f"the generated client has no module for operationId {operation_id}")


@pytest.fixture()
def client(generated, base_url, api_key):
    client = generated.AuthenticatedClient(base_url=base_url, token=api_key, raise_on_unexpected_status=True)
    with client as c:
        yield c


def test_every_documented_operation_was_generated(generated, openapi_doc):
    operation_ids = [
        op["operationId"]
        for item in openapi_doc["paths"].values()
        for method, op in item.items()
        if method in ("get", "put", "post", "delete", "patch") and "operationId" in op
    ]
    assert operation_ids
    for operation_id in operation_ids:
        module = _operation(generated, operation_id)
        assert hasattr(module, "sync_detailed"), operation_id
    # Every generated module imports (no syntax errors or dangling model imports).
    for info in pkgutil.walk_packages(generated.__path__, prefix="gateway_client."):
        importlib.import_module(info.name)


def test_generated_client_lists_channels(generated, client):
    result = _operation(generated, "list_channels").sync(client=client)
    assert type(result).__name__ == "ChannelList", result
    assert result.items
    names = [c.name for c in result.items]
    assert "general" in names, names
    assert all(isinstance(c.channel_id, int) for c in result.items)


def test_generated_client_creates_and_reads_back_a_post(generated, client):
    channels = _operation(generated, "list_channels").sync(client=client).items
    channel = next(c for c in channels if c.type_ in ("public", "private"))
    body_cls = getattr(generated.models, "NewPostBody")
    created = _operation(generated, "create_post").sync_detailed(
        channel_id=channel.channel_id, client=client, body=body_cls(message=SPECIAL)
    )
    assert created.status_code == 201, created.content
    post = created.parsed
    assert type(post).__name__ == "Post", post
    assert post.message == SPECIAL and post.channel_id == channel.channel_id

    listed = _operation(generated, "list_posts").sync(client=client, channel_id=channel.channel_id, limit=50)
    assert type(listed).__name__ == "PostList", listed
    mine = [p for p in listed.items if p.post_id == post.post_id]
    assert mine and mine[0].message == SPECIAL


def test_generated_client_parses_problem_documents(generated, client):
    response = _operation(generated, "get_channel").sync_detailed(channel_id=2_000_000_000, client=client)
    assert response.status_code == 404
    problem = response.parsed
    assert type(problem).__name__ == "Problem", problem
    assert problem.status == 404 and problem.code == "not_found"
    assert problem.request_id == response.headers["x-request-id"]
    # And the raw document matches what the model kept.
    assert json.loads(response.content)["code"] == problem.code
