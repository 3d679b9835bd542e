"""The HTML report (report.py) on tiny prediction and plan folders the tests write."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loyalty_model.errors import OutputError, RequestError

# the module itself, whatever the package may export under the name `report`
report = importlib.import_module("loyalty_model.report")
ModelCard = report.ModelCard

EVIL = "<script>alert(1)</script>"
SECTIONS = ["summary", "leaderboard", "tiers", "why", "model", "meaning"]
TIER_SIZES = {"nano": (2e3, 9e3), "micro": (1.2e4, 9e4), "mid": (1.2e5, 4.5e5),
              "macro": (5.5e5, 9e5), "mega": (1.2e6, 4e6)}  # fmt: skip
TIER_RATES = {"nano": 1.4e-3, "micro": 1.1e-3, "mid": 6e-4, "macro": 4e-4, "mega": 2.5e-4}
FAMILIES = ["follower x influencer", "follower", "follower x brand", "influencer", "brand"]
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}


# -- Fake folders ------------------------------------------------------------------------------


def audiences_frame(n: int = 40, seed: int = 3) -> pd.DataFrame:
    """n audiences across the tiers, as predict writes them (ordered by rank_cost, rank_rate)."""
    rng = np.random.default_rng(seed)
    tiers = np.array(["nano", "micro", "mid", "macro", "mega"])[
        np.minimum((np.arange(n) * 5) // max(n, 1), 4)
    ]
    lo, hi = np.array([TIER_SIZES[t] for t in tiers]).T
    followers = np.round(np.exp(rng.uniform(np.log(lo), np.log(hi)))).astype("int64")
    rate = np.array([TIER_RATES[t] for t in tiers]) * rng.lognormal(0, 0.35, n)
    price = np.round(followers * rng.uniform(0.008, 0.02, n), -1)
    price[[n // 3, n - 2]] = np.nan  # unknown prices
    scored = np.maximum(1, (followers * rng.uniform(0.002, 0.02, n)).astype("int64"))
    scored[[1, n // 2]] = [12, 25]  # thin samples
    expected = rate * followers
    half = 1.645 * np.sqrt(expected) * (1 + 3 / np.sqrt(scored))
    df = pd.DataFrame({
        "influencer_id": [f"i{i:04d}" for i in range(n)], "brand_id": "b0004",
        "as_of": pd.Timestamp("2025-10-01", tz="UTC"), "tier": tiers,
        "category": rng.choice(["beauty", "fitness", "food", "gaming"], n),
        "follower_count": followers, "price_per_post": price, "expected_loyal": expected,
        "expected_loyal_low": np.floor(np.maximum(0, expected - half)),
        "expected_loyal_high": np.ceil(expected + half),
        "cost_per_expected_loyal": price / expected,
        "loyal_rate": rate, "loyal_per_1k_followers": 1000 * rate, "followers_scored": scored,
        "sample_fraction": scored / followers, "sample_fraction_declared": False,
        "expected_loyal_scored": rate * scored,
    })  # fmt: skip
    df["rank_cost"] = df["cost_per_expected_loyal"].rank(method="first").astype("Int64")
    df["rank_rate"] = df["loyal_rate"].rank(ascending=False, method="first").astype("Int64")
    return df.sort_values(["rank_cost", "rank_rate"], na_position="last", ignore_index=True)


def manifest(**extra) -> dict:
    model = {"uri": "models:/audience-loyalty@champion", "name": "audience-loyalty",
             "version": "3", "run_id": "0123456789abcdef"}  # fmt: skip
    return {"output_schema_version": "2.2", "brand_id": "b0004", "as_of": "2025-10-01T00:00:00Z",
            "model": model, "currency": "USD", "scale": "full_audience", "interval": 0.9,
            "created_at": "2025-10-02T06:00:12Z",
            "audiences": {"influencers": 40, "ranked_by_cost": 38, "median_sample_fraction": 0.01},
            "drift": {"flagged": []}, **extra}  # fmt: skip


def explanations_frame(audiences: pd.DataFrame, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for iid in audiences["influencer_id"]:
        values = rng.normal([0.1, 0.05, 0.4, -0.05, 0.02], [0.15, 0.1, 0.2, 0.1, 0.05])
        rows += [(iid, f, float(v), 40) for f, v in zip(FAMILIES, values, strict=True)]
        rows.append((iid, "base", -4.2, 40))
    return pd.DataFrame(rows, columns=["influencer_id", "family", "mean_contribution",
                                       "followers_explained"])  # fmt: skip


def write_predictions(folder: Path, audiences=None, explanations=True, fmt="parquet",
                      **manifest_extra) -> Path:  # fmt: skip
    audiences = audiences_frame() if audiences is None else audiences
    folder.mkdir(parents=True, exist_ok=True)
    write = {"parquet": lambda df, p: df.to_parquet(p), "csv": lambda df, p: df.to_csv(p)}[fmt]
    write(audiences, folder / f"audience_scores.{fmt}")
    if explanations:
        write(explanations_frame(audiences), folder / f"audience_explanations.{fmt}")
    (folder / "manifest.json").write_text(json.dumps(manifest(**manifest_extra)))
    return folder


def plan_summary(ids: list[str], macro_only: bool = True) -> dict:
    def p(label, members, cost, value, lo, hi, reached):
        return {"label": label, "influencers": members, "cost": cost,
                "expected_unique_loyal": value, "interval": [lo, hi],
                "cost_per_expected_loyal": cost / value, "followers_reached": reached}  # fmt: skip

    plans = {
        "planner": p("Planner (unique loyal customers per cost)", ids[:6],
                     48_500.0, 812.4, 700, 930, 1.9e6),
        "best_single": p("Best single influencer", ids[:1], 9_800.0, 260.1, 200, 325, 3.1e5),
        "reach_buyer": p("Most followers for the budget", ids[30:32],
                         49_000.0, 455.0, 370, 545, 5.2e6),
        "macro_only": p("Macro influencers only", ids[25:27], 47_000.0, 390.7, 310, 475, 1.6e6)
        if macro_only else None,
    }  # fmt: skip
    return {"brand_id": "b0004", "as_of": "2025-10-01", "budget": 50_000.0, "currency": "USD",
            "scale": "full_audience", "model": {}, "plans": plans,
            "candidates": {"candidates": 40, "with_cost": 38, "cost_from_candidates_file": 0,
                           "skipped_without_cost": 2, "without_followers_scored": 1,
                           "over_budget": 0},
            "method": {}}  # fmt: skip


def write_plan(folder: Path, audiences: pd.DataFrame, macro_only: bool = True) -> Path:
    ids = list(audiences["influencer_id"])
    chosen = audiences.head(6).reset_index(drop=True)
    alone = chosen["expected_loyal"].to_numpy()
    marginal = alone * np.linspace(1, 0.7, len(chosen))
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({
        "step": np.arange(1, len(chosen) + 1), "influencer_id": chosen["influencer_id"],
        "tier": chosen["tier"], "category": chosen["category"],
        "follower_count": chosen["follower_count"],
        "followers_scored": chosen["followers_scored"], "cost": chosen["price_per_post"],
        "expected_loyal_alone": alone, "marginal_expected_unique_loyal": marginal,
        "cumulative_expected_unique_loyal": marginal.cumsum(),
        "cumulative_cost": chosen["price_per_post"].cumsum(),
    }).to_parquet(folder / "plan.parquet")  # fmt: skip
    (folder / "plan_summary.json").write_text(json.dumps(plan_summary(ids, macro_only)))
    return folder


CARD_MD = """# Model card: audience-loyalty v3

