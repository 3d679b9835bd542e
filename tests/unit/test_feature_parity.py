"""The feature build equals its straightforward reference (tests/reference_features.py: the
range-join build of FEATURE_VERSION 2 as it was before the build was optimised, with version
3's columns) exactly: same columns in the same order, same types, same nulls, same values to
the last bit. The BG/NBD features equal theirs, computed from the raw events in pandas."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from loyalty_model import engines, features, io, spine
from loyalty_model.config import load_config

from ..reference_features import reference_bg_nbd, reference_features


@pytest.fixture(scope="module")
def built(tiny_world):
    """(ours, reference, BG/NBD features, their reference, the fits) for the training spine
    and a scoring spine of every influencer."""
    cfg = load_config(None)
    con = engines.duckdb_connection(threads=2)
    views = io.register_tables(con, tiny_world)
    tables = engines.ibis_tables(con, list(views))
    end = con.execute("SELECT max(event_ts) FROM events").fetchall()[0][0]
    training = spine.training_spine(tables, cfg.label, end).rows
    as_of = (end + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    scoring = spine.scoring_spine(tables, "b0001", as_of)
    events = con.execute("SELECT * FROM events").df()
    h = cfg.label.horizon_days
    out = {}
    for name, rows in (("training", training), ("scoring", scoring)):
        keys = [c for c in ("campaign_id", *features.SPINE_KEYS) if c in rows.columns]
        ours = features.build_features(rows, tables, cfg.features, cfg.label).to_pandas()
        ref = reference_features(rows, tables, cfg.features, cfg.label).to_pandas()
        ours, ref = (f.sort_values(keys).reset_index(drop=True) for f in (ours, ref))
        # the BG/NBD step collect_features takes, and its reference from the raw events
        fits = features.bg_nbd_fits(ours[["brand_id", "cutoff_ts"]], tables["events"], h)
        bg = fits.apply(ours)[list(features.bg_nbd_columns(h))]
        ref_bg = reference_bg_nbd(ours, events, h, features.BG_NBD_MIN_BUYERS)
        out[name] = (ours, ref, bg, ref_bg, fits)
    con.close()
    return out


def _bit_for_bit(ours: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(ours.columns) == list(ref.columns)
    assert dict(ours.dtypes) == dict(ref.dtypes)
    for c in ref.columns:
        a, b = ours[c], ref[c]
        assert (a.isna() == b.isna()).all(), f"{c}: nulls differ"
        if a.dtype.kind == "f":
            x, y = a.to_numpy(), b.to_numpy()
            same = np.array_equal(x.view(np.int64), y.view(np.int64))  # bits, not tolerance
            assert same or np.array_equal(x, y, equal_nan=True), f"{c}: values differ"
        else:
            pd.testing.assert_series_equal(a, b, check_names=False, obj=c)


@pytest.mark.parametrize("spine_name", ["training", "scoring"])
def test_features_equal_the_reference_bit_for_bit(built, spine_name):
    ours, ref, *_ = built[spine_name]
    assert len(ref) > 1000  # a real spine, not an empty one
    _bit_for_bit(ours, ref)


@pytest.mark.parametrize("spine_name", ["training", "scoring"])
def test_bg_nbd_features_equal_the_reference_from_the_raw_events(built, spine_name):
    """Each row's P(alive) and expected purchase days: btyd's functions of its own purchase
    days before its cutoff day, with the parameters fitted on every buyer of the brand before
    that day (none of them at or after it)."""
    ours, _, bg, ref_bg, fits = built[spine_name]
    _bit_for_bit(bg, ref_bg)
    buyer = ours["fb_purchase_days_all"] > 0
    assert bg["fb_p_alive"].notna().eq(buyer).all()  # NaN exactly for non-buyers: all fitted
    assert bg["fb_p_alive"][buyer].between(0, 1).all()
    assert buyer.sum() > 100 and bg["fb_p_alive"][buyer].lt(1).any()  # repeat buyers too
    cuts = ours[["brand_id", "cutoff_ts"]].assign(cut=features.cut_days(ours["cutoff_ts"]))
    assert fits.fits == len(cuts[["brand_id", "cut"]].drop_duplicates())


def test_the_reference_sees_every_family(built):
    """Guards the test itself: every family has rows with non-trivial values to compare."""
    _, ref, *_ = built["training"]
    for prefix in ("fi_", "f_", "fb_", "inf_", "br_"):
        cols = [c for c in ref.columns if c.startswith(prefix) and ref[c].dtype.kind in "fi"]
        assert cols, prefix
        assert any(ref[c].fillna(0).ne(0).any() for c in cols), prefix
