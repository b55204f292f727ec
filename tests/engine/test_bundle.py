"""Model bundles: round trip, contents, and rejection of damaged or foreign files."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import zipfile

import numpy as np
import pytest
import torch
from engine_images import zip_bytes

import davae
from davae.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    detector_to_dict,
    load_bundle,
    save_bundle,
)
from davae.config import DetectorConfig
from davae.errors import DavaeError


class CreatesMarkerFile:
    """Unpickling this object opens (creates) ``path``: a stand-in for any code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def load_error(path) -> DavaeError:
    with pytest.raises(DavaeError) as caught:
        load_bundle(path)
    return caught.value


def member_data_offset(data: bytes, name_suffix: str) -> tuple[int, int]:
    """Start and size of the stored bytes of the first member ending in ``name_suffix``."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(name_suffix))
    name_length = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_length = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    return info.header_offset + 30 + name_length + extra_length, info.compress_size


@pytest.fixture(scope="module")
def loaded(tiny_bundle):
    return load_bundle(tiny_bundle)


def test_round_trip_scores_identical(tiny, loaded, normal_images):
    images = normal_images(4, seed=50)
    before = tiny.detector.score_pixels(images)
    after = loaded.score_pixels(images)

    for original, restored in zip(before, after, strict=True):
        assert restored.raw == original.raw
        assert restored.combined == original.combined
        assert restored.anomalous == original.anomalous
        np.testing.assert_array_equal(restored.analysis.error_map, original.analysis.error_map)


def test_round_trip_keeps_every_part(tiny, loaded):
    original = tiny.detector

    assert loaded.config == original.config
    assert loaded.config.augment == original.config.augment
    assert loaded.thresholds == original.thresholds
    assert loaded.heatmap_scale == original.heatmap_scale
    assert loaded.history == original.history
    assert loaded.fingerprint == original.fingerprint
    assert set(loaded.calibration) == set(original.calibration)
    for name, scores in original.calibration.items():
        np.testing.assert_array_equal(loaded.calibration[name], scores)
    torch.testing.assert_close(loaded.stats.mean, original.stats.mean, rtol=0, atol=0)
    torch.testing.assert_close(loaded.stats.precision, original.stats.precision, rtol=0, atol=0)
    assert loaded.metadata["library_version"] == davae.__version__
    assert loaded.metadata["train_count"] == original.metadata["train_count"]
    assert not loaded.model.training


def test_bundle_file_loads_with_weights_only(tiny_bundle, tiny):
    data = torch.load(tiny_bundle, weights_only=True)

    assert data["format"] == BUNDLE_FORMAT
    assert data["format_version"] == BUNDLE_VERSION
    assert data["library_version"] == davae.__version__
    assert data["config"] == tiny.detector.config.to_dict()
    assert data["config"]["augment"]["iterations"] == tiny.detector.config.augment.iterations
    assert set(data["calibration"]) == {
        "recon_mean",
        "recon_max",
        "latent_euclidean",
        "latent_mahalanobis",
    }
    assert len(data["history"]) == len(tiny.detector.history)


def test_save_returns_file_sha256(tiny, tmp_path):
    path = tmp_path / "models" / "m.pt"
    digest = save_bundle(tiny.detector, path)

    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]


def test_fingerprint_stored(tiny, tmp_path):
    fingerprinted = dataclasses.replace(tiny.detector, fingerprint={"image_count": 24})
    save_bundle(fingerprinted, tmp_path / "f.pt")

    assert load_bundle(tmp_path / "f.pt").fingerprint == {"image_count": 24}


def test_flipped_weight_byte_rejected(tiny_bundle, tmp_path):
    data = bytearray(tiny_bundle.read_bytes())
    start, size = member_data_offset(bytes(data), "data/0")
    data[start + size // 2] ^= 0xFF
    (tmp_path / "t.pt").write_bytes(bytes(data))
    error = load_error(tmp_path / "t.pt")

    assert error.code == "bundle_invalid"
    assert "t.pt" in str(error)


def test_edited_format_marker_rejected(tiny_bundle, tmp_path):
    data = tiny_bundle.read_bytes()
    edited = data.replace(BUNDLE_FORMAT.encode(), b"x" + BUNDLE_FORMAT.encode()[1:], 1)
    (tmp_path / "t.pt").write_bytes(edited)

    assert edited != data
    assert load_error(tmp_path / "t.pt").code == "bundle_invalid"


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
def test_truncated_bundle_rejected(tiny_bundle, tmp_path, fraction):
    data = tiny_bundle.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: int(len(data) * fraction)])

    assert load_error(tmp_path / "cut.pt").code == "bundle_invalid"


def test_random_bytes_rejected(tmp_path):
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))

    assert load_error(tmp_path / "noise.pt").code == "bundle_invalid"


def test_ordinary_zip_rejected(tmp_path):
    (tmp_path / "images.pt").write_bytes(zip_bytes({"a.png": b"not a model"}))

    assert load_error(tmp_path / "images.pt").code == "bundle_invalid"


def test_missing_file_rejected(tmp_path):
    error = load_error(tmp_path / "absent.pt")

    assert error.code == "bundle_invalid"
    assert "absent.pt" in str(error)


def test_code_running_pickle_rejected(tmp_path):
    # Control: plain pickle does run the payload, so the test below can fail.
    control_marker = tmp_path / "control-ran"
    pickle.loads(pickle.dumps(CreatesMarkerFile(str(control_marker)))).close()
    assert control_marker.exists()

    marker = tmp_path / "bundle-ran"
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"format": CreatesMarkerFile(str(marker))}))
    error = load_error(tmp_path / "evil.pt")

    assert error.code == "bundle_invalid"
    assert not marker.exists()


def test_code_running_torch_archive_rejected(tmp_path):
    marker = tmp_path / "archive-ran"
    torch.save(
        {"format": BUNDLE_FORMAT, "payload": CreatesMarkerFile(str(marker))}, tmp_path / "e.pt"
    )
    error = load_error(tmp_path / "e.pt")

    assert error.code == "bundle_invalid"
    assert not marker.exists()


def test_foreign_dict_rejected(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    error = load_error(tmp_path / "other.pt")

    assert error.code == "bundle_invalid"
    assert error.params["detail"] == "wrong format marker"


def test_other_version_rejected(tiny, tmp_path):
    data = detector_to_dict(tiny.detector)
    data["format_version"] = BUNDLE_VERSION + 1
    torch.save(data, tmp_path / "future.pt")
    error = load_error(tmp_path / "future.pt")

    assert error.code == "bundle_version"
    assert error.params["found"] == BUNDLE_VERSION + 1


def test_missing_part_rejected(tiny, tmp_path):
    data = detector_to_dict(tiny.detector)
    del data["thresholds"]
    torch.save(data, tmp_path / "partial.pt")
    error = load_error(tmp_path / "partial.pt")

    assert error.code == "bundle_invalid"
    assert "thresholds" in str(error)


def test_weights_of_other_architecture_rejected(tiny, tmp_path):
    data = detector_to_dict(tiny.detector)
    data["config"] = DetectorConfig().to_dict()  # the default size, not the tiny one
    torch.save(data, tmp_path / "mismatch.pt")

    assert load_error(tmp_path / "mismatch.pt").code == "bundle_invalid"


def test_invalid_stored_setting_rejected(tiny, tmp_path):
    data = detector_to_dict(tiny.detector)
    data["config"]["vae"]["channels"] = 2
    torch.save(data, tmp_path / "bad-config.pt")

    error = load_error(tmp_path / "bad-config.pt")

    assert error.code == "bundle_invalid"
    assert "channels" in str(error)
