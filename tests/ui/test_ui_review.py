"""The Review page on a batch scored by the real worker: sliders, band, gallery, labels, state.

Expected values are computed here from the stored scores, independently of
the page's own code, and label actions are checked in the database.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from review_helpers import ScoredBatch
from ui_helpers import REVIEWER

import storage.review
from davae.errors import DavaeError
from storage import audit, batches, export, labels, review
from storage.db import Storage
from storage.models import LabelSource, LabelValue
from ui.i18n import load_catalog

EN, KO = load_catalog("en"), load_catalog("ko")


def metrics(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def card_ids(at) -> list[int]:
    """Image ids of the gallery cards, in display order."""
    prefix = "review_flip_"
    return [
        int(button.key.removeprefix(prefix))
        for button in at.button
        if button.key.startswith(prefix)
    ]


def stored_scores(storage: Storage, batch_id: int) -> dict[str, np.ndarray]:
    """The batch's scored images as arrays, read straight from storage."""
    with storage.database.read() as session:
        batch = batches.get_batch(session, batch_id)
        rows = [row for row in review.batch_table(session, batch_id) if row.recon_score is not None]
        metric = batch.thresholds["latent_metric"]
    return {
        "image_id": np.array([row.image_id for row in rows]),
        "position": np.array([row.position for row in rows]),
        "recon": np.array([row.recon_score for row in rows]),
        "latent": np.array([getattr(row, f"latent_{metric}") for row in rows]),
    }


def expected_combined(scores: dict[str, np.ndarray], recon: float, latent: float) -> np.ndarray:
    return np.maximum(scores["recon"] / recon, scores["latent"] / latent)


def batch_thresholds(storage: Storage, batch_id: int) -> dict:
    with storage.database.read() as session:
        return dict(batches.get_batch(session, batch_id).thresholds)


def array_values(value) -> list[float]:
    """Decode a plotly array: a list, or the typed base64 form plotly uses for numpy arrays."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def plotly_traces(at, index: int) -> dict[str, list[float]]:
    spec = json.loads(at.get("plotly_chart")[index].proto.spec)
    return {trace["name"]: array_values(trace["y"]) for trace in spec["data"]}


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every way of loading or running a model fail, so a page that uses one breaks."""
    import davae.bundle
    import davae.detector
    import ui.context

    def fail_on_model_use(*args, **kwargs):
        raise AssertionError("the Review page must not load or run a model")

    monkeypatch.setattr(davae.bundle, "load_bundle", fail_on_model_use)
    monkeypatch.setattr(ui.context, "load_detector", fail_on_model_use)
    monkeypatch.setattr(davae.detector.Detector, "analyze", fail_on_model_use)


def test_slider_relabels_without_model(
    open_app, scored_storage: Storage, scored_batch: ScoredBatch, no_model, monkeypatch
) -> None:
    scores = stored_scores(scored_storage, scored_batch.batch_id)
    stored = batch_thresholds(scored_storage, scored_batch.batch_id)
    reads = []
    real_batch_table = storage.review.batch_table

    def counted(session, batch_id):
        reads.append(batch_id)
        return real_batch_table(session, batch_id)

    monkeypatch.setattr(storage.review, "batch_table", counted)
    at = open_app("review")
    assert not at.exception
    assert reads == [scored_batch.batch_id]
    expected = int(
        ((scores["recon"] > stored["recon"]) | (scores["latent"] > stored["latent"])).sum()
    )
    shown = metrics(at)
    assert shown[EN["review.count_anomalous"]] == str(expected)
    assert shown[EN["review.count_normal"]] == str(scored_batch.scored - expected)

    recon_key = f"review_recon_{scored_batch.batch_id}"
    latent_key = f"review_latent_{scored_batch.batch_id}"
    recon = at.slider(key=recon_key)
    recon.set_value(recon.min).run()
    assert not at.exception
    assert metrics(at)[EN["review.count_anomalous"]] == str(scored_batch.scored)
    traces = plotly_traces(at, 0)
    assert list(traces) == [EN["review.class.normal"], EN["review.class.anomalous"]]
    assert sum(traces[EN["review.class.normal"]]) == 0
    assert sum(traces[EN["review.class.anomalous"]]) == scored_batch.scored
    automatic = [text.value for text in at.markdown if text.value.startswith("Automatic:")]
    assert automatic
    assert all("**anomalous**" in text for text in automatic)

    # Widgets are looked up again after each run: setting a widget of an older
    # tree sends that tree's states, and AppTest then fires the callbacks of
    # buttons that are no longer shown.
    recon = at.slider(key=recon_key)
    recon.set_value(recon.max).run()
    latent = at.slider(key=latent_key)
    latent.set_value(latent.max).run()
    assert metrics(at)[EN["review.count_anomalous"]] == "0"
    automatic = [text.value for text in at.markdown if text.value.startswith("Automatic:")]
    assert all("**normal**" in text for text in automatic)
    # Three reruns, one read of the table: the sliders worked on the cached copy.
    assert reads == [scored_batch.batch_id]
    with scored_storage.database.read() as session:
        assert review.label_counts(session, scored_batch.batch_id).human_reviewed == 0


