"""Features on tiny hand-built worlds: hand-computed values for every family, and the
point-in-time invariant as a property: no event at or after the cutoff changes any feature,
the BG/NBD features (and the parameters fitted for them) included."""

from __future__ import annotations

import itertools

import ibis
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_model import btyd, engines, features, io
from loyalty_model.config import FeatureConfig, LabelConfig

from ..helpers import events_frame, ts, write_dir

CUTOFF = ts("2024-03-01 17:00")
CFG = FeatureConfig(windows=(7, 30, 90), prior_strength=0.0)
LABEL = LabelConfig()


def base_tables() -> dict[str, pd.DataFrame]:
    ev = events_frame(
        [
            # f1 x i1 engagement
            ("2024-02-28 09:00", "f1", "i1", None, "p1", "view", None),  # 2 days before
            ("2024-02-28 09:01", "f1", "i1", None, "p1", "like", None),
            ("2024-02-10 12:00", "f1", "i1", "b1", "p2", "view", None),  # 20 days, sponsored b1
            ("2024-02-10 12:01", "f1", "i1", "b1", "p2", "comment", None),
            ("2024-02-10 12:02", "f1", "i1", "b1", "p2", "click", None),
            ("2024-01-15 08:00", "f1", "i1", None, "p3", "view", None),  # 46 days
            ("2024-03-01 10:00", "f1", "i1", None, "p4", "view", None),  # cutoff day: excluded
            ("2024-03-02 10:00", "f1", "i1", None, "p5", "view", None),  # after: excluded
            # f1 elsewhere
            ("2024-02-27 10:00", "f1", "i2", None, "p6", "view", None),
            # f1 purchases
            ("2024-02-20 10:00", "f1", None, "b1", None, "purchase", 10.0),
            ("2024-02-25 10:00", "f1", "i1", "b1", None, "purchase", 20.0),
            ("2024-01-05 10:00", "f1", None, "b2", None, "purchase", 5.0),
            ("2024-03-05 10:00", "f1", None, "b1", None, "purchase", 99.0),  # future
            # f2: likes only (bot-like), on i1
            ("2024-02-29 10:00", "f2", "i1", None, "p1", "view", None),
            ("2024-02-29 10:00", "f2", "i1", None, "p1", "like", None),
            ("2024-02-29 10:05", "f2", "i1", None, "p7", "like", None),
            # past campaign c0 (i1, b1, 2023-10-01): f1 bought twice in its window
            ("2023-10-05 10:00", "f1", "i1", "b1", None, "purchase", 10.0),
            ("2023-10-20 10:00", "f1", None, "b1", None, "purchase", 10.0),
        ]
    )
    follows = pd.DataFrame(
        {
            "follower_id": ["f1", "f2", "f1"],
            "influencer_id": ["i1", "i1", "i2"],
            "followed_at": [ts("2023-09-01"), ts("2023-09-15"), ts("2024-01-01")],
            "unfollowed_at": pd.Series([pd.NaT, pd.NaT, pd.NaT], dtype="datetime64[us, UTC]"),
        }
    )
    influencers = pd.DataFrame(
        {
            "influencer_id": ["i1", "i2"],
            "follower_count": [50_000, 2_000_000],
            "category": ["beauty", "tech"],
            "price_per_post": [500.0, None],
        }
    )
    brands = pd.DataFrame(
        {"brand_id": ["b1", "b2"], "category": ["beauty", "beauty"], "avg_price": [19.0, None]}
    )
    campaigns = pd.DataFrame(
        {
            "campaign_id": ["c0", "c1"],
            "brand_id": ["b1", "b1"],
            "influencer_id": ["i1", "i1"],
            "start_ts": [ts("2023-10-01 17:00"), CUTOFF],
            "cost": [None, 100.0],
        }
    )
    return {
        "events": ev,
        "follows": follows,
        "influencers": influencers,
        "brands": brands,
        "campaigns": campaigns,
    }


