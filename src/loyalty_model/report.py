"""The HTML report: one self-contained file a product team opens offline (docs/report.md).

`read_predictions` and `read_plan` read output folders; `render` turns what they return (and
an optional model card) into HTML text; `write_html` does both and writes the file
atomically. Everything is inline: CSS, a few lines of JavaScript that sort the leaderboard, and
charts drawn here as SVG. Every value from the data is escaped. The same inputs give the same
bytes (no rendering time is written, only the manifest's `created_at`).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loyalty_model.errors import RequestError

if TYPE_CHECKING:
    import pandas as pd

THIN_SAMPLE = 30  # fewer followers scored than this: the audience's rate rests on few people
TOP_WHY = 10  # audiences explained in the `why` section
FAMILIES: dict[str, tuple[str, str]] = {  # family: (plain words, short chart label)
    "follower x brand": ("followers' history with the brand", "with the brand"),
    "follower x influencer": ("followers' engagement with the influencer", "with the influencer"),
    "follower": ("followers' overall activity and shopping", "followers overall"),
    "influencer": ("the influencer's own record", "influencer"),
    "brand": ("the brand's own record", "brand"),
}
AUDIENCE_COLUMNS = ("influencer_id", "tier", "category", "follower_count", "price_per_post",
                    "expected_loyal", "expected_loyal_low", "expected_loyal_high",
                    "cost_per_expected_loyal", "loyal_per_1k_followers", "rank_cost",
                    "rank_rate", "followers_scored")  # fmt: skip
EXPLANATION_COLUMNS = ("influencer_id", "family", "mean_contribution")
# planner.PLAN_COLUMNS (a test checks they agree; importing planner here would load pandas)
PLAN_COLUMNS = ("step", "influencer_id", "tier", "category", "follower_count",
                "followers_scored", "cost", "expected_loyal_alone",
                "marginal_expected_unique_loyal", "cumulative_expected_unique_loyal",
                "cumulative_cost")  # fmt: skip
PLAN_KINDS = ("planner", "best_single", "reach_buyer", "macro_only")
Row = dict[str, Any]
Points = dict[str, list[tuple[str, float]]]  # tier: [(influencer, value)]


@dataclass(frozen=True)
class Predictions:
    """A prediction folder: audience scores, the manifest, explanations when written."""

    audiences: pd.DataFrame
    manifest: dict
    explanations: pd.DataFrame | None = None


@dataclass(frozen=True)
class Plan:
    """A plan folder: the planner's influencers in order and the comparison of plans."""

    plan: pd.DataFrame
    summary: dict


@dataclass(frozen=True)
class ModelCard:
    """The model card of the run behind the predictions, as tracking holds it."""

    name: str
    version: str | None
    run_id: str | None
    markdown: str
    metrics: dict[str, float] = field(default_factory=dict)


# -- Reading ----------------------------------------------------------------------------------


def _table(
    folder: Path, stem: str, columns: Iterable[str], required: bool = True
) -> pd.DataFrame | None:
    """`stem`.parquet or `stem`.csv of `folder` as a DataFrame; None when absent and optional."""
    import pandas as pd

    def read_csv(path: Path) -> pd.DataFrame:  # ids stay text ("0042" is not 42)
        return pd.read_csv(path, dtype={"influencer_id": str, "brand_id": str})

    for suffix, read in ((".parquet", pd.read_parquet), (".csv", read_csv)):
        path = folder / f"{stem}{suffix}"
        if not path.is_file():
            continue
        try:
            df = read(path)
        except Exception as e:  # any reader error: the file is not what it should be
            raise RequestError(f"{folder}: cannot read {path.name}: {e}") from e
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise RequestError(f"{folder}: {path.name} has no column {', '.join(missing)}")
        return df
    if required:
        raise RequestError(f"{folder}: no {stem}.parquet or {stem}.csv")
    return None