**Predicts** the probability that a follower becomes a brand-loyal customer: at least 2
purchases of the brand within 90 days.

## Data

| | |
|---|---|
| data directory | `data/small` |
| events | 2,812,004 |

## Model

- LightGBM: 212 trees
- Calibration **isotonic**, τ² = 0.041
"""


def card() -> ModelCard:
    metrics = {"test_roc_auc": 0.8123, "test_log_loss": 0.0412}
    return ModelCard("audience-loyalty", "3", "0123456789abcdef", CARD_MD, metrics)


# -- Helpers ------------------------------------------------------------------------------------


class Checker(HTMLParser):
    """Tag balance (void elements aside) and the ids of the page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.ids: list[str] = []
        self.tags: list[str] = []
        self.doctype = ""

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.ids += [v for k, v in attrs if k == "id"]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def check(html: str) -> Checker:
    c = Checker()
    c.feed(html)
    c.close()
    return c


def section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def text_of(html: str, sid: str) -> str:
    """A section's HTML with entities resolved (&#x27; is ')."""
    return unescape(section(html, sid))


def render_folder(tmp_path: Path, plan=True, with_card=True, explanations=True, **kw) -> str:
    pred = report.read_predictions(write_predictions(tmp_path / "pred", explanations=explanations,
                                                     **kw))  # fmt: skip
    plan_obj = report.read_plan(write_plan(tmp_path / "plan", pred.audiences)) if plan else None
    return report.render(pred, plan_obj, card() if with_card else None)