def test_histograms_show_thresholds(open_app, scored_batch: ScoredBatch) -> None:
    at = open_app("review")
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    assert len(charts) == 3
    recon_value = at.slider(key=f"review_recon_{scored_batch.batch_id}").value
    recon_lines = [shape["x0"] for shape in charts[0]["layout"]["shapes"]]
    assert recon_lines == [pytest.approx(recon_value)]
    assert [shape["x0"] for shape in charts[2]["layout"]["shapes"]] == [1.0]
    for chart in charts:
        assert sum(sum(array_values(trace["y"])) for trace in chart["data"]) == scored_batch.scored


def test_band_counts_and_filter(
    open_app, scored_storage: Storage, scored_batch: ScoredBatch
) -> None:
    batch_id = scored_batch.batch_id
    at = open_app("review", language="ko")
    assert metrics(at)[KO["review.count_review"]] == KO["common.none"]
    at.toggle(key=f"review_band_{batch_id}").set_value(True).run()
    at.slider(key=f"review_band_low_{batch_id}").set_value(0.5).run()
    at.slider(key=f"review_band_high_{batch_id}").set_value(1.5).run()
    assert not at.exception

    stored = batch_thresholds(scored_storage, batch_id)
    combined = expected_combined(
        stored_scores(scored_storage, batch_id), stored["recon"], stored["latent"]
    )
    in_band = int(((combined >= 0.5) & (combined <= 1.5)).sum())
    assert 0 < in_band < scored_batch.scored
    shown = metrics(at)
    assert shown[KO["review.count_review"]] == str(in_band)
    assert shown[KO["review.count_normal"]] == str(int((combined < 0.5).sum()))
    assert shown[KO["review.count_anomalous"]] == str(int((combined > 1.5).sum()))
    spec = json.loads(at.get("plotly_chart")[2].proto.spec)
    assert [trace["name"] for trace in spec["data"]] == [
        KO["review.class.normal"],
        KO["review.class.review"],
        KO["review.class.anomalous"],
    ]
    assert [shape["x0"] for shape in spec["layout"]["shapes"]] == [1.0, 0.5, 1.5]

    at.segmented_control(key="review_filter").set_value("review").run()
    ids = card_ids(at)
    assert len(ids) == min(in_band, 12)
    scores = stored_scores(scored_storage, batch_id)
    band_ids = set(scores["image_id"][(combined >= 0.5) & (combined <= 1.5)].tolist())
    assert set(ids) <= band_ids
    assert any(f"전체 {in_band}개 중" in caption.value for caption in at.caption)