def with_buyers(tables: dict[str, pd.DataFrame], n: int = 40) -> dict[str, pd.DataFrame]:
    """`tables` and `n` more buyers of b1 (g00, g01, ...), all before the cutoff day: enough
    for a BG/NBD fit of b1 (features.BG_NBD_MIN_BUYERS). Every third buys on a second day 20
    days after the first, every sixth on a third day 45 days after it."""
    rows = []
    for i in range(n):
        first = ts("2023-06-01 12:00") + pd.Timedelta(days=5 * i)
        days = [0] + [20] * (i % 3 == 0) + [45] * (i % 6 == 0)
        rows += [
            (first + pd.Timedelta(days=d), f"g{i:02d}", None, "b1", None, "purchase", 9.0)
            for d in days
        ]
    out = dict(tables)
    out["events"] = pd.concat([tables["events"], events_frame(rows)], ignore_index=True)
    return out


def ibis_tables(tables: dict[str, pd.DataFrame], root) -> dict:
    write_dir(tables, root)
    con = engines.duckdb_connection()
    views = io.register_tables(con, root)
    return engines.ibis_tables(con, list(views))


def compute(tables: dict[str, pd.DataFrame], root, cfg=CFG) -> pd.DataFrame:
    """Every feature (features.collect_features) of f1 and f2 for b1 at CUTOFF."""
    t = ibis_tables(tables, root)
    spine = ibis.memtable(
        pd.DataFrame(
            {
                "follower_id": ["f1", "f2"],
                "influencer_id": ["i1", "i1"],
                "brand_id": ["b1", "b1"],
                "cutoff_ts": [CUTOFF, CUTOFF],
            }
        )
    )
    out = features.collect_features(spine, t, cfg, LABEL)
    return out.sort_values("follower_id").set_index("follower_id")


@pytest.fixture(scope="module")
def feats(tmp_path_factory) -> pd.DataFrame:
    return compute(base_tables(), tmp_path_factory.mktemp("feat"))


def test_follower_influencer_family(feats):
    f1 = feats.loc["f1"]
    assert (f1.fi_view_7d, f1.fi_like_7d) == (1, 1)
    assert (f1.fi_view_30d, f1.fi_comment_30d, f1.fi_click_30d) == (2, 1, 1)
    assert f1.fi_view_90d == 3
    assert f1.fi_posts_30d == 2 and f1.fi_posts_90d == 3
    assert f1.fi_depth_30d == pytest.approx(1 / 2)  # (comment+share+save) / views
    assert f1.fi_days_since_engaged == 2  # 2024-02-28 -> day of 2024-03-01
    assert f1.fi_follow_days == pytest.approx((CUTOFF - ts("2023-09-01")).total_seconds() / 86400)
    # f1's engagement over 90 days: 6 on i1 + 1 on i2
    assert f1.fi_attention_share == pytest.approx(6 / 7)
    # posts of i1 first seen in the last 30 days: p1, p2, p7 (p3 is older; p4 is on the
    # cutoff day, p5 after); in 90 days p3 too
    assert (f1.inf_posts_30d, f1.inf_posts_90d) == (3, 4)
    assert f1.fi_post_share_30d == pytest.approx(2 / 3)
    assert feats.loc["f2"].fi_post_share_90d == pytest.approx(2 / 4)


def test_follower_family(feats):
    f1, f2 = feats.loc["f1"], feats.loc["f2"]
    assert f1.f_purchases_30d == 2 and f1.f_amount_30d == pytest.approx(30.0)
    assert f1.f_purchases_90d == 3 and f1.f_amount_90d == pytest.approx(35.0)
    assert f1.f_purchases_all == 5  # includes the 2023 purchases
    assert f1.f_brands_purchased == 2
    assert f1.f_days_since_purchase == 5
    # purchase days at least 90 days before the cutoff: b1 on 2023-10-05 (bought again on
    # 10-20: a rebuy) and on 2023-10-20 (next b1 purchase 2024-02-20, 123 days later: not)
    assert f1.f_rebuy_rate == pytest.approx(1 / 2)
    assert np.isnan(f2.f_rebuy_rate)
    assert f1.f_influencers_90d == 2
    assert f1.f_like_only == 0
    assert f2.f_like_only == 1 and f2.f_like_per_view == pytest.approx(2.0)
    assert f2.f_purchases_all == 0 and np.isnan(f2.f_days_since_purchase)