# -- Tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", [True, False])
@pytest.mark.parametrize(("with_card", "explanations"), [(True, True), (False, False)])
def test_report_is_balanced_html5_with_every_section(tmp_path, plan, with_card, explanations):
    html = render_folder(tmp_path, plan=plan, with_card=with_card, explanations=explanations)
    c = check(html)
    assert c.problems == [] and c.stack == []
    assert c.doctype.lower() == "doctype html"
    assert re.search(r'<html lang="en">\s*<head>\s*<meta charset="utf-8">', html)
    assert re.search(r"<title>[^<]+b0004[^<]*</title>", html)
    expected = SECTIONS[:3] + (["plan"] if plan else []) + SECTIONS[3:]
    assert [i for i in c.ids if i in [*SECTIONS, "plan"]] == expected
    why, model = section(html, "why"), section(html, "model")
    assert ("no explanations" in why) != explanations
    assert ("model card was not available" in model) != with_card
    if with_card:
        assert "<h3>Model card: audience-loyalty v3</h3>" in model
        assert "<b>isotonic</b>" in model and "<code>data/small</code>" in model


def test_report_needs_nothing_from_the_network(tmp_path):
    html = render_folder(tmp_path)
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", html, re.I)
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", html, re.I)
    assert refs and all(r.startswith("#") for r in refs)  # the page's own anchors only
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "<img" not in html and "<iframe" not in html
    assert html.count("<script>") == 1 and "<script src" not in html


def test_report_escapes_every_value_from_the_data(tmp_path):
    aud = audiences_frame()
    aud.loc[0, "influencer_id"] = EVIL  # the cheapest: in the plan and the explanations too
    folder = write_predictions(tmp_path / "pred", aud, brand_id='"><img src=x onerror=alert(1)>')
    pred = report.read_predictions(folder)
    plan = report.read_plan(write_plan(tmp_path / "plan", pred.audiences))
    evil_card = ModelCard("m", "1", "r", f"# {EVIL}\n\n| {EVIL} |\n\n- {EVIL} **{EVIL}**", {})
    html = report.render(pred, plan, evil_card)
    assert EVIL not in html and "<img" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5
    assert html.count("<script") == 1
    assert check(html).problems == []


def test_leaderboard_has_one_row_per_audience_and_marks_thin_samples(tmp_path):
    aud = audiences_frame()
    html = render_folder(tmp_path, plan=False)
    board = section(html, "leaderboard")
    body = board.split("<tbody>")[1]
    rows = re.findall(r"<tr[ >].*?</tr>", body, re.S)
    assert len(rows) == len(aud) == 40
    thin = aud["followers_scored"] < report.THIN_SAMPLE
    assert thin.sum() >= 2
    marked = ["thin sample" in r for r in rows]
    assert marked == thin.tolist()
    assert [re.search(r"<td>(i\d+)</td>", r).group(1) for r in rows] == aud[
        "influencer_id"
    ].tolist()
    first = aud.iloc[0]
    assert f"{first['follower_count']:,}" in rows[0] and " USD" in rows[0]


def test_tier_sentence_reads_micro_against_macro_from_the_data(tmp_path):
    aud = audiences_frame()
    html = render_folder(tmp_path, plan=False)
    tiers = text_of(html, "tiers")
    per1k = aud.groupby("tier")["loyal_per_1k_followers"].median()
    ratio = per1k["micro"] / per1k["macro"]
    assert f"Micro audiences: median {report._num(per1k['micro'])} loyal per 1,000" in tiers
    assert f"{ratio:.1f}× macro's" in tiers
    cost = aud.groupby("tier")["cost_per_expected_loyal"].median()
    cheapest = cost.idxmin()
    assert f"lowest through {cheapest} audiences ({report._money(cost[cheapest], 'USD')})" in tiers
    assert tiers.count("<svg") == 2 and "log scale" in tiers
    assert (
        tiers.count('class="dot"')
        == aud["loyal_per_1k_followers"].notna().sum()
        + aud["cost_per_expected_loyal"].notna().sum()
    )