def test_gallery_pages_by_score(
    open_app, scored_storage: Storage, scored_batch: ScoredBatch
) -> None:
    batch_id = scored_batch.batch_id
    at = open_app("review")
    at.selectbox(key="review_page_size").set_value(6).run()
    stored = batch_thresholds(scored_storage, batch_id)
    scores = stored_scores(scored_storage, batch_id)
    combined = expected_combined(scores, stored["recon"], stored["latent"])
    order = scores["image_id"][np.lexsort((scores["position"], -combined))].tolist()

    assert card_ids(at) == order[:6]
    pager = at.get("pagination")[0]
    pager.set_value(4).run()
    assert card_ids(at) == order[18:21]
    assert any("Images 19–21 of 21" in caption.value for caption in at.caption)
    at.selectbox(key="review_sort").set_value("score_asc").run()
    assert card_ids(at) == list(reversed(order))[:6]
    images = at.get("image")
    assert len(images) == 6 * 3  # original, reconstruction and heatmap per card


def test_confirm_and_flip_save_labels(
    open_app, scored_storage: Storage, scored_batch: ScoredBatch
) -> None:
    batch_id = scored_batch.batch_id
    started = datetime.now(UTC) - timedelta(seconds=1)
    at = open_app("review")
    assert not at.dataframe or EN["review.agreement_human"] not in at.dataframe[0].value.columns
    first, second = card_ids(at)[:2]
    # The two highest combined scores are over the calibrated thresholds.
    at.button(key=f"review_flip_{first}").click().run()
    assert not at.exception
    assert at.toast[0].value.endswith(f"saved as {EN['common.label.normal']}.")
    at.button(key=f"review_confirm_{second}").click().run()

    with scored_storage.database.read() as session:
        flipped = labels.current_label(session, first)
        confirmed = labels.current_label(session, second)
        entries = audit.list_entries(session, batch_id=batch_id, action=audit.AuditAction.LABEL_SET)
    assert (flipped.source, flipped.value, flipped.reviewer) == (
        LabelSource.HUMAN,
        LabelValue.NORMAL,
        REVIEWER,
    )
    assert (confirmed.source, confirmed.value) == (LabelSource.HUMAN, LabelValue.ANOMALOUS)
    assert flipped.created_at >= started
    assert [entry.entity_id for entry in entries] == [second, first]
    assert entries[1].details["previous"] == "anomalous"
    assert entries[1].actor == REVIEWER

    shown = metrics(at)
    assert shown[EN["review.count_reviewed"]] == "2"
    assert shown[EN["review.count_changed"]] == "1"
    agreement = at.dataframe[0].value
    normal, anomalous = EN["common.label.normal"], EN["common.label.anomalous"]
    assert list(agreement[EN["review.agreement_human"]]) == [normal, anomalous]
    auto_anomalous = EN["review.agreement_auto"].format(label=anomalous)
    auto_normal = EN["review.agreement_auto"].format(label=normal)
    assert list(agreement[auto_anomalous]) == [1, 1]
    assert list(agreement[auto_normal]) == [0, 0]
    assert shown[EN["common.score_metric.precision"]] == "50.0%"
    assert shown[EN["common.score_metric.recall"]] == "100.0%"
    assert f"set by {REVIEWER}" in "\n".join(text.value for text in at.markdown)