def test_follower_brand_family(feats):
    f1, f2 = feats.loc["f1"], feats.loc["f2"]
    assert f1.fb_purchases_all == 4  # b1: two in 2023, two in February
    assert f1.fb_purchases_90d == 2
    assert f1.fb_category_purchases_all == 5  # b2 is beauty too
    assert f1.fb_sponsored_engagement_90d == 3 and f1.fb_sponsored_clicks_90d == 1
    assert f1.fb_days_since_purchase == 5
    # engagement on creators of the brand's category (beauty: i1) over all engagement
    assert f1.fb_category_engagement_share_90d == pytest.approx(6 / 7)
    assert f2.fb_category_engagement_share_90d == pytest.approx(1.0)
    assert f2.fb_purchases_all == 0 and np.isnan(f2.fb_days_since_purchase)


def test_influencer_and_brand_family(feats):
    f1 = feats.loc["f1"]
    assert f1.inf_audience == 2
    assert f1.inf_tier == 1  # 50k followers: micro
    assert f1.inf_log_followers == pytest.approx(np.log(50_001))
    assert f1.inf_category_match == 1
    assert f1.inf_category == "beauty" and f1.br_category == "beauty"
    assert f1.br_log_price == pytest.approx(np.log(20.0))
    # past campaign c0 closed before the cutoff: 2 followers then, f1 loyal -> 1/2
    assert f1.inf_past_campaigns == 1
    assert f1.inf_past_loyal_rate == pytest.approx(0.5)
    # 90-day engagement on i1 (likes, comments, shares, saves): 1+1+2 = 4 over 2 followers
    assert f1.inf_engagement_rate_90d == pytest.approx(4 / 2)
    assert f1.inf_sponsored_days_90d == 1
    # brand b1: one buyer before the cutoff (f1); of its purchase days closed for a rebuy
    # (2023-10-05, 2023-10-20) one was followed within 90 days; its past campaign c0 at 1/2
    assert f1.br_buyers == 1 and f1.br_rebuy_rate == pytest.approx(1 / 2)
    assert f1.br_past_campaigns == 1 and f1.br_past_loyal_rate == pytest.approx(0.5)


def test_prior_shrinks_past_rate(tmp_path):
    """i1's (and b1's) past rate, 1 loyal of 2 in c0, shrinks toward the pooled rate of all
    campaigns closed before the cutoff; a second one, c2 (i2, b2), makes that pool 1 of 5."""
    tables = base_tables()
    tables["follows"] = pd.concat(
        [
            tables["follows"],
            pd.DataFrame(
                {
                    "follower_id": ["f3", "f4", "f5"],
                    "influencer_id": "i2",
                    "followed_at": ts("2023-09-01"),
                    "unfollowed_at": pd.Series([pd.NaT] * 3, dtype="datetime64[us, UTC]"),
                }
            ),
        ],
        ignore_index=True,
    )
    # c2: i2's three followers at its start, none of whom buys b2: 0 loyal of 3; closed
    # (start + 90 days) before the cutoff
    c2 = pd.DataFrame(
        {
            "campaign_id": ["c2"],
            "brand_id": "b2",
            "influencer_id": "i2",
            "start_ts": [ts("2023-10-01 17:00")],
            "cost": [None],
        }
    )
    tables["campaigns"] = pd.concat([tables["campaigns"], c2], ignore_index=True)
    loyal, followers, prior, strength = 1, 2, 1 / 5, 8
    shrunk = compute(tables, tmp_path / "a", FeatureConfig(windows=(7, 30, 90), prior_strength=8))
    raw = compute(tables, tmp_path / "b", FeatureConfig(windows=(7, 30, 90), prior_strength=0))
    expected = (loyal + prior * strength) / (followers + strength)  # 0.26
    assert shrunk.loc["f1"].inf_past_loyal_rate == pytest.approx(expected)
    assert shrunk.loc["f1"].br_past_loyal_rate == pytest.approx(expected)  # b1: c0 only too
    assert raw.loc["f1"].inf_past_loyal_rate == pytest.approx(loyal / followers)
    assert raw.loc["f1"].br_past_loyal_rate == pytest.approx(loyal / followers)
    assert shrunk.loc["f1"].inf_past_campaigns == 1  # c2 is i2's, not i1's


