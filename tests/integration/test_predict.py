"""`loyalty-model predict` end to end on the tiny world: train once, then score."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from loyalty_model.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory):
    """A model trained on tiny in a temporary tracking store (env set for this module)."""
    root = tmp_path_factory.mktemp("store")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.chdir(root)
    result = runner.invoke(app, ["train", "--data", str(tiny_world)])
    assert result.exit_code == 0, result.output
    yield tiny_world
    mp.undo()


def run_predict(data, out, *extra):
    return runner.invoke(
        app, ["predict", "--data", str(data), "--brand", "b0001", "--out", str(out), *extra]
    )


@pytest.fixture(scope="module")
def scored(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred") / "out"
    result = run_predict(trained, out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_a_scenario_of_the_simulator_is_checked_against_its_truth(trained, tmp_path):
    meta = json.loads((trained / "simulation.json").read_text())
    sc = meta["scoring_scenarios"][0]
    args = ["--brand", sc["brand_id"], "--as-of", sc["as_of"]]
    result = runner.invoke(
        app, ["predict", "--data", str(trained), "--out", str(tmp_path / "o"), *args]
    )
    assert result.exit_code == 0, result.output
    assert "against the simulator's ground truth (of the followers in the data): Spearman" in (
        result.output
    )
    # another request: nothing to compare with
    other = run_predict(trained, tmp_path / "p", "--as-of", "2024-03-01")
    assert other.exit_code == 0 and "ground truth" not in other.output


def test_writes_the_four_files(scored):
    out, output = scored
    assert sorted(p.name for p in out.iterdir()) == [
        "audience_explanations.parquet",
        "audience_scores.parquet",
        "follower_scores.parquet",
        "manifest.json",
    ]
    assert "top audiences for b0001" in output and str(out) in output


def test_follower_rows_are_the_audiences_at_as_of(scored, trained):
    out, _ = scored
    f = pd.read_parquet(out / "follower_scores.parquet")
    assert list(f.columns) == [
        "follower_id",
        "influencer_id",
        "brand_id",
        "as_of",
        "p_loyal",
        "model_name",
        "model_version",
    ]
    as_of = f.as_of.iloc[0]
    last = duckdb.sql(f"SELECT max(event_ts) FROM '{trained / 'events.parquet'}'").fetchall()[0][0]
    assert as_of == pd.Timestamp(last.date() + pd.Timedelta(days=1), tz="UTC")
    follows = pd.read_parquet(trained / "follows.parquet")
    active = follows[
        (follows.followed_at <= as_of)
        & (follows.unfollowed_at.isna() | (follows.unfollowed_at > as_of))
    ]
    assert len(f) == len(active.drop_duplicates(["follower_id", "influencer_id"]))
    assert f.p_loyal.between(0, 1).all() and f.p_loyal.nunique() > 10
    assert (f.brand_id == "b0001").all() and (f.model_name == "audience-loyalty").all()
    assert (f.model_version == "1").all()


def test_audience_sums_equal_follower_sums(scored, trained):
    out, _ = scored
    f = pd.read_parquet(out / "follower_scores.parquet")
    a = pd.read_parquet(out / "audience_scores.parquet").set_index("influencer_id")
    inf = pd.read_parquet(trained / "influencers.parquet").set_index("influencer_id")
    assert set(a.index) == set(inf.index)  # every influencer, even empty audiences
    sums = f.groupby("influencer_id").p_loyal.agg(["sum", "count"])
    np.testing.assert_allclose(a.loc[sums.index, "expected_loyal_scored"], sums["sum"], rtol=1e-12)
    assert (a.loc[sums.index, "followers_scored"] == sums["count"]).all()
    np.testing.assert_allclose(a.loc[sums.index, "loyal_rate"], sums["sum"] / sums["count"])
    np.testing.assert_allclose(a.loyal_per_1k_followers, 1000 * a.loyal_rate)


def test_counts_and_costs_are_on_the_whole_audience(scored, trained):
    """The price buys follower_count followers: counts and costs refer to them, whatever
    share of them `follows` holds (recorded as the sample fraction)."""
    out, _ = scored
    a = pd.read_parquet(out / "audience_scores.parquet").set_index("influencer_id")
    inf = pd.read_parquet(trained / "influencers.parquet").set_index("influencer_id")
    seen = a[a.followers_scored > 0]
    np.testing.assert_allclose(seen.expected_loyal, seen.loyal_rate * seen.follower_count)
    assert (seen.expected_loyal >= seen.expected_loyal_scored - 1e-9).all()
    np.testing.assert_allclose(
        seen.sample_fraction, inf.loc[seen.index, "sample_fraction"], rtol=1e-12
    )
    assert seen.sample_fraction_declared.all()
    priced = seen.dropna(subset=["price_per_post"])
    np.testing.assert_allclose(
        priced.cost_per_expected_loyal, priced.price_per_post / priced.expected_loyal
    )


def test_intervals_and_ranks_are_sane(scored):
    out, _ = scored
    a = pd.read_parquet(out / "audience_scores.parquet")
    seen = a[a.followers_scored > 0]
    for scale in ("expected_loyal", "expected_loyal_scored"):
        assert (seen[f"{scale}_low"] <= seen[scale] + 1e-9).all()
        assert (seen[scale] <= seen[f"{scale}_high"] + 1e-9).all()
    assert (seen.expected_loyal_high <= seen.follower_count).all()
    assert (seen.expected_loyal_scored_high <= seen.followers_scored).all()
    by_cost = a.dropna(subset=["rank_cost"]).sort_values("rank_cost")
    assert list(by_cost.rank_cost) == list(range(1, len(by_cost) + 1))
    assert by_cost.cost_per_expected_loyal.is_monotonic_increasing
    assert by_cost.price_per_post.notna().all()
    by_rate = a.dropna(subset=["rank_rate"]).sort_values("rank_rate")
    assert list(by_rate.rank_rate) == list(range(1, len(by_rate) + 1))
    assert by_rate.loyal_rate.is_monotonic_decreasing
    assert len(by_rate) == len(seen)  # every influencer with followers scored has a rate rank
    # rows: priced first by cost, then the rest by rate
    assert list(a.influencer_id[: len(by_cost)]) == list(by_cost.influencer_id)


def test_manifest(scored, trained):
    out, _ = scored
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["name"] == "audience-loyalty" and m["model"]["version"] == "1"
    assert m["model"]["run_id"] and m["model"]["uri"] == "models:/audience-loyalty@champion"
    assert m["brand_id"] == "b0001" and m["output_schema_version"] == "2.3"
    last = pd.read_parquet(trained / "events.parquet").event_ts.max()
    assert m["data_last_event"] == last.isoformat() and m["as_of_days_after_last_event"] == 1
    assert m["data_warnings"] == [] and m["on_bad_rows"] == "fail" and m["quarantined"] == {}
    assert m["follower_ids"] == {"pseudonymized": False}
    drift = m["drift"]  # every feature the model reads, against its training rows
    assert (
        drift["rows_scored"] == m["rows_written"]["follower_scores"] and drift["threshold"] == 0.25
    )
    assert len(drift["psi"]) > 50 and all(v >= 0 for v in drift["psi"].values())
    assert drift["flagged"] == sorted(
        (k for k, v in drift["psi"].items() if v > 0.25), key=lambda k: -drift["psi"][k]
    )
    assert m["currency"] == "USD" and m["scale"] == "full_audience" and m["engine"] == "duckdb"
    aud = m["audiences"]
    assert aud["influencers"] == 12 and aud["sample_fraction_declared"] == 12
    ev = m["inputs"]["events"]
    assert ev["sha256"] == hashlib.sha256((trained / "events.parquet").read_bytes()).hexdigest()
    assert ev["rows"] == len(pd.read_parquet(trained / "events.parquet"))
    f = pd.read_parquet(out / "follower_scores.parquet")
    assert m["rows_written"]["follower_scores"] == len(f)
    assert set(m["audience_spread"]) <= {"nano", "micro", "mid", "macro", "mega"}
    assert m["audience_spread"] and all(v >= 0 for v in m["audience_spread"].values())


def test_explanations_add_up_to_the_raw_scores_of_the_followers_explained(scored, trained):
    """Per audience, the families' mean contributions plus the base are the mean raw score
    (log-odds before calibration) of its first followers, at most EXPLAIN_FOLLOWERS."""
    from loyalty_model import tracking
    from loyalty_model.config import load_config
    from loyalty_model.scoring import EXPLAIN_FOLLOWERS, FAMILIES

    out, _ = scored
    ex = pd.read_parquet(out / "audience_explanations.parquet")
    f = pd.read_parquet(out / "follower_scores.parquet")
    scored_per = f.groupby("influencer_id").size()
    assert sorted(ex.influencer_id.unique()) == sorted(scored_per.index)
    counts = ex.groupby("influencer_id").followers_explained.first()
    assert (counts == scored_per.clip(upper=EXPLAIN_FOLLOWERS).loc[counts.index]).all()
    assert set(ex.family) <= {name for _, name in FAMILIES} | {"base"}
    # the raw score of the first followers, from the model itself
    model, _ = tracking.load_for_scoring(
        "models:/audience-loyalty@champion", load_config(None).tracking
    )
    p = f.groupby("influencer_id").head(EXPLAIN_FOLLOWERS)
    logit = np.log(p.p_loyal / (1 - p.p_loyal))
    total = ex.groupby("influencer_id").mean_contribution.sum()
    cal = model.calibrator
    if cal.method == "sigmoid":  # logit(p) = a raw + b: the raw score back from p
        raw = ((logit - cal.b) / cal.a).groupby(p.influencer_id).mean()
        np.testing.assert_allclose(total.to_numpy(), raw.loc[total.index].to_numpy(), atol=1e-6)
    else:  # isotonic keeps only the order of the raw scores
        mean_logit = logit.groupby(p.influencer_id).mean().loc[total.index]
        assert total.corr(mean_logit, "spearman") > 0.9


def test_deterministic_bytes(trained, scored, tmp_path):
    out, _ = scored
    again = tmp_path / "again"
    assert run_predict(trained, again).exit_code == 0
    for name in ("follower_scores.parquet", "audience_scores.parquet"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_small_batches_give_the_same_scores(trained, scored, tmp_path):
    out, _ = scored
    small = tmp_path / "small"
    assert run_predict(trained, small, "--batch-rows", "1000").exit_code == 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(small / "follower_scores.parquet"),
        pd.read_parquet(out / "follower_scores.parquet"),
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(small / "audience_scores.parquet"),
        pd.read_parquet(out / "audience_scores.parquet"),
    )


def test_csv_output_matches_parquet(trained, scored, tmp_path):
    out, _ = scored
    csv = tmp_path / "csv"
    assert run_predict(trained, csv, "--format", "csv").exit_code == 0
    a_csv = pd.read_csv(csv / "audience_scores.csv")
    a_pq = pd.read_parquet(out / "audience_scores.parquet")
    np.testing.assert_allclose(a_csv.expected_loyal, a_pq.expected_loyal)
    assert list(a_csv.influencer_id) == list(a_pq.influencer_id)
    assert len(pd.read_csv(csv / "follower_scores.csv")) == len(
        pd.read_parquet(out / "follower_scores.parquet")
    )


def test_influencer_subset_and_file(trained, tmp_path):
    out = tmp_path / "subset"
    assert run_predict(trained, out, "--influencers", "i0001,i0003").exit_code == 0
    a = pd.read_parquet(out / "audience_scores.parquet")
    assert sorted(a.influencer_id) == ["i0001", "i0003"]
    ids = tmp_path / "ids.txt"
    ids.write_text("i0002\ni0004\n")
    out2 = tmp_path / "from_file"
    assert run_predict(trained, out2, "--influencers", f"@{ids}").exit_code == 0
    f = pd.read_parquet(out2 / "follower_scores.parquet")
    assert set(f.influencer_id) <= {"i0002", "i0004"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--brand", "nope"], "brands.brand_id: unknown brand 'nope'"),
        (["--influencers", "i0001,zz9,zz8"], "2 unknown influencer(s), e.g. 'zz8', 'zz9'"),
        (["--as-of", "2020-01-01"], "is not after the first event"),
        (["--as-of", "someday"], "as-of must be a date YYYY-MM-DD"),
        (
            ["--as-of", "2030-01-01"],
            "days without any event (the data's last event is on 2025-02-03)",
        ),
        (["--model", "models:/audience-loyalty@nope"], "cannot load model"),
        (["--format", "xlsx"], "format must be parquet or csv"),
    ],
)
def test_bad_arguments_fail_cleanly_and_write_nothing(trained, tmp_path, extra, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("keep me")
    args = ["predict", "--data", str(trained), "--brand", "b0001", "--out", str(out), *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folder left behind


def test_a_stale_as_of_is_scored_when_allowed_and_says_how_stale(trained, tmp_path):
    result = run_predict(trained, tmp_path / "o", "--as-of", "2030-01-01", "--allow-stale")
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert (
        m["as_of_days_after_last_event"]
        == (pd.Timestamp("2030-01-01") - pd.Timestamp("2025-02-03")).days
    )


def _copy_world(src, dst):
    dst.mkdir()
    for name in ("events", "follows", "influencers", "brands", "campaigns"):
        (dst / f"{name}.parquet").write_bytes((src / f"{name}.parquet").read_bytes())
    return dst


def test_bad_rows_fail_by_default_and_drop_to_quarantine_without_changing_scores(
    trained, scored, tmp_path
):
    data = _copy_world(trained, tmp_path / "data")
    events = pd.read_parquet(data / "events.parquet")
    future = events.iloc[:3].assign(event_ts=pd.Timestamp("2100-01-01", tz="UTC"))
    again = events.sample(100, random_state=1)
    pd.concat([events, future, again], ignore_index=True).to_parquet(data / "events.parquet")
    refused = run_predict(data, tmp_path / "refused")
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "events.event_ts: after the moment of the run" in refused.output
    assert "(+1 more problems; run `loyalty-model validate`)" in refused.output
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "dropped"
    result = run_predict(data, out, "--on-bad-rows", "drop")
    assert result.exit_code == 0, result.output
    assert "dropped: 100 row(s): events: exact duplicate row" in result.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["on_bad_rows"] == "drop"
    assert m["quarantined"] == {
        "events": {
            "events: exact duplicate row": 100,
            "events.event_ts: after the moment of the run": 3,  # the same words every run
        }
    }
    q = pd.read_parquet(out / "quarantine" / "events.parquet")
    assert len(q) == 103 and set(q.reason) == set(m["quarantined"]["events"])
    # what is left is the clean world: the same scores, byte for byte
    clean, _ = scored
    for name in ("follower_scores.parquet", "audience_scores.parquet"):
        assert (out / name).read_bytes() == (clean / name).read_bytes(), name


def test_an_empty_campaigns_table_is_scored_with_a_warning(trained, tmp_path):
    data = _copy_world(trained, tmp_path / "data")
    pd.read_parquet(data / "campaigns.parquet").iloc[:0].to_parquet(data / "campaigns.parquet")
    result = run_predict(data, tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "warning: campaigns: the table is empty" in result.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert len(m["data_warnings"]) == 1 and m["data_warnings"][0].startswith("campaigns: the ")


def test_pseudonymized_follower_ids_are_keyed_hashes_and_the_key_is_nowhere(
    trained, scored, tmp_path, monkeypatch
):
    import hmac
    import os

    secret = "s3cr3t-Key-7f1c9a"
    monkeypatch.setenv("LOYALTY_TEST_KEY", secret)
    out = tmp_path / "pseudo"
    result = run_predict(
        trained, out, "--pseudonymize-followers", "LOYALTY_TEST_KEY", "--batch-rows", "1000"
    )
    assert result.exit_code == 0, result.output
    clean, _ = scored
    plain = pd.read_parquet(clean / "follower_scores.parquet")
    got = pd.read_parquet(out / "follower_scores.parquet")

    def pseudonym(i: str) -> str:
        return hmac.new(secret.encode(), i.encode(), "sha256").hexdigest()

    expected = plain.assign(follower_id=plain.follower_id.map(pseudonym))
    expected = expected.sort_values(["influencer_id", "follower_id"], ignore_index=True)
    pd.testing.assert_frame_equal(got, expected)  # rows ordered by pseudonym, not by the real id
    assert (out / "audience_scores.parquet").read_bytes() == (
        clean / "audience_scores.parquet"
    ).read_bytes()
    m = json.loads((out / "manifest.json").read_text())
    assert m["follower_ids"] == {
        "pseudonymized": True,
        "method": "HMAC-SHA256, hex",
        "key_from_environment": "LOYALTY_TEST_KEY",
    }
    # the key is in no output, no log line and nothing the tracking store holds
    assert secret not in result.output
    # (the `trained` fixture runs this module in its tracking store's folder: mlflow.db, mlruns)
    for root in (tmp_path, Path(os.getcwd())):
        for path in root.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
    # a missing key is one line, and nothing is written
    monkeypatch.delenv("LOYALTY_TEST_KEY")
    missing = run_predict(
        trained, tmp_path / "none", "--pseudonymize-followers", "LOYALTY_TEST_KEY"
    )
    assert missing.exit_code == 2 and "'LOYALTY_TEST_KEY' is not set or empty" in missing.output
    assert not (tmp_path / "none").exists()
