"""Experiments over the HTTP API: the platform starts, pauses, resumes and ends one, the platform
and supervisors read them, others may not; bad definitions and winners are 422 naming the field,
an unknown experiment 404, a state that does not allow it 409 (all problem+json); a loan handed
over without a policy is screened (`auto`) and gets its arm from the running experiment."""

from __future__ import annotations

import pytest

from infra.settings import ROOT
from models.experiment import assign, parse_experiment
from tests.helpers import Api, loan_json

SAMPLE = (ROOT / "strategies" / "experiments" / "sample.toml").read_text(encoding="utf-8")
NAME = "early-call-2026-12"


async def test_the_platform_runs_an_experiment_from_start_to_end(api: Api) -> None:
    started = await api.post("/v1/experiments", {"definition": SAMPLE})
    assert started.status_code == 201, started.text
    assert started.json()["name"] == NAME and started.json()["status"] == "running"

    listed = await api.get("/v1/experiments", who="supervisor")
    assert listed.status_code == 200 and [e["name"] for e in listed.json()["experiments"]] == [NAME]
    assert (await api.get(f"/v1/experiments/{NAME}", who="supervisor")).json()["definition"] == SAMPLE

    paused = await api.post(f"/v1/experiments/{NAME}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused" and paused.json()["paused_at"]
    assert (await api.post(f"/v1/experiments/{NAME}/resume")).json()["status"] == "running"

    ended = await api.post(f"/v1/experiments/{NAME}/end", {"winner": "early-call", "segment": "standard"})
    assert ended.status_code == 200, ended.text
    assert ended.json()["status"] == "ended" and ended.json()["winners"] == {"standard": "early-call"}
    again = await api.post(f"/v1/experiments/{NAME}/end", {"winner": "champion", "segment": "high-risk"})
    assert again.json()["winners"] == {"standard": "early-call", "high-risk": "default"}


async def test_a_loan_handed_over_without_a_policy_gets_its_arm(api: Api) -> None:
    assert (await api.post("/v1/experiments", {"definition": SAMPLE})).status_code == 201
    experiment = parse_experiment(SAMPLE, "sample.toml")
    loan_id = next(
        f"API-EXP-{n}"
        for n in range(10_000)
        if assign(experiment, "running", "standard", f"API-EXP-{n}").arm != "champion"
    )
    body = loan_json(loan_id, dpd=20, principal="2000.00")
    del body["policy"]
    assert (await api.post("/v1/loans", body)).status_code == 201
    status = (await api.get(f"/v1/loans/{loan_id}")).json()
    assert status["policy"] == "early-call"
    strategy = status["strategy"]
    assert strategy["screening"]["segment"] == "standard"
    assert strategy["assignment"] == {"experiment": NAME, "arm": "early-call", "policy": "early-call", "in_test": True}


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ("name = ", "not valid TOML"),
        (SAMPLE.replace('share = "0.20"', 'share = "1.5"', 1), "segments.standard.challengers.0.share"),
        (SAMPLE.replace('policy = "early-call"', 'policy = "no-such-policy"', 1), "no such policy file"),
        (SAMPLE.replace('segmentation = "segmentation"', 'segmentation = "nope"'), "no such segmentation file"),
        (SAMPLE.replace("[segments.gentle]", "[segments.gentel]"), "no strategy for segment(s) gentle"),
    ],
)
async def test_a_bad_definition_is_422_naming_the_field(api: Api, definition: str, message: str) -> None:
    answer = await api.post("/v1/experiments", {"definition": definition})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert message in answer.json()["detail"] and answer.json()["errors"][0]["field"] == "body"
    assert (await api.get("/v1/experiments")).json()["experiments"] == []


async def test_what_the_state_does_not_allow_is_409_and_unknown_is_404(api: Api) -> None:
    assert (await api.post("/v1/experiments", {"definition": SAMPLE})).status_code == 201
    twice = await api.post("/v1/experiments", {"definition": SAMPLE})
    assert twice.status_code == 409 and "already running" in twice.json()["detail"]
    other = SAMPLE.replace(f'name = "{NAME}"', 'name = "second"')
    second = await api.post("/v1/experiments", {"definition": other})
    assert second.status_code == 409 and "one experiment at a time" in second.json()["detail"]

    bad_winner = await api.post(f"/v1/experiments/{NAME}/end", {"winner": "early-call", "segment": "low-risk"})
    assert bad_winner.status_code == 422 and "not an arm of segment" in bad_winner.json()["detail"]
    unknown_segment = await api.post(f"/v1/experiments/{NAME}/end", {"winner": "champion", "segment": "nope"})
    assert unknown_segment.status_code == 422
    assert (await api.post(f"/v1/experiments/{NAME}/end", {"winner": "early-call"})).status_code == 200
    assert (await api.post(f"/v1/experiments/{NAME}/pause")).status_code == 409
    restart = await api.post("/v1/experiments", {"definition": SAMPLE})
    assert restart.status_code == 409 and "never starts again" in restart.json()["detail"]

    for path in ("/v1/experiments/nope", "/v1/experiments/nope/pause"):
        missing = await (api.get(path) if path.endswith("nope") else api.post(path))
        assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
    assert (await api.get("/v1/experiments/Not A Name")).status_code == 422


@pytest.mark.parametrize("who", ["collector", "agency", "auditor"])
async def test_only_the_platform_and_supervisors_read_and_only_the_platform_changes(api: Api, who: str) -> None:
    assert (await api.get("/v1/experiments", who=who)).status_code == 403
    assert (await api.post("/v1/experiments", {"definition": SAMPLE}, who=who)).status_code == 403
    assert (await api.post("/v1/experiments", {"definition": SAMPLE}, who="supervisor")).status_code == 403
