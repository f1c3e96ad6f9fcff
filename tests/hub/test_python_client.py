"""The official Python client (``replicate`` 1.0.7 from PyPI), unchanged but for its base
URL, against a real hub on SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import time

import httpx
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput

pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def client(hub) -> replicate.Client:
    return replicate.Client(api_token=hub.token, base_url=hub.url)


def test_run_text_by_model_name(client):
    assert client.run("acme/hello", input={"text": "py"}) == "hello py"


def test_run_by_version_reads_the_version(client):
    model = client.models.get("acme/hello")
    assert model.url.endswith("/acme/hello") and model.visibility == "public" and model.run_count >= 0
    version = model.latest_version
    assert len(version.id) == 64 and version.cog_version == "0.23.1"
    assert version.openapi_schema["components"]["schemas"]["Input"]["properties"]["text"]["type"] == "string"
    assert [v.id for v in model.versions.list()] == [version.id]
    assert client.run(f"acme/hello:{version.id}", input={"text": "v"}) == "hello v"


def test_run_file_output_is_a_file_output(client):
    out = client.run("acme/image", input={"width": 3, "height": 2})
    assert isinstance(out, FileOutput)
    assert out.url.startswith("data:image/png;base64,")
    assert out.read().startswith(b"\x89PNG\r\n\x1a\n")


def test_run_list_of_files(client):
    outs = client.run("acme/files", input={"count": 2})
    assert [o.read() for o in outs] == [b"file number 0\n", b"file number 1\n"]


def test_run_iterator_by_version_yields_tokens(client):
    version = client.models.get("acme/concat").latest_version
    out = client.run(f"acme/concat:{version.id}", input={"count": 5})
    assert list(out) == [f"tok{i} " for i in range(5)]


def test_stream_tokens_one_event_each(client):
    events = list(client.stream("acme/concat", input={"count": 4, "sleep": 0.05}))
    outputs = [str(e) for e in events if e.event.value == "output"]
    assert outputs == [f"tok{i} " for i in range(4)]
    assert events[-1].event.value == "done"


def test_failed_prediction_raises_model_error(client):
    with pytest.raises(ModelError) as info:
        client.run("acme/raises", input={"text": "x"})
    assert "predict failed on purpose: x" in str(info.value)
    assert info.value.prediction.status == "failed"


def test_invalid_input_is_a_422_naming_the_field(client):
    with pytest.raises(ReplicateError) as info:
        client.run("acme/hello", input={"text": 3})
    assert info.value.status == 422
    assert "input.text" in info.value.detail and "string" in info.value.detail


def test_wrong_token_is_the_clients_auth_error(hub):
    bad = replicate.Client(api_token="wrong", base_url=hub.url)
    with pytest.raises(ReplicateError) as info:
        bad.models.get("acme/hello")
    assert info.value.status == 401
    assert info.value.title == "Unauthenticated"


def test_create_get_wait_and_list_with_pages(client):
    created = [client.predictions.create(model="acme/hello", input={"text": f"p{i}"}) for i in range(7)]
    for p in created:
        p.wait()
        assert p.status == "succeeded" and p.output == f"hello {p.input['text']}"
    got = client.predictions.get(created[0].id)
    assert got.output == "hello p0" and got.completed_at
    # page_size is 3 in the test hub.yaml: follow the cursors with the client's own paginator
    seen = []
    for page in replicate.paginate(client.predictions.list):
        assert len(page.results) <= 3
        seen += [p.id for p in page.results]
    ids = [p.id for p in created]
    assert [i for i in seen if i in ids] == list(reversed(ids))  # newest first, none lost or repeated
    assert len(seen) == len(set(seen))
    first = client.predictions.list()
    assert first.next and first.next.startswith("http://")
    second = client.predictions.list(first.next)
    assert second.previous and not set(p.id for p in second.results) & set(p.id for p in first.results)


def test_cancel_a_running_prediction(client):
    p = client.predictions.create(model="acme/slow", input={"seconds": 30})
    deadline = time.monotonic() + 60
    while p.status == "starting" and time.monotonic() < deadline:
        time.sleep(0.2)
        p.reload()
    assert p.status == "processing"
    p.cancel()
    p.wait()
    assert p.status == "canceled"


def test_cancel_a_queued_prediction(client):
    running = client.predictions.create(model="acme/slow", input={"seconds": 5})
    queued = client.predictions.create(model="acme/slow", input={"seconds": 5})
    client.predictions.cancel(queued.id)
    assert client.predictions.get(queued.id).status == "canceled"
    client.predictions.cancel(running.id)


def test_wait_times_out_as_starting_then_run_polls(client):
    p = client.predictions.create(model="acme/slow", input={"seconds": 2.5}, wait=1)
    assert p.status == "starting"  # what run() needs to poll on (reference §5)
    p.wait()
    assert p.status == "succeeded" and p.output == "slept 2.5"
    assert client.run("acme/slow", input={"seconds": 1.5}, wait=1) == "slept 1.5"


def test_file_input_through_files_api(client):
    out = client.run("acme/filesize", input={"file": io.BytesIO(b"some bytes here")})
    assert out == "15:some bytes here"
    files = client.files.list()
    assert files and files[0].name and files[0].etag
    f = client.files.create(io.BytesIO(b"abc"), filename="abc.txt", metadata={"k": "v"})
    assert f.size == 3 and f.metadata == {"k": "v"} and f.checksums["sha256"]
    assert client.files.get(f.id).name == "abc.txt"
    assert client.run("acme/filesize", input={"file": f.urls["get"]}) == "3:abc"
    client.files.delete(f.id)
    with pytest.raises(ReplicateError) as info:
        client.files.get(f.id)
    assert info.value.status == 404


def test_file_input_as_data_url(client):
    assert client.run("acme/filesize", input={"file": io.BytesIO(b"xyz")}, file_encoding_strategy="base64") == "3:xyz"


def test_progress_lines_reach_the_logs(client):
    p = client.predictions.create(model="acme/progress", input={"steps": 4})
    p.wait()
    assert p.output == "done in 4 steps"
    assert "100%|##########| 4/4" in p.logs
    assert p.progress is not None and p.progress.current == 4 and p.progress.total == 4


def test_cogkit_progress_lines_become_tqdm_lines(client):
    p = client.predictions.create(model="acme/progress-cogkit", input={"steps": 4})
    p.wait()
    assert "[progress]" not in p.logs and " 50%|#####     | 2/4 [denoising]" in p.logs
    assert p.progress.current == 4 and p.progress.total == 4


def test_webhooks_are_signed_for_the_clients_validator(client, receiver):
    p = client.predictions.create(model="acme/hello", input={"text": "hook"}, webhook=receiver.url,
                                  webhook_events_filter=["start", "completed"])
    calls = receiver.wait_for(lambda cs: any(c["json"]["status"] == "succeeded" for c in cs))
    secret = client.webhooks.default.secret()
    assert secret.key.startswith("whsec_")
    for call in calls:
        client.webhooks.validate(headers=call["headers"], body=call["body"], secret=secret)  # raises if invalid
        assert call["json"]["id"] == p.id
    final = [c for c in calls if c["json"]["status"] == "succeeded"]
    assert final[-1]["json"]["output"] == "hello hook"
    tampered = dict(calls[0]["headers"])
    from replicate.webhook import InvalidSignatureError

    with pytest.raises(InvalidSignatureError):
        client.webhooks.validate(headers=tampered, body=calls[0]["body"] + " ", secret=secret)


def test_models_list_search_and_account(client):
    names = {m.name for m in client.models.list().results}
    assert "hello" in names or client.models.list().next
    found = client.models.search("concat")
    assert [m.name for m in found.results] == ["concat"]
    assert client.accounts.current().username
    assert client.hardware.list()[0].sku == "cpu"


def test_models_create_and_delete(client):
    m = client.models.create("acme", "empty-model", visibility="private", hardware="cpu", description="nothing yet")
    assert m.visibility == "private" and m.latest_version is None
    assert client.models.delete("acme/empty-model") is True
    with pytest.raises(ReplicateError):
        client.models.get("acme/empty-model")


def test_deployments(client):
    version = client.models.get("acme/hello").latest_version.id
    d = client.deployments.create(name="hello-prod", model="acme/hello", version=version, hardware="cpu",
                                  min_instances=0, max_instances=2)
    assert d.current_release.number == 1
    p = d.predictions.create(input={"text": "dep"})
    p.wait()
    assert p.output == "hello dep"
    d2 = client.deployments.update(d.owner, d.name, max_instances=1)
    assert d2.current_release.number == 2 and d2.current_release.configuration.max_instances == 1
    assert [x.name for x in client.deployments.list().results] == ["hello-prod"]
    assert client.deployments.delete(d.owner, d.name) is True


def test_deployment_min_instances_are_kept_warm(client):
    version = client.models.get("acme/hello").latest_version.id
    d = client.deployments.create(name="hello-warm", model="acme/hello", version=version, hardware="cpu",
                                  min_instances=1, max_instances=1)
    time.sleep(3)  # the server boots now, before any prediction asks for it
    p = d.predictions.create(input={"text": "warm"})
    p.wait()
    assert p.output == "hello warm" and "cold boot" not in p.logs and "boot_time" not in p.metrics
    client.deployments.delete(d.owner, d.name)


def test_training_publishes_a_version_that_run_uses(client):
    client.models.create("acme", "tuned", visibility="private", hardware="cpu")
    base = client.models.get("acme/trainer").latest_version
    assert client.run("acme/trainer", input={"prompt": "x"}) == "base:x"
    training = client.trainings.create(model="acme/trainer", version=base.id, input={"style": "shiny"},
                                       destination="acme/tuned")
    deadline = time.monotonic() + 120
    while training.status not in ("succeeded", "failed", "canceled") and time.monotonic() < deadline:
        time.sleep(0.3)
        training.reload()
    assert training.status == "succeeded", training.error
    assert training.output["version"].startswith("acme/tuned:")
    assert client.run("acme/tuned", input={"prompt": "x"}) == "shiny:x"
    assert any(t.id == training.id for t in client.trainings.list().results)


def test_async_run(hub):
    import asyncio

    async def main():
        c = replicate.Client(api_token=hub.token, base_url=hub.url)
        return await asyncio.gather(*(c.async_run("acme/hello", input={"text": str(i)}) for i in range(4)))

    assert asyncio.run(main()) == [f"hello {i}" for i in range(4)]


def test_stream_url_needs_no_token(client, hub):
    p = client.predictions.create(model="acme/hello", input={"text": "s"})
    r = httpx.get(p.urls["stream"], headers={"Accept": "text/event-stream"}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "event: output\ndata: hello s\n" in r.text and r.text.rstrip().endswith("event: done\ndata: {}")