def test_apply_thresholds_stores_labels(
    open_app, scored_storage: Storage, scored_batch: ScoredBatch
) -> None:
    batch_id = scored_batch.batch_id
    at = open_app("review")
    assert not at.info  # the sliders start at the stored thresholds
    scores = stored_scores(scored_storage, batch_id)
    chosen = float(np.sort(scores["recon"])[len(scores["recon"]) // 2])
    slider = at.slider(key=f"review_recon_{batch_id}")
    slider.set_value(chosen).run()
    assert [info.value for info in at.info] == [EN["review.not_applied"]]
    latent = batch_thresholds(scored_storage, batch_id)["latent"]
    expected = int(((scores["recon"] > chosen) | (scores["latent"] > latent)).sum())
    assert metrics(at)[EN["review.count_anomalous"]] == str(expected)

    at.button(key=f"review_apply_{batch_id}").click().run()
    assert not at.exception
    assert at.success[0].value == EN["review.applied"].format(
        labelled=scored_batch.scored, anomalous=expected
    )
    assert not at.info
    with scored_storage.database.read() as session:
        batch = batches.get_batch(session, batch_id)
        rows = review.batch_table(session, batch_id)
        exported = export.export_rows(session, batch_id)
        entries = audit.list_entries(
            session, batch_id=batch_id, action=audit.AuditAction.THRESHOLDS_APPLY
        )
    assert batch.thresholds["recon"] == pytest.approx(chosen)
    assert batch.anomaly_count == expected
    assert sum(row.auto_label == LabelValue.ANOMALOUS for row in rows) == expected
    # Each new auto label carries the thresholds it was made with.
    scored_rows = [row for row in exported if row.recon_score is not None]
    assert len(scored_rows) == scored_batch.scored
    assert [row.thresholds["recon"] for row in scored_rows] == [pytest.approx(chosen)] * len(
        scored_rows
    )
    assert len(entries) == 1
    assert entries[0].details["thresholds"]["recon"] == pytest.approx(chosen)
    assert entries[0].actor == REVIEWER


def test_state_survives_page_switch(open_app, scored_batch: ScoredBatch) -> None:
    batch_id = scored_batch.batch_id
    at = open_app("review")
    recon = at.slider(key=f"review_recon_{batch_id}")
    moved = recon.min + 10 * (recon.step or 0)
    recon.set_value(moved).run()
    at.toggle(key=f"review_band_{batch_id}").set_value(True).run()
    at.slider(key=f"review_band_high_{batch_id}").set_value(2.0).run()
    at.segmented_control(key="review_filter").set_value("unreviewed").run()
    at.selectbox(key="review_page_size").set_value(6).run()
    at.get("pagination")[0].set_value(2).run()
    page_two = card_ids(at)

    at.switch_page("app_pages/export.py").run()
    assert not at.exception
    assert EN["export.not_applied"] in [info.value for info in at.info]
    at.switch_page("app_pages/review.py").run()
    assert at.slider(key=f"review_recon_{batch_id}").value == pytest.approx(moved)
    assert at.toggle(key=f"review_band_{batch_id}").value is True
    assert at.slider(key=f"review_band_high_{batch_id}").value == pytest.approx(2.0)
    assert at.segmented_control(key="review_filter").value == "unreviewed"
    assert at.selectbox(key="review_page_size").value == 6
    assert card_ids(at) == page_two


def test_label_not_saved_is_translated(
    open_app, scored_batch: ScoredBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    def busy(database, image_id, value, reviewer, **kwargs):
        raise DavaeError(
            "label_not_saved",
            "the label was not saved: database is locked",
            image_id=image_id,
            file_name="불량_001.png",
            value=str(value),
            detail="database is locked",
        )

    monkeypatch.setattr(labels, "save_human_label", busy)
    at = open_app("review", language="ko")
    first = card_ids(at)[0]
    at.button(key=f"review_flip_{first}").click().run()
    assert [error.value for error in at.error] == [
        KO["error.label_not_saved"].format(
            file_name="불량_001.png",
            image_id=first,
            value=KO["common.label.normal"],
            detail="database is locked",
        )
    ]


def test_rejected_files_listed(open_app, scored_batch: ScoredBatch) -> None:
    at = open_app("review", language="ko")
    table = at.dataframe[-1].value
    assert list(table[KO["common.column_file"]]) == ["broken.png", "notes.txt"]
    reasons = list(table[KO["common.column_reason"]])
    assert reasons[1].startswith("notes.txt: .txt 형식의 파일은 지원하지 않습니다.")


def test_buttons_need_reviewer(open_app, scored_batch: ScoredBatch) -> None:
    at = open_app("review", reviewer="")
    first = card_ids(at)[0]
    assert at.button(key=f"review_flip_{first}").disabled
    assert at.button(key=f"review_apply_{scored_batch.batch_id}").disabled


def test_page_without_batches(open_app) -> None:
    at = open_app("review")
    assert [info.value for info in at.info] == [EN["review.no_batches"]]