def test_plan_section_compares_plans_and_lists_the_planner_steps(tmp_path):
    pred = report.read_predictions(write_predictions(tmp_path / "pred"))
    plan = report.read_plan(write_plan(tmp_path / "plan", pred.audiences, macro_only=False))
    body = text_of(report.render(pred, plan), "plan")
    assert "the planner's 6 influencers are expected to bring 812 unique loyal" in body
    assert "Best single influencer" in body and "no such plan fits the budget" in body
    assert "(Most followers for the budget) brings 455: the planner brings 1.8× as many" in body
    steps = body.split("in the order chosen")[1].split("<tbody>")[1]
    assert len(re.findall(r"<tr>", steps)) == 6
    assert body.count('class="bar"') == 1 and body.count('class="bar alt"') == 2


def test_the_plan_table_and_the_plan_files_agree_on_columns_and_thin_samples():
    from loyalty_model import planner, scoring

    assert report.PLAN_COLUMNS == planner.PLAN_COLUMNS
    assert report.THIN_SAMPLE == scoring.THIN_SAMPLE


def test_candidates_are_counted_in_words():
    text = report._candidates_sentence(
        {"candidates": 250, "with_cost": 223, "cost_from_candidates_file": 0}
        | {"skipped_without_cost": 27, "over_budget": 5, "without_followers_scored": 6}
    )
    assert text == (
        "250 candidates: 223 with a cost, 27 skipped without a cost, 5 over the budget on their"
        " own, 6 without followers scored (never chosen)."
    )


def test_why_says_which_families_raise_and_lower_the_score():
    text = report._why_sentence(  # the brand moves every audience of one brand alike: left out
        {"follower x brand": 0.42, "influencer": -0.10, "follower": 0.05, "base": -4.0}
        | {"brand": -0.9}
    )
    assert text == (
        "Followers' history with the brand raises the score the most (+0.42 log-odds);"
        " followers' overall activity and shopping also raises it (+0.05);"
        " the influencer's own record lowers it (−0.10)."
    )


def test_why_explains_the_top_ten_by_rank_cost(tmp_path):
    aud = audiences_frame()
    why = section(render_folder(tmp_path, plan=False), "why")
    shown = re.findall(r"<td>(i\d+)</td>", why)
    assert shown == aud.sort_values("rank_cost")["influencer_id"].head(10).tolist()
    assert why.count("<svg") == 10 and "raises the score the most" in why


def test_markdown_converter_handles_the_card_subset_and_escapes_the_rest():
    out = report.markdown_html(
        "# T\n#### Four\n\npara **b** `x<y`\nnext <i>\n\n- a\n- b `c`\n\n"
        "| h | k |\n|---|---|\n| 1 | 2 |"
    )
    assert out.startswith("<h3>T</h3>\n<h6>Four</h6>")
    assert "<p>para <b>b</b> <code>x&lt;y</code> next &lt;i&gt;</p>" in out
    assert "<ul><li>a</li><li>b <code>c</code></li></ul>" in out
    assert "<thead><tr><th>h</th><th>k</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr>" in out


def test_numbers_are_formatted_for_humans():
    values = (1234.5, 56.78, 3.456, 0.0421, 20.0, 0.0, None, float("nan"))
    assert [report._num(v) for v in values] == [
        "1,234", "56.8", "3.5", "0.042", "20", "0", "–", "–",
    ]  # fmt: skip
    assert [report._tick(t) for t in (0.1, 2.5, 1000.0, 0.30000000000000004)] == [
        "0.1", "2.5", "1,000", "0.3",
    ]  # fmt: skip
    assert report._money(12500.0, "EUR") == "12,500 EUR"


def test_axis_ticks_are_round_and_cover_the_values():
    assert report._ticks(3.4, 88.0, log=True) == [2, 5, 10, 20, 50, 100]
    assert report._ticks(0.3, 4000.0, log=True) == [0.1, 1, 10, 100, 1000, 10000]
    assert report._ticks(10.0, 10.0, log=True) == [10, 20]
    assert report._ticks(0.0, 2.3, log=False) == [0, 0.5, 1, 1.5, 2, 2.5]
    assert report._ticks(0.0, 0.0, log=False)[-1] == 1