def test_no_engagement_events_at_all_gives_nulls_and_zeros(tmp_path):
    tables = base_tables()
    ev = tables["events"]
    tables["events"] = ev[ev.event_type == "purchase"].reset_index(drop=True)
    out = compute(tables, tmp_path)
    assert out.loc["f2"].fi_view_90d == 0
    assert np.isnan(out.loc["f2"].fi_depth_90d)
    assert out.loc["f1"].f_purchases_all == 5


def test_amounts_add_up_to_the_cent_in_any_order(tmp_path):
    """Money is summed in whole cents: 0.1 + 0.2 + 0.3 is 0.6 exactly, whichever order a
    parallel engine adds in (in floats it is 0.6000000000000001 in one order, 0.6 in another),
    so features, and the model fitted on them, are the same on every run."""
    tables = base_tables()
    ev = tables["events"]
    ev.loc[ev.event_type.eq("purchase") & (ev.event_ts >= ts("2024-01-01")), "amount"] = [
        0.1,
        0.2,
        0.3,
        99.0,
    ]
    out = compute(tables, tmp_path)
    assert out.loc["f1"].f_amount_90d == 0.6  # exact, not approx
    assert out.loc["f1"].f_amount_30d == 0.3


# -- the point-in-time invariant ---------------------------------------------------------------

_TYPES = ("view", "like", "comment", "share", "save", "click", "purchase")


@st.composite
def future_events(draw):
    """1-4 events at or after the cutoff: any follower, influencer, brand and type."""
    n = draw(st.integers(1, 4))
    rows = []
    for _ in range(n):
        seconds = draw(st.integers(0, 200 * 86400))
        kind = draw(st.sampled_from(_TYPES))
        rows.append(
            (
                CUTOFF + pd.Timedelta(seconds=seconds),
                draw(st.sampled_from(["f1", "f2", "f3", "g00", "g01"])),
                draw(st.sampled_from(["i1", "i2", None])),
                draw(st.sampled_from(["b1", "b2", None])) if kind != "purchase" else "b1",
                draw(st.sampled_from(["p1", "p9", None])),
                kind,
                draw(st.floats(0, 500)) if kind == "purchase" else None,
            )
        )
    return rows


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> pd.DataFrame:
    """The base world with b1's other buyers: the BG/NBD features are fitted, not NaN."""
    out = compute(with_buyers(base_tables()), tmp_path_factory.mktemp("base"))
    assert out.loc["f1"].notna().fb_p_alive  # guards the invariant below from being vacuous
    return out


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(extra=future_events())
def test_events_at_or_after_cutoff_never_change_any_feature(baseline, tmp_path_factory, extra):
    tables = with_buyers(base_tables())
    # an exact copy of an event is refused by the contract: keep one (the same as adding none)
    events = pd.concat([tables["events"], events_frame(extra)], ignore_index=True)
    tables["events"] = events.drop_duplicates(ignore_index=True)
    got = compute(tables, tmp_path_factory.mktemp("pit"))
    pd.testing.assert_frame_equal(got, baseline, check_exact=False, rtol=1e-12)