def _json(folder: Path, name: str) -> dict:
    """A JSON object file of `folder`."""
    try:
        data = json.loads((folder / name).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise RequestError(f"{folder}: no {name}") from e
    except (OSError, ValueError) as e:
        raise RequestError(f"{folder}: cannot read {name}: {e}") from e
    if not isinstance(data, dict):
        raise RequestError(f"{folder}: {name} is not a JSON object")
    return data


def _folder(folder: Path, what: str) -> Path:
    """`folder` as a Path; RequestError when it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RequestError(f"{folder}: no such {what} folder")
    return folder


def read_predictions(folder: Path) -> Predictions:
    """Read a prediction folder: audience_scores, manifest.json and, when present,
    audience_explanations. Raises RequestError naming the folder and the file at fault."""
    folder = _folder(folder, "prediction")
    audiences = _table(folder, "audience_scores", AUDIENCE_COLUMNS)
    explanations = _table(folder, "audience_explanations", EXPLANATION_COLUMNS, required=False)
    return Predictions(audiences, _json(folder, "manifest.json"), explanations)


def read_plan(folder: Path) -> Plan:
    """Read a plan folder: plan.(parquet|csv) and plan_summary.json (RequestError if not)."""
    folder = _folder(folder, "plan")
    return Plan(_table(folder, "plan", PLAN_COLUMNS), _json(folder, "plan_summary.json"))


# -- Formatting -------------------------------------------------------------------------------


def _records(df: pd.DataFrame) -> list[Row]:
    """Rows as dicts, every missing value None."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


def _num(v: Any) -> str:
    """A number for humans: thousands separators; two significant digits below 10."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    v = float(v)
    if v.is_integer() or abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:,.1f}"
    return f"{v:.{min(6, max(1, 1 - math.floor(math.log10(abs(v)))))}f}"


def _count(v: Any) -> str:
    return "–" if v is None else f"{round(float(v)):,}"


def _money(v: Any, currency: str) -> str:
    return "–" if v is None else f"{_num(v)} {currency}".strip()


def _span(lo: Any, hi: Any) -> str:
    return "–" if lo is None or hi is None else f"{_count(lo)}–{_count(hi)}"


def _signed(v: float) -> str:
    return f"+{v:.2f}" if v >= 0 else f"−{abs(v):.2f}"


def _e(v: Any) -> str:
    return escape("–" if v is None else str(v))


def _date(v: Any) -> str:
    """An ISO time as given, shortened to its date when it is midnight UTC."""
    return re.sub(r"[T ]00:00:00(\.0+)?(Z|\+00:00)?$", "", "–" if v is None else str(v))


def _time(v: Any) -> str:
    """An ISO time for people: 2025-10-02 06:00:12 UTC."""
    iso = r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(Z|\+00:00)$"
    return re.sub(iso, r"\1 \2 UTC", "–" if v is None else str(v))


def _tick(t: float) -> str:
    """An axis tick: as few digits as it needs."""
    return f"{t:,.0f}" if float(t).is_integer() else f"{float(f'{t:.10g}'):g}"


def _median(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


def _el(tag: str, body: str | None = None, **attrs: Any) -> str:
    """An element; attributes escaped (`cls` is class, `_` is `-`, floats to 0.1); no body:
    self-closing (SVG)."""
    parts = []
    for k, v in attrs.items():
        v = f"{v:.1f}" if isinstance(v, float) else v
        parts.append(f' {"class" if k == "cls" else k.replace("_", "-")}="{escape(str(v))}"')
    head = f"<{tag}{''.join(parts)}"
    return f"{head}/>" if body is None else f"{head}>{body}</{tag}>"


def _td(text: str, sort: Any = "", cls: str = "num") -> str:
    """A table cell; numeric cells carry `sort` (missing: empty) for the leaderboard's sort."""
    if cls != "num":
        return _el("td", text, cls=cls) if cls else f"<td>{text}</td>"
    return _el("td", text, cls="num", data_v="" if sort in ("", None) else repr(float(sort)))


def _table_html(
    headers: list[tuple[str, bool]], rows: list[str], cls: str = "", box: str = "scroll"
) -> str:
    """A table from headers as (text, numeric) and ready <tr> rows, in a div of class `box`."""
    ths = "".join(_el("th", escape(h), cls="num" if n else "", scope="col") for h, n in headers)
    head = f"<table{f' class={cls}' if cls else ''}><thead><tr>{ths}</tr></thead>"
    return f'<div class="{box}">{head}\n<tbody>\n' + "\n".join(rows) + "\n</tbody></table></div>"


def _section(sid: str, title: str, body: str) -> str:
    """A <section> with a stable id and a heading."""
    return f'<section id="{sid}">\n<h2>{escape(title)}</h2>\n{body}\n</section>'


# -- Summary and leaderboard ------------------------------------------------------------------


def _summary(pred: Predictions, rows: list[Row]) -> str:
    """Section `summary`: the request, the model, the scale, the manifest's warnings."""
    m, model = pred.manifest, pred.manifest.get("model") or {}
    version = f" v{model['version']}" if model.get("version") else ""
    ranked = (m.get("audiences") or {}).get("ranked_by_cost", "–")
    facts = [("Brand", m.get("brand_id")), ("As of", _date(m.get("as_of"))),
             ("Model", f"{model.get('name') or '–'}{version}"),
             ("Predictions made", _time(m.get("created_at"))), ("Currency", m.get("currency")),
             ("Audiences", f"{len(rows):,} ({ranked} ranked by cost)")]  # fmt: skip
    dl = "".join(f"<dt>{k}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    scale = m.get("scale")
    text = (
        "All counts and costs are on the full-audience scale: they refer to each influencer's"
        " whole audience (the followers a post's price buys), not only to the followers scored."
        if scale in (None, "full_audience")
        else f"Counts and costs are on the scale {_e(scale)} (see the manifest)."
    )
    notes = [_e(w) for w in m.get("data_warnings") or []]
    if flagged := (m.get("drift") or {}).get("flagged") or []:
        shown = ", ".join(_e(f) for f in flagged[:5])
        notes.append(f"The followers scored differ from the training rows in {shown} (drift).")
    notes_html = "".join(f'<p class="note">{n}</p>' for n in notes)
    return _section("summary", "Summary", f'<dl class="facts">{dl}</dl><p>{text}</p>{notes_html}')


def _thin(r: Row) -> bool:
    return (r["followers_scored"] or 0) < THIN_SAMPLE


def _leaderboard_row(pos: int, r: Row, currency: str) -> str:
    """One audience; `pos` (its place in the file) sorts the rank column."""
    ci = _span(r["expected_loyal_low"], r["expected_loyal_high"])
    badge = ' <span class="badge thin">thin sample</span>' if _thin(r) else ""
    cells = [
        _td(_count(r["rank_cost"]), pos),
        *(_td(_e(r[c]), cls="") for c in ("influencer_id", "tier", "category")),
        _td(_count(r["follower_count"]), r["follower_count"]),
        _td(_money(r["price_per_post"], currency), r["price_per_post"]),
        _td(f'{_num(r["expected_loyal"])} <span class="ci">({ci})</span>', r["expected_loyal"]),
        _td(_num(r["loyal_per_1k_followers"]), r["loyal_per_1k_followers"]),
        _td(_money(r["cost_per_expected_loyal"], currency), r["cost_per_expected_loyal"]),
        _td(_count(r["followers_scored"]) + badge, r["followers_scored"]),
    ]
    return f"<tr{' class=thin-row' if _thin(r) else ''}>{''.join(cells)}</tr>"


def _leaderboard(rows: list[Row], currency: str) -> str:
    """Section `leaderboard`: every audience, in the file's order, sortable."""
    headers = [("rank", True), ("influencer", False), ("tier", False), ("category", False),
               ("followers", True), ("price per post", True),
               ("expected loyal (90 % interval)", True), ("loyal per 1,000 followers", True),
               ("cost per loyal customer", True), ("followers scored", True)]  # fmt: skip
    body = [_leaderboard_row(i, r, currency) for i, r in enumerate(rows)]
    intro = (
        "<p>Audiences by cost per expected loyal customer, cheapest first; those without a price"
        " or without followers scored come last. Click a column header to sort by it."
        f' <span class="badge thin">thin sample</span> marks the {sum(map(_thin, rows))}'
        f" audience(s) with fewer than {THIN_SAMPLE} followers scored.</p>"
    )
    # a long leaderboard scrolls in its own box (headers stay), so the sections after it are
    # a screen away, not hundreds of rows
    table = _table_html(
        headers, body, "sortable", box="scroll long" if len(rows) > 25 else "scroll"
    )
    return _section("leaderboard", "Audience leaderboard", intro + table)


# -- Charts -----------------------------------------------------------------------------------


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    """Round axis ticks covering [lo, hi]: from 0 on a linear axis; on a log axis powers of
    ten, with 2 and 5 between them on a short range."""
    if log:
        a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        steps = (1, 2, 5) if b - a <= 2 else (1,)
        ticks = [s * 10.0**k for k in range(a, max(b, a + 1) + 1) for s in steps]
        below, above = [t for t in ticks if t <= lo][-1:], [t for t in ticks if t >= hi and t > lo]
        return below + [t for t in ticks if lo < t < hi] + above[:1]
    hi = hi if hi > 0 else 1.0
    mag = 10.0 ** math.floor(math.log10(hi / 5))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= hi / 5)
    return [i * step for i in range(math.ceil(hi / step - 1e-9) + 1)]


def _svg(width: int, height: int, label: str, inner: list[str]) -> str:
    body = f"<title>{escape(label)}</title>" + "".join(inner)
    return _el("svg", body, viewBox=f"0 0 {width} {height}", width=width, height=height,
               role="img", aria_label=label)  # fmt: skip


def _text(x: float, y: float, s: str, anchor: str = "middle", cls: str = "") -> str:
    return _el("text", escape(s), x=float(x), y=float(y), text_anchor=anchor, cls=cls)


def _strip_chart(title: str, ylabel: str, groups: Points, log: bool) -> str:
    """One dot per audience in a column per tier and a bar at the tier's median; a log axis
    when `log`."""
    values = [v for pts in groups.values() for _, v in pts]
    if not values:
        return f'<p class="note">{escape(title)}: no audience has a value to show.</p>'
    w, h, left, right, top, bottom = 500, 330, 70, 14, 40, 62
    ticks = _ticks(min(values), max(values), log)
    f = math.log10 if log else float
    y0, y1 = f(ticks[0]), f(ticks[-1])

    def y(v: float) -> float:
        return top + (h - top - bottom) * (1 - (f(v) - y0) / ((y1 - y0) or 1))

    band = (w - left - right) / len(groups)
    out = [_text(w / 2, 20, title, cls="ttl")]
    for t in ticks:
        out.append(_el("line", x1=left, x2=w - right, y1=y(t), y2=y(t), cls="grid"))
        out.append(_text(left - 6, y(t) + 4, _tick(t), "end", "tick"))
    mid = top + (h - top - bottom) / 2
    rotate = f"translate(16 {mid:.1f}) rotate(-90)"
    out.append(_el("text", escape(ylabel), transform=rotate, text_anchor="middle", cls="axis"))
    for i, (tier, pts) in enumerate(groups.items()):
        cx = left + band * (i + 0.5)
        for k, (who, v) in enumerate(pts):
            tip = _el("title", escape(f"{who}: {_num(v)}"))
            dx = ((k * 7) % 11 - 5) * band * 0.05  # a fixed spread, so dots overlap less
            out.append(_el("circle", tip, cx=cx + dx, cy=y(v), r=4, cls="dot"))
        if (med := _median(v for _, v in pts)) is not None:
            x1, x2 = cx - band * 0.36, cx + band * 0.36
            out.append(_el("line", x1=x1, x2=x2, y1=y(med), y2=y(med), cls="median"))
        out.append(_text(cx, h - bottom + 18, f"{tier} ({len(pts)})", cls="axis"))
        if med is not None:
            out.append(_text(cx, h - bottom + 33, f"median {_num(med)}", cls="tick"))
    out.append(_text((left + w - right) / 2, h - 6, "influencer tier", cls="axis"))
    return _svg(w, h, title, out)


def _by_tier(rows: list[Row], column: str, positive: bool) -> Points:
    """(influencer, value) per tier, tiers in their order (unknown ones after), missing and
    (when `positive`) non-positive values left out."""
    from loyalty_model.contract import TIERS

    seen = {str(r["tier"]) for r in rows if r["tier"] is not None}
    groups: Points = {t: [] for t in [*TIERS, *sorted(seen - set(TIERS))]}
    for r in rows:
        v = r[column]
        if r["tier"] is not None and v is not None and (float(v) > 0 or not positive):
            groups[str(r["tier"])].append((str(r["influencer_id"]), float(v)))
    return groups


def _tier_sentence(rate: Points, cost: Points, currency: str) -> str:
    """What the data say about small against large audiences (micro against macro if both),
    and which tier brings a loyal customer for least."""
    med = {t: _median(v for _, v in pts) for t, pts in rate.items() if pts}
    if not med:
        return "No audience has followers scored: there is nothing to compare by tier."
    tiers = list(med)
    if len(tiers) == 1:
        return f"All audiences scored are {tiers[0]}: median {_num(med[tiers[0]])} loyal per 1,000."
    small, big = ("micro", "macro") if {"micro", "macro"} <= set(tiers) else (tiers[0], tiers[-1])
    ratio = f", {med[small] / med[big]:.1f}× {big}'s ({_num(med[big])})" if med[big] else ""
    text = f"{small.capitalize()} audiences: median {_num(med[small])} loyal per 1,000 followers"
    costs = {t: _median(v for _, v in pts) for t, pts in cost.items() if pts}
    costs = {t: c for t, c in costs.items() if c is not None}
    if not costs:
        return text + f"{ratio}."
    cheapest = min(costs, key=costs.get)
    text += f"{ratio}. The median cost of a loyal customer is lowest through {cheapest}"
    text += f" audiences ({_money(costs[cheapest], currency)})"
    others = [t for t in (small, big) if t in costs and t != cheapest]
    if others:
        text += "; " + ", ".join(f"{t} {_money(costs[t], currency)}" for t in others)
    return text + "."


def _tiers(rows: list[Row], currency: str) -> str:
    """Section `tiers`: two strip charts by tier and what they say."""
    rate = _by_tier(rows, "loyal_per_1k_followers", positive=False)
    cost = _by_tier(rows, "cost_per_expected_loyal", positive=True)
    per_1k, per_loyal = "loyal per 1,000 followers", f"{currency} per loyal customer"
    charts = _strip_chart("Loyal customers per 1,000 followers", per_1k, rate, log=False)
    charts += _strip_chart(
        f"Cost per loyal customer ({currency}, log scale)", per_loyal, cost, True
    )
    text = escape(_tier_sentence(rate, cost, currency))
    text += " Each dot is an audience (how many: in brackets); the orange bar, the tier's median."
    return _section("tiers", "By tier", f'<p>{text}</p><div class="charts">{charts}</div>')


# -- Plan -------------------------------------------------------------------------------------


def _interval(p: dict) -> tuple[Any, Any]:
    """A plan's 90 % interval as (low, high), None where missing."""
    lo, hi, *_ = [*(p.get("interval") or []), None, None]
    return lo, hi


def _plan_chart(plans: dict[str, Any]) -> str:
    """Horizontal bars of expected unique loyal customers with their 90 % interval."""
    shown = [p for p in plans.values() if p]
    if not shown:
        return ""
    w, left, right, row = 760, 10, 170, 50
    top = max(float(v or 0) for p in shown for v in (p["expected_unique_loyal"], _interval(p)[1]))

    def x(v: Any) -> float:
        return left + (w - left - right) * float(v or 0) / (top or 1)

    out = []
    for i, (kind, p) in enumerate(plans.items()):
        y, label = 18 + row * i, (p or {}).get("label") or kind.replace("_", " ")
        if not p:
            out.append(_text(left, y, f"{label}: no such plan fits the budget", "start", "axis"))
            continue
        value, (lo, hi) = p["expected_unique_loyal"], _interval(p)
        out.append(_text(left, y, label, "start", "axis"))
        cls = "bar" if kind == "planner" else "bar alt"
        out.append(_el("rect", x=float(left), y=y + 7.0, width=x(value) - left, height=18, cls=cls))
        if lo is not None and hi is not None:
            a, b, c = x(lo), x(hi), y + 16
            path = f"M{a:.1f} {c}H{b:.1f}M{a:.1f} {c - 7}V{c + 7}M{b:.1f} {c - 7}V{c + 7}"
            out.append(_el("path", d=path, cls="whisker"))
        end = max(x(value), x(hi)) + 8
        out.append(_text(end, y + 21, f"{_num(value)} ({_span(lo, hi)})", "start", "tick"))
    title = "Expected unique loyal customers per plan, with 90 % intervals"
    return _svg(w, 10 + row * len(plans), title, out)


def _plan_sentence(plans: dict[str, Any], budget: Any, currency: str) -> str:
    """What the comparison of plans says: one sentence, two when the intervals overlap."""
    planner = plans.get("planner")
    if not planner:
        return f"No planner result fits the budget of {_money(budget, currency)}."
    value, (lo, hi) = planner["expected_unique_loyal"], _interval(planner)
    text = (
        f"Within the budget of {_money(budget, currency)}, the planner's"
        f" {len(planner.get('influencers') or [])} influencers are expected to bring"
        f" {_num(value)} unique loyal customers (90 %: {_span(lo, hi)}) for"
        f" {_money(planner.get('cost'), currency)}"
    )
    others = [p for k, p in plans.items() if k != "planner" and p]
    if not others:
        return text + "; no other plan fits the budget."
    best = max(others, key=lambda p: p["expected_unique_loyal"] or 0)
    other = best["expected_unique_loyal"]
    text += f"; the best other plan ({best.get('label', 'another plan')}) brings {_num(other)}"
    text += f": the planner brings {value / other:.1f}× as many." if other else "."
    if lo is not None and _interval(best)[1] is not None and lo <= _interval(best)[1]:
        text += " Their 90 % intervals overlap: one campaign may not show the difference."
    return text


def _plan_row(kind: str, p: dict | None, currency: str) -> str:
    """One plan of the comparison; a plan that does not fit the budget says so."""
    if not p:
        cells = '<td colspan="6">no such plan fits the budget</td>'
        return f"<tr><td>{_e(kind.replace('_', ' '))}</td>{cells}</tr>"
    cells = [_td(_e(p.get("label") or kind), cls=""), _td(_num(p.get("expected_unique_loyal"))),
             _td(_span(*_interval(p))), _td(_money(p.get("cost"), currency)),
             _td(_money(p.get("cost_per_expected_loyal"), currency)),
             _td(_count(len(p.get("influencers") or []))),
             _td(_count(p.get("followers_reached")))]  # fmt: skip
    return f"<tr>{''.join(cells)}</tr>"


def _chosen_row(r: Row, currency: str) -> str:
    """One step of the planner's plan."""
    badge = ' <span class="badge thin">thin sample</span>' if _thin(r) else ""
    cells = [_td(_count(r["step"])),
             *(_td(_e(r[c]), cls="") for c in ("influencer_id", "tier", "category")),
             _td(_count(r["follower_count"])), _td(_count(r["followers_scored"]) + badge),
             _td(_money(r["cost"], currency)),
             *(_td(_num(r[c])) for c in ("expected_loyal_alone", "marginal_expected_unique_loyal",
                                         "cumulative_expected_unique_loyal")),
             _td(_money(r["cumulative_cost"], currency))]  # fmt: skip
    return f"<tr>{''.join(cells)}</tr>"


def _plan(plan: Plan, currency: str) -> str:
    """Section `plan`: the plans compared (table, chart, sentence) and the planner's steps."""
    s = plan.summary
    currency = str(s.get("currency") or currency)
    given = s.get("plans") or {}
    plans = {k: given.get(k) for k in PLAN_KINDS} | {k: v for k, v in given.items()}
    headers = [("plan", False), ("expected unique loyal customers", True),
               ("90 % interval", True), ("cost", True), ("cost per loyal customer", True),
               ("influencers", True), ("followers reached", True)]  # fmt: skip
    chosen_headers = [("step", True), ("influencer", False), ("tier", False),
                      ("category", False), ("followers", True), ("followers scored", True),
                      ("cost", True),
                      ("expected loyal alone", True), ("adds unique loyal", True),
                      ("unique loyal so far", True), ("cost so far", True)]  # fmt: skip
    chosen = [_chosen_row(r, currency) for r in _records(plan.plan.sort_values("step"))]
    cands = _candidates_sentence(s.get("candidates") or {})
    return _section("plan", "Campaign plan", "".join([
        f"<p>{escape(_plan_sentence(plans, s.get('budget'), currency))}</p>",
        f'<p class="note">{escape(cands)}</p>' if cands else "",
        _table_html(headers, [_plan_row(k, p, currency) for k, p in plans.items()], "plans"),
        f'<div class="charts">{_plan_chart(plans)}</div>',
        "<h3>The planner's influencers, in the order chosen</h3><p>A follower of several chosen"
        " influencers counts once: each step adds the loyal customers it is expected to bring"
        " that the steps before it do not already reach.</p>",
        _table_html(chosen_headers, chosen),
    ]))  # fmt: skip


# -- Why: explanations ------------------------------------------------------------------------


def _candidates_sentence(c: dict) -> str:
    """The candidates of a plan in one sentence (plan_summary.json's `candidates`)."""
    if "candidates" not in c:
        return ""
    parts = [f"{_count(c.get('with_cost'))} with a cost"]
    if c.get("cost_from_candidates_file"):
        parts[0] += f" ({_count(c['cost_from_candidates_file'])} from the candidates file)"
    for key, words in (
        ("skipped_without_cost", "skipped without a cost"),
        ("over_budget", "over the budget on their own"),
        ("without_followers_scored", "without followers scored (never chosen)"),
    ):
        if c.get(key):
            parts.append(f"{_count(c[key])} {words}")
    return f"{_count(c['candidates'])} candidates: " + ", ".join(parts) + "."


def _why_sentence(contrib: dict[str, float]) -> str:
    """The families that raise and lower an audience's score most, in plain words. The
    brand's own features are left out: one brand is scored, so they move every audience
    alike (the section's introduction gives them once)."""
    items = [(f, v) for f, v in contrib.items() if f not in ("base", "brand")]
    words = {f: FAMILIES.get(f, (f, f))[0] for f, _ in items}
    ups = sorted((x for x in items if x[1] > 0), key=lambda x: -x[1])
    downs = sorted((x for x in items if x[1] < 0), key=lambda x: x[1])
    parts = []
    if ups:
        parts.append(
            f"{words[ups[0][0]]} raises the score the most ({_signed(ups[0][1])} log-odds)"
        )
    if len(ups) > 1:
        parts.append(f"{words[ups[1][0]]} also raises it ({_signed(ups[1][1])})")
    if downs:
        most = " the most" if len(downs) > 1 else ""
        parts.append(f"{words[downs[0][0]]} lowers it{most} ({_signed(downs[0][1])})")
    if not parts:
        return "Nothing moves this audience's score away from the model's average."
    text = "; ".join(parts) + "."
    return text[0].upper() + text[1:]


def _diverging(contrib: dict[str, float], scale: float) -> str:
    """A small diverging bar chart of one audience's family contributions (blue up, orange
    down), on a scale shared by the audiences shown."""
    fams = [f for f in FAMILIES if f in contrib] + sorted(set(contrib) - set(FAMILIES) - {"base"})
    label, half, row = 130, 95, 16
    out = [_el("line", x1=label + half, x2=label + half, y1=0, y2=row * len(fams), cls="axisline")]
    for i, f in enumerate(fams):
        v, length = contrib[f], half * min(1.0, abs(contrib[f]) / scale)
        out.append(_text(label - 6, i * row + 12, FAMILIES.get(f, (f, f))[1], "end", "tick"))
        x0 = label + half - (0 if v >= 0 else length)
        tip = _el("title", escape(f"{f}: {_signed(v)}"))
        cls = "up" if v >= 0 else "down"
        out.append(_el("rect", tip, x=x0, y=i * row + 3, width=length, height=10, cls=cls))
    return _svg(label + 2 * half + 5, row * max(1, len(fams)), "contributions, log-odds", out)


def _contributions(ex: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{influencer: {family: mean contribution}}."""
    out: dict[str, dict[str, float]] = {}
    for r in _records(ex):
        if r["mean_contribution"] is not None:
            out.setdefault(str(r["influencer_id"]), {})[str(r["family"])] = float(
                r["mean_contribution"]
            )
    return out


def _why(pred: Predictions, rows: list[Row]) -> str:
    """Section `why`: the family contributions of the top audiences, in words and bars."""
    title = "Why these audiences score as they do"
    contrib = {} if pred.explanations is None else _contributions(pred.explanations)
    if not contrib:
        text = "This prediction folder has no explanations (audience_explanations): the reasons"
        return _section("why", title, f"<p>{text} behind each score cannot be shown.</p>")

    def order(r: Row) -> tuple:
        return (r["rank_cost"] is None, r["rank_cost"] or 0, r["rank_rate"] is None,
                r["rank_rate"] or 0)  # fmt: skip

    top = [r for r in sorted(rows, key=order) if str(r["influencer_id"]) in contrib][:TOP_WHY]
    if not top:
        return _section("why", title, "<p>None of the audiences scored has an explanation.</p>")
    shown = [contrib[str(r["influencer_id"])] for r in top]
    scale = max([abs(v) for c in shown for f, v in c.items() if f != "base"] + [1e-9])
    base = _median(c["base"] for c in shown if "base" in c)
    brand = _median(c["brand"] for c in shown if "brand" in c)
    items = [
        f"<tr>{_td(_count(r['rank_cost'] or r['rank_rate']))}{_td(_e(r['influencer_id']), cls='')}"
        f"<td>{escape(_why_sentence(c))}</td><td>{_diverging(c, scale)}</td></tr>"
        for r, c in zip(top, shown, strict=True)
    ]
    intro = (
        f"<p>For the top {len(top)} audiences: what moves the model's score for their followers"
        " away from its average, by family of features. Each number is the mean contribution"
        " over the followers explained, in log-odds before calibration (+0.7 is about twice the"
        " odds)" + (f"; the model's average: {_signed(base)} log-odds" if base is not None else "")
        + "."
        + (
            f" The brand's own features move every audience alike (median {_signed(brand)}),"
            " so the sentences leave them out."
            if brand is not None
            else ""
        )
        + " These are what the model leans on, not causes. Bars share one scale.</p>"
    )  # fmt: skip
    headers = [("rank", True), ("influencer", False), ("in plain words", False),
               ("contributions", False)]  # fmt: skip
    return _section("why", title, intro + _table_html(headers, items, "why"))


# -- Model card: a small, safe markdown converter ---------------------------------------------


def _inline(text: str) -> str:
    """Escape a line, then `code` and **bold**."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick stays a backtick
        parts[-2:] = ["`".join(parts[-2:])]
    return "".join(
        f"<code>{escape(p)}</code>" if i % 2 else re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escape(p))
        for i, p in enumerate(parts)
    )


def _md_table(lines: list[str]) -> str:
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    head = None
    if len(cells) > 1 and all(re.fullmatch(r":?-+:?", c) for c in cells[1] if c):
        head, cells = cells[0], cells[2:]
    ths = "".join(f"<th>{_inline(c)}</th>" for c in head or [])
    trs = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in cells)
    thead = f"<thead><tr>{ths}</tr></thead>" if head and any(head) else ""
    return f'<div class="scroll"><table class="md">{thead}<tbody>{trs}</tbody></table></div>'


