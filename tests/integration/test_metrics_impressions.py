"""GET /metrics, impressions and A/B arms on the real server: demo_server.py with --workers 2, an
experiment file and a small impression cap, over a Redis of its own.

What is checked: a scrape sums both workers and names no user or query; every list answer's
rec_id joins a click to its impression, and a rec_id that is malformed, unknown, another user's
or without the product is refused with nothing recorded; the impression stream stays near its
cap; a user's arm is the same on every request whichever worker answers; bad experiment files
stop the start with a message.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from local_redis import LocalRedis, free_port
from recengine.experiments import parse_experiment
from recengine.impressions import SHOWN_KEY

ROOT = Path(__file__).resolve().parents[2]
CAP = 50
# Redis trims a stream by whole listpack nodes (stream-node-max-entries, 100 by default).
NODE_ENTRIES = 100
EXPERIMENT: dict[str, Any] = {
    "name": "blend-test",
    "min_users_per_arm": 2,
    "arms": [
        {"name": "control", "share": 0.5, "config": {}},
        {"name": "no-session", "share": 0.5, "config": {"session_weight": 0.0}},
    ],
}
SECRET_USER = "leak-check-user-7f3a"
SECRET_QUERY = "zebra-striped leakcheck umbrella"


class Client:
    """One new connection per request, so that both workers answer (SO_REUSEPORT spreads them)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, method: str, path: str, fields: dict[str, Any] | None = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            body = json.dumps(fields) if fields is not None else None
            headers = {"Content-Type": "application/json"} if body else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(data) if kind.startswith("application/json") else data.decode()


@pytest.fixture(scope="module")
def redis_for_server() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture(scope="module")
def server(redis_for_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    folder = tmp_path_factory.mktemp("experiment")
    experiment = folder / "experiment.json"
    experiment.write_text(json.dumps(EXPERIMENT))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "demo_server.py"), "--port", str(port), "--redis-url", redis_for_server.url,
         "--workers", "2", "--experiment", str(experiment), "--impressions-cap", str(CAP)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    client = Client(port)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if client.call("GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {process.stderr.read() if process.stderr else ''}")
            time.sleep(0.2)
        yield client
    finally:
        process.terminate()
        process.wait(timeout=30)


def search(client: Client, user: str, query: str = "running shoes") -> dict[str, Any]:
    status, answer = client.call("POST", "/search", {"query": query, "user_id": user})
    assert status == 200, answer
    return answer