def test_an_event_before_the_cutoff_day_does_change_features(baseline, tmp_path):
    """Guard against a vacuous invariant: the same kind of change one day earlier shows. A
    purchase of another buyer moves the BG/NBD parameters, hence f1's P(alive), although f1's
    own history is the same."""
    tables = with_buyers(base_tables())
    early = events_frame(
        [
            (CUTOFF - pd.Timedelta(days=1), "f1", "i1", None, "p9", "view", None),
            (CUTOFF - pd.Timedelta(days=1), "g01", None, "b1", None, "purchase", 5.0),
        ]
    )
    tables["events"] = pd.concat([tables["events"], early], ignore_index=True)
    got = compute(tables, tmp_path)
    assert got.loc["f1"].fi_view_7d == baseline.loc["f1"].fi_view_7d + 1
    assert got.loc["f1"].fb_purchase_days_all == baseline.loc["f1"].fb_purchase_days_all
    assert got.loc["f1"].fb_p_alive != baseline.loc["f1"].fb_p_alive


def test_feature_names_are_unique_and_windowed(baseline):
    names = features.feature_names(list(baseline.reset_index().columns), features.SPINE_KEYS)
    assert len(names) == len(set(names))
    for w, t in itertools.product(CFG.windows, features.ENGAGEMENT):
        assert f"fi_{t}_{w}d" in names


# -- BG/NBD features -----------------------------------------------------------------------


def test_bg_nbd_history_features(tmp_path):
    """Purchase days (a second purchase on a day is the same day), days since the first
    purchase day, the mean amount of a purchase; NaN without a purchase of the brand. b1 has
    one buyer: no fit, so P(alive) and the expected purchases are NaN even for f1."""
    tables = base_tables()
    again = events_frame([("2024-02-25 18:00", "f1", None, "b1", None, "purchase", 7.0)])
    tables["events"] = pd.concat([tables["events"], again], ignore_index=True)
    out = compute(tables, tmp_path)
    f1, f2 = out.loc["f1"], out.loc["f2"]
    # b1: 2023-10-05, 2023-10-20, 2024-02-20, 2024-02-25 (twice); 2024-03-05 is after
    assert (f1.fb_purchases_all, f1.fb_purchase_days_all) == (5, 4)
    assert f1.fb_days_since_first_purchase == 148  # 2023-10-05 -> 2024-03-01
    assert f1.fb_days_since_purchase == 5
    assert f1.fb_amount_mean == pytest.approx((10 + 10 + 10 + 20 + 7) / 5)
    assert f2.fb_purchase_days_all == 0
    for c in ("fb_days_since_first_purchase", "fb_amount_mean", *features.bg_nbd_columns(90)):
        assert np.isnan(f2[c]), c
    assert np.isnan(f1.fb_p_alive) and np.isnan(f1.fb_expected_purchase_days_90d)


def _population_by_hand(events: pd.DataFrame, brand: str, cut: pd.Timestamp):
    """(follower -> (x, t_x, T)) of every buyer of `brand` on a day before the day of `cut`."""
    day0 = cut.normalize()
    p = events[(events.event_type == "purchase") & (events.brand_id == brand)]
    days = p.assign(day=p.event_ts.dt.normalize())
    days = days[days.day < day0].groupby("follower_id")["day"].agg(["nunique", "min", "max"])
    return {
        f: (r["nunique"] - 1, (r["max"] - r["min"]).days, (day0 - r["min"]).days)
        for f, r in days.iterrows()
    }