def markdown_html(text: str) -> str:
    """Markdown to HTML, the part a model card uses: headings # to #### (shown two levels
    down, under the section's), pipe tables, `-` lists, paragraphs, **bold** and `code`;
    everything else is escaped and shown as text."""
    out: list[str] = []
    block: list[str] = []
    kind = ""

    def flush() -> None:
        if block and kind == "p":
            out.append(f"<p>{_inline(' '.join(block))}</p>")
        elif block and kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(b)}</li>" for b in block) + "</ul>")
        elif block and kind == "table":
            out.append(_md_table(block))
        block.clear()

    for line in text.splitlines():
        s = line.strip()
        heading = re.fullmatch(r"(#{1,4})\s+(.*)", s)
        new = ("h" if heading else "" if not s else "table" if s.startswith("|")
               else "ul" if s.startswith("- ") else "p")  # fmt: skip
        if new != kind or new == "h":
            flush()
            kind = new
        if heading:
            level = len(heading.group(1)) + 2
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif new:
            block.append(s[2:] if new == "ul" else s)
    flush()
    return "\n".join(out)


def _model(pred: Predictions, card: ModelCard | None) -> str:
    """Section `model`: the model's identity and its card (or how to get it)."""
    m = pred.manifest.get("model") or {}
    facts = [("Name", card.name if card else m.get("name")),
             ("Version", card.version if card else m.get("version")),
             ("Run id", card.run_id if card else m.get("run_id")),
             ("URI", m.get("uri"))]  # fmt: skip
    dl = "".join(f"<dt>{k}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    dl = f'<dl class="facts">{dl}</dl>'
    if card is None:
        return _section("model", "The model", dl + (
            "<p>The model card was not available. To include it, make the report where the"
            " model's tracking store is reachable (MLFLOW_TRACKING_URI, or the config's"
            " tracking.uri): <code>loyalty-model report --predictions DIR --out report.html</code>"
            ".</p>"))  # fmt: skip
    rows = "".join(
        f'<tr><td>{escape(k)}</td><td class="num">{float(v):.4g}</td></tr>'
        for k, v in sorted(card.metrics.items())
    )
    summary = f"<summary>All metrics of the run ({len(card.metrics)})</summary>"
    table = f'<table class="md"><tbody>{rows}</tbody></table>'
    details = f"<details>{summary}{table}</details>" if rows else ""
    card_html = f'<div class="card">{markdown_html(card.markdown)}</div>'
    return _section("model", "The model", dl + card_html + details)


def _meaning(pred: Predictions, plan: Plan | None) -> str:
    """Section `meaning`: how to read the numbers, in plain words."""
    m = pred.manifest
    currency = _e(m.get("currency") or "the manifest's currency")
    coverage = float(m.get("interval") or 0.9)
    fraction = (m.get("audiences") or {}).get("median_sample_fraction")
    sample = f" (here a median {fraction * 100:.2g} % of it)" if isinstance(fraction, float) else ""
    items = [
        "<b>A probability, not a promise.</b> A follower's p_loyal is the chance that they become"
        " a brand-loyal customer (buy the brand, and again, within the horizon after the campaign"
        " starts; the model card gives the definition).",
        "<b>Expected counts are averages.</b> Expected loyal customers are the sum of those"
        " chances: the average over many campaigns like this one. One campaign lands above or"
        " below it.",
        f"<b>The {coverage * 100:.0f} % interval.</b> In about {round(coverage * 10)} campaigns"
        " out of 10 the real count should fall inside it. It allows for chance, for how well a"
        " campaign lands, and for the sample of followers the data hold.",
        "<b>Full-audience scale.</b> A price buys an influencer's whole audience. Where the data"
        f" hold a sample of it{sample}, the loyal rate of the followers scored is carried over"
        " to the whole audience, so counts, costs and ranks compare like with like.",
        "<b>Associations, not causes.</b> The numbers are learned from past campaigns: they say"
        " which audiences went on to become loyal, not how much the influencer caused it. An"
        " audience that already buys the brand scores high whatever the post changes.",
        f"<b>Thin samples.</b> With fewer than {THIN_SAMPLE} followers scored, an audience's"
        " rate rests on few people: its interval is wide and its rank uncertain.",
        f"<b>Costs</b> are price_per_post in {currency} divided by expected loyal customers:"
        " the price of one post, nothing else (production, fees). Audiences without a price"
        " are not ranked by cost.",
    ]
    if plan is not None:
        items.append("<b>Unique loyal customers</b> in a plan count a follower of several chosen"
                     " influencers once.")  # fmt: skip
    body = "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
    return _section("meaning", "How to read these numbers", body)


# -- The page ---------------------------------------------------------------------------------

CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
 color:#1f2933;background:#fff}
main{max-width:1180px;margin:0 auto;padding:24px 28px 64px}
h1{font-size:26px;margin:8px 0 4px}h3{font-size:16px;margin:20px 0 6px}
h2{font-size:20px;margin:36px 0 8px;padding-top:10px;border-top:1px solid #e4e7eb}
nav{font-size:14px}nav a{color:#2b6cb0;margin-right:14px}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}
.facts dt{color:#52606d}.facts dd{margin:0}
.scroll{overflow-x:auto}.scroll.long{max-height:640px;overflow-y:auto}
table{border-collapse:collapse;width:100%;font-size:13.5px;margin:8px 0}
th,td{padding:4px 8px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#f5f7fa;font-weight:600;vertical-align:bottom}
.num{text-align:right;white-space:nowrap}th.num{white-space:normal}
table.plans td:first-child{min-width:230px}table.md{width:auto}
table.why svg{max-width:none;width:330px}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" ▲"}
table.sortable th[aria-sort=descending]::after{content:" ▼"}
tr.thin-row td{color:#616e7c}.ci{color:#7b8794;font-size:12px}
.badge{display:inline-block;font-size:11px;padding:0 6px;border-radius:8px;
 background:#fde8c8;color:#8d4b00}
.note{color:#52606d;font-size:13.5px}.charts{display:flex;flex-wrap:wrap;gap:16px;margin:8px 0}
svg{max-width:100%;height:auto;font-size:12px}svg .ttl{font-size:14px;font-weight:600}
svg .axis{fill:#323f4b}svg .tick{fill:#616e7c;font-size:11px}
.grid{stroke:#e4e7eb}.axisline{stroke:#9aa5b1}
.dot{fill:#2b6cb0;fill-opacity:.55}.median{stroke:#dd6b20;stroke-width:3}
.bar{fill:#2b6cb0}.bar.alt{fill:#9aa5b1}.whisker{stroke:#1f2933;stroke-width:1.5;fill:none}
.up{fill:#2b6cb0}.down{fill:#dd6b20}table.why td{vertical-align:middle}
.card{border:1px solid #e4e7eb;border-radius:6px;padding:4px 16px;margin:12px 0;background:#fcfcfd}
code{background:#f0f4f8;padding:0 3px;border-radius:3px;font-size:90%}li{margin:4px 0}
"""

JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells), body = table.tBodies[0];
  heads.forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending", num = th.classList.contains("num");
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      function key(row) {  // numbers: data-v, empty when missing; text: what the cell shows
        var cell = row.cells[col], v = cell.getAttribute("data-v");
        if (!num) { return cell.textContent.trim().toLowerCase(); }
        return v === null || v === "" ? null : parseFloat(v);
      }
      Array.prototype.slice.call(body.rows).sort(function (a, b) {
        var x = key(a), y = key(b), c;
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        c = num ? x - y : x.localeCompare(y);
        return asc ? c : -c;  // missing values last either way
      }).forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def render(pred: Predictions, plan: Plan | None = None, card: ModelCard | None = None) -> str:
    """The report as HTML text: one self-contained page, the same for the same inputs."""
    m, rows = pred.manifest, _records(pred.audiences)
    currency = str(m.get("currency") or "")
    sections = [_summary(pred, rows), _leaderboard(rows, currency), _tiers(rows, currency)]
    sections += [_plan(plan, currency)] if plan is not None else []
    sections += [_why(pred, rows), _model(pred, card), _meaning(pred, plan)]
    ids = re.findall(r'<section id="(\w+)">', "".join(sections))
    nav = "<nav>" + "".join(f'<a href="#{i}">{i}</a>' for i in ids) + "</nav>"
    title = escape(f"Loyal customers by audience: brand {m.get('brand_id', '–')},"
                   f" as of {_date(m.get('as_of'))}")  # fmt: skip
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{title}</h1>\n{nav}\n" + "\n".join(sections)
        + f"\n</main>\n<script>{JS}</script>\n</body>\n</html>\n"
    )  # fmt: skip


def write_html(
    predictions: Path, out: Path, plan: Path | None = None, card: ModelCard | None = None
) -> Path:
    """Read the prediction (and plan) folder, render, and write `out` atomically: a temporary
    file beside it, then one rename; nothing is left behind on failure. Returns `out`."""
    from loyalty_model import io

    pred = read_predictions(Path(predictions))
    text = render(pred, read_plan(Path(plan)) if plan is not None else None, card)
    out = Path(out)
    io.write_text_atomic(out, text, f"{out}: cannot write the report")
    return out