def sample_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition text (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_a_scrape_sums_both_workers_and_names_no_user_or_query(server: Client) -> None:
    before = server.call("GET", "/metrics")[1]
    searches = 12
    for _ in range(searches):
        answer = search(server, SECRET_USER, SECRET_QUERY)
    status, click = server.call(
        "POST",
        "/click",
        {"user_id": SECRET_USER, "product_id": answer["candidates"][0]["id"], "rec_id": answer["rec_id"]},
    )
    assert status == 200, click
    scrapes = [server.call("GET", "/metrics") for _ in range(6)]
    for status, text in scrapes:
        assert status == 200
        counted = sample_value(
            text, "recommender_http_request_duration_seconds_count", endpoint="/search", status="200"
        ) - sample_value(before, "recommender_http_request_duration_seconds_count", endpoint="/search", status="200")
        assert counted == searches  # every scrape, whichever worker answers it, sees both workers' requests
        assert SECRET_USER not in text and "zebra" not in text and "leakcheck" not in text
        assert answer["candidates"][0]["id"] not in text
    text = scrapes[-1][1]
    arm = answer["candidates"][0]["why"]["arm"]
    assert sample_value(text, "recommender_impressions_total", source="search", arm=arm) >= searches
    assert sample_value(text, "recommender_clicks_total", source="search", arm=arm) >= 1
    assert sample_value(text, "recommender_events_total", type="click") >= 1
    assert sample_value(text, "recommender_query_cache_lookups_total", result="hit") >= searches - 2
    assert "recommender_encoder_batch_size_bucket" in text
    # a path a client invents is "other", never a label of its own
    server.call("GET", "/no-such-page-leakcheck")
    assert "leakcheck" not in server.call("GET", "/metrics")[1]


def test_a_click_with_its_rec_id_is_joined_to_the_impression(server: Client) -> None:
    user = "joiner-1"
    answer = search(server, user)
    product = answer["candidates"][2]["id"]
    status, _ = server.call("POST", "/click", {"user_id": user, "product_id": product, "rec_id": answer["rec_id"]})
    assert status == 200
    status, report = server.call("GET", "/report?window=600")
    assert status == 200
    group = next(
        g for g in report["groups"] if g["source"] == "search" and g["arm"] == answer["candidates"][0]["why"]["arm"]
    )
    assert group["ctr"]["successes"] >= 1
    assert {arm["arm"] for arm in report["experiment"]["arms"]} == {"control", "no-session"}


@pytest.mark.parametrize(
    ("rec_id", "status", "words"),
    [
        ("not-an-id", 400, "rec_id must be"),
        ("1-1", 404, "not a list shown to this user"),
        ("other-user", 404, "not a list shown to this user"),
        ("absent-product", 400, "was not in the list"),
    ],
)
def test_a_bad_rec_id_is_refused_and_nothing_is_recorded(server: Client, rec_id: str, status: int, words: str) -> None:
    owner, clicker = "owner-of-list", f"clicker-{rec_id}"
    shown = search(server, owner)
    mine = search(server, clicker)
    product = mine["candidates"][0]["id"]
    if rec_id == "other-user":
        rec_id, product = shown["rec_id"], shown["candidates"][0]["id"]
    elif rec_id == "absent-product":
        rec_id = mine["rec_id"]
        product = next(p["id"] for p in server.call("GET", "/state")[1]["products"] if p["id"] not in
                       {c["id"] for c in mine["candidates"]})  # fmt: skip
    answer_status, answer = server.call("POST", "/click", {"user_id": clicker, "product_id": product, "rec_id": rec_id})
    assert answer_status == status and words in answer["error"], answer
    state = server.call("GET", f"/state?user_id={clicker}")[1]
    assert state["user"]["clicks"] == 0  # nothing half-applied


def test_the_impression_stream_stays_near_its_cap(server: Client, redis_for_server: LocalRedis) -> None:
    for number in range(CAP + 2 * NODE_ENTRIES):
        assert server.call("POST", "/recommend", {"user_id": f"cap-{number % 7}"})[0] == 200
    length = redis.Redis.from_url(redis_for_server.url).xlen(SHOWN_KEY)
    assert CAP <= length <= CAP + NODE_ENTRIES


def test_a_users_arm_is_the_same_on_every_request_and_worker(server: Client) -> None:
    experiment = parse_experiment(EXPERIMENT)
    seen: dict[str, set[str]] = {}
    for user in [f"sticky-{n}" for n in range(8)]:
        for _ in range(4):
            _, answer = server.call("POST", "/recommend", {"user_id": user})
            seen.setdefault(user, set()).update(c["why"]["arm"] for c in answer["candidates"])
    assert all(arms == {experiment.arm_for(user).name} for user, arms in seen.items())
    assert {arm for arms in seen.values() for arm in arms} == {"control", "no-session"}


@pytest.mark.parametrize(
    ("experiment", "words"),
    [
        ({**EXPERIMENT, "arms": [{**EXPERIMENT["arms"][0], "share": 0.6}, EXPERIMENT["arms"][1]]}, "must sum to 1"),
        ({**EXPERIMENT, "arms": [EXPERIMENT["arms"][0], {**EXPERIMENT["arms"][1], "name": "control"}]}, "repeated"),
        (
            {**EXPERIMENT, "arms": [EXPERIMENT["arms"][0], {**EXPERIMENT["arms"][1], "config": {"sesion_weight": 0}}]},
            "unknown RankingConfig field(s) ['sesion_weight']",
        ),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_bad_experiment_file_stops_the_start_with_a_message(tmp_path: Path, experiment: Any, words: str) -> None:
    path = tmp_path / "experiment.json"
    path.write_text(experiment if isinstance(experiment, str) else json.dumps(experiment))
    result = subprocess.run(
        [sys.executable, str(ROOT / "demo_server.py"), "--port", str(free_port()), "--experiment", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert words in result.stderr and "--experiment" in result.stderr and "Traceback" not in result.stderr