def test_p_alive_and_expected_purchases_are_btyd_with_the_parameters_of_the_buyers_before(
    baseline,
):
    """The parameters: btyd.fit_bg_nbd on every buyer of b1 before the cutoff day (f1 and the
    40 others, from the raw events); f1's values: btyd's functions of its own history."""
    pop = _population_by_hand(with_buyers(base_tables())["events"], "b1", CUTOFF)
    assert len(pop) == 41 and pop["f1"] == (3, 143, 148)
    x, t_x, T = (np.array(v, dtype=float) for v in zip(*pop.values(), strict=True))
    params = btyd.fit_bg_nbd(x, t_x, T)
    f1 = baseline.loc["f1"]
    assert f1.fb_p_alive == pytest.approx(btyd.p_alive(params, 3, 143, 148).item(), rel=1e-12)
    expected = btyd.expected_purchases(params, 90, 3, 143, 148).item()
    assert f1.fb_expected_purchase_days_90d == pytest.approx(expected, rel=1e-12)
    assert 0 < f1.fb_p_alive < 1 and f1.fb_expected_purchase_days_90d > 0
    f2 = baseline.loc["f2"]  # never bought b1: P(alive) is not defined
    assert np.isnan(f2.fb_p_alive) and np.isnan(f2.fb_expected_purchase_days_90d)


def test_the_parameters_of_a_brand_and_day_depend_on_nothing_else(tmp_path):
    """The same (brand, cutoff day) gets the same parameters whichever other pairs are fitted
    with it (training's many cutoffs, scoring's one) and at whatever hour of the day its
    cutoff falls; b2 (one buyer) gets none; purchases on the cutoff day itself, before the
    cutoff's hour, or later, by buyers old and new, do not move them."""
    tables = with_buyers(base_tables())
    t = ibis_tables(tables, tmp_path / "a")
    pairs = lambda *rows: pd.DataFrame(rows, columns=["brand_id", "cutoff_ts"])  # noqa: E731
    one = features.bg_nbd_fits(pairs(("b1", CUTOFF)), t["events"], 90).params
    many = features.bg_nbd_fits(
        pairs(
            ("b2", CUTOFF),
            ("b1", CUTOFF - pd.Timedelta(days=30)),
            ("b1", CUTOFF.normalize()),
            ("b1", CUTOFF),
        ),
        t["events"],
        90,
    ).params
    # one row per (brand, day), in order: b1 30 days earlier, b1 on the cutoff day, b2
    assert len(one) == 1 and list(many.brand_id) == ["b1", "b1", "b2"]
    pd.testing.assert_frame_equal(many.iloc[[1]].reset_index(drop=True), one, check_exact=True)
    assert many.iloc[2][["r", "alpha", "a", "b"]].isna().all()
    assert many.iloc[0].r != one.iloc[0].r  # 30 days earlier: shorter histories
    later = events_frame(
        [
            ("2024-03-01 09:00", "g00", None, "b1", None, "purchase", 1.0),  # cutoff day
            ("2024-03-01 09:00", "new", None, "b1", None, "purchase", 1.0),
            ("2024-03-02 09:00", "g03", None, "b1", None, "purchase", 1.0),
        ]
    )
    tables["events"] = pd.concat([tables["events"], later], ignore_index=True)
    t = ibis_tables(tables, tmp_path / "b")
    moved = features.bg_nbd_fits(pairs(("b1", CUTOFF)), t["events"], 90).params
    pd.testing.assert_frame_equal(moved, one, check_exact=True)


def test_bg_nbd_features_of_a_frame_do_not_depend_on_its_batches(baseline):
    """Scoring adds them batch by batch: a row's values are the same alone or with others."""
    fits = features.BGNBDFits(
        90,
        pd.DataFrame(
            {"brand_id": ["b1"], "cut": features.cut_days([CUTOFF]), "r": [0.5], "alpha": [30.0]}
        ).assign(a=0.8, b=2.5, buyers=41.0, repeat_buyers=14.0, converged=True),
    )
    frame = baseline.reset_index().drop(columns=list(features.bg_nbd_columns(90)))
    whole = fits.apply(frame)
    for i in range(len(frame)):
        alone = fits.apply(frame.iloc[[i]])
        pd.testing.assert_frame_equal(alone, whole.iloc[[i]])
    assert whole.loc[0, "fb_p_alive"] == btyd.p_alive((0.5, 30.0, 0.8, 2.5), 3, 143, 148).item()
    assert "fb_p_alive" not in frame  # the input is not changed