def test_csv_folders_give_the_same_report(tmp_path):
    a = report.read_predictions(write_predictions(tmp_path / "p", fmt="parquet"))
    b = report.read_predictions(write_predictions(tmp_path / "c", fmt="csv"))
    assert report.render(a) == report.render(b)


@pytest.mark.parametrize(
    ("remove", "message"),
    [("audience_scores.parquet", "no audience_scores.parquet or audience_scores.csv"),
     ("manifest.json", "no manifest.json")],
)  # fmt: skip
def test_missing_prediction_file_names_folder_and_file(tmp_path, remove, message):
    folder = write_predictions(tmp_path / "pred")
    (folder / remove).unlink()
    with pytest.raises(RequestError) as e:
        report.read_predictions(folder)
    assert str(e.value) == f"{folder}: {message}" and "\n" not in str(e.value)


def test_unreadable_or_missing_files_are_request_errors(tmp_path):
    folder = write_predictions(tmp_path / "pred")
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(RequestError, match=r"pred: cannot read manifest.json"):
        report.read_predictions(folder)
    (folder / "audience_scores.parquet").write_bytes(b"garbage")
    with pytest.raises(RequestError, match=r"pred: cannot read audience_scores.parquet"):
        report.read_predictions(folder)
    plan = write_plan(tmp_path / "plan", audiences_frame())
    (plan / "plan_summary.json").unlink()
    with pytest.raises(RequestError, match=r"plan: no plan_summary.json$"):
        report.read_plan(plan)
    with pytest.raises(RequestError, match="no such prediction folder"):
        report.read_predictions(tmp_path / "nowhere")


def test_write_report_is_atomic_and_deterministic(tmp_path):
    pred = write_predictions(tmp_path / "pred")
    plan = write_plan(tmp_path / "plan", audiences_frame())
    out = tmp_path / "site" / "report.html"
    out.parent.mkdir()
    out.write_text("old")
    assert report.write_html(pred, out, plan, card()) == out
    first = out.read_bytes()
    report.write_html(pred, out, plan, card())
    assert out.read_bytes() == first and first.startswith(b"<!DOCTYPE html>")
    assert os.listdir(out.parent) == ["report.html"]  # no temporary file left
    with pytest.raises(OutputError, match="cannot write the report"):
        report.write_html(pred, tmp_path / "missing" / "report.html")


def test_importing_the_module_loads_nothing_heavy():
    code = (
        "import sys, loyalty_model.report; print(sorted({'mlflow', 'pandas'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- In a browser ---------------------------------------------------------------------------------


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip(
            "chromium is not installed: the report's screenshot test needs the Debian package"
            " chromium"
        )
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", *args]
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(cmd, capture_output=True, timeout=60, env=env, check=True)


def test_screenshot_of_the_report_is_not_blank(tmp_path):
    from PIL import Image

    page, png = tmp_path / "report.html", tmp_path / "shot.png"
    report.write_html(write_predictions(tmp_path / "pred"), page,
                        write_plan(tmp_path / "plan", audiences_frame()), card())  # fmt: skip
    chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,2400", page.as_uri())
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape[:2] == (2400, 1280)
    non_white = (pixels < 245).any(axis=2).mean()
    packed = pixels.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    colours = len(np.unique(packed))
    assert non_white > 0.01 and colours > 20


def test_clicking_a_header_sorts_numbers_with_missing_values_last(tmp_path):
    aud = audiences_frame()
    html = render_folder(tmp_path, plan=False)
    click = '<script>document.querySelectorAll("#leaderboard th")[5].click();</script>'
    page = tmp_path / "sorted.html"
    page.write_text(html.replace("</body>", click + "</body>"))
    dom = chromium(tmp_path, "--dump-dom", page.as_uri()).stdout.decode()
    board = section(dom, "leaderboard").split("<tbody>")[1]
    shown = re.findall(r"<td>(i\d+)</td>", board)
    prices = aud.set_index("influencer_id")["price_per_post"]
    expected = prices.sort_values(na_position="last", kind="stable").index.tolist()
    assert shown[:-2] == expected[:-2] and set(shown[-2:]) == set(prices[prices.isna()].index)
