"""End to end in a real browser: `streamlit run app.py` driven by Playwright in Debian's chromium.

One server with a temporary DAVAE_HOME serves both language runs. The English
run trains a model on a few generated images, scores a batch with a broken
file, moves a threshold and changes a label on the Review page, and
downloads the CSV from the Export page. The Korean run opens a new browser
session in Korean, scores a batch with that model and checks the Korean
texts and the translated rejection. A second server with a 1 MB upload limit
checks what an oversized upload shows.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags chromium tries to reach Google's
# servers, and those connections are refused here.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REVIEWER = "e2e tester"
REVIEWER_MISSING = "Enter your name under Reviewer in the sidebar first."
REVIEWER_MISSING_KO = "먼저 사이드바의 '검토자'에 이름을 입력하세요."
JOB_TIMEOUT_MS = 180_000

if not CHROMIUM.exists():
    pytest.skip(
        "needs Debian's chromium at /usr/bin/chromium (bash scripts/test.sh installs it)",
        allow_module_level=True,
    )

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

# Two cores are shared with the worker thread, so a rerun can take seconds.
expect.set_options(timeout=30_000)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_pngs(folder: Path, count: int, seed: int) -> list[Path]:
    """Write smooth generated textures, 40 x 48 pixels, as PNG files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[0:40, 0:48] / 48
    for index in range(count):
        wave = np.sin(2 * np.pi * (xx * rng.uniform(1, 2) + yy * rng.uniform(0, 1)))
        pixels = 0.4 + 0.2 * wave + 0.03 * rng.standard_normal(wave.shape)
        path = folder / f"part_{index:02d}.png"
        Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@contextmanager
def running_server(home: Path, *options: str) -> Iterator[str]:
    """Run `streamlit run app.py` on 127.0.0.1 with ``home`` as DAVAE_HOME; yield its URL."""
    port = free_port()
    env = {
        **os.environ,
        "DAVAE_HOME": str(home),
        "OMP_NUM_THREADS": "1",  # the worker thread trains; leave the other core free
    }
    env.pop("DAVAE_DATABASE_URL", None)
    env.pop("DAVAE_LANGUAGE", None)
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        *options,
    ]  # fmt: skip
    with open(home / "server.log", "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(url, process, home)
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


def wait_until_healthy(url: str, process: subprocess.Popen, home: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"streamlit did not start; see {home / 'server.log'}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server both language runs share, so the Korean run can use the trained model."""
    with running_server(tmp_path_factory.mktemp("davae_home")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def open_app(page: Page, url: str, path: str = "") -> None:
    page.goto(f"{url}/{path}")
    expect(page.get_by_test_id("stSidebar")).to_be_visible()


def wait_idle(page: Page) -> None:
    """Wait until the script run a widget started is over, so the page is not redrawn."""
    page.wait_for_timeout(300)  # the rerun starts a moment after the interaction
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)


def set_reviewer(page: Page, label: str, missing_warning: str) -> None:
    """Type the reviewer's name and wait until the page no longer asks for it."""
    box = page.get_by_test_id("stSidebar").get_by_label(label, exact=True)
    box.fill(REVIEWER)
    box.press("Enter")
    expect(page.get_by_text(missing_warning)).to_have_count(0)
    wait_idle(page)


def upload(page: Page, files: list[Path]) -> None:
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([str(f) for f in files])
    expect(page.get_by_test_id("stFileChip")).to_have_count(len(files), timeout=30_000)
    wait_idle(page)


def choose(page: Page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def expect_metric(page: Page, label: str, value: str, timeout: float = 30_000) -> None:
    """Wait until a metric with this label shows this value.

    While a fragment reruns, Streamlit briefly shows the old and the new
    elements together, so the check looks for any matching metric.
    """
    shown = page.get_by_test_id("stMetricValue").get_by_text(value, exact=True)
    metric = page.get_by_test_id("stMetric").filter(has_text=label).filter(has=shown)
    expect(metric.first).to_be_visible(timeout=timeout)


def test_train_and_score_in_english(server: str, page: Page, tmp_path: Path) -> None:
    normals = write_pngs(tmp_path / "normals", 16, seed=0)
    open_app(page, server)
    set_reviewer(page, "Reviewer", REVIEWER_MISSING)
    expect(page.get_by_role("heading", name="Train", exact=True)).to_be_visible()

    upload(page, normals)
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("1")
    epochs.press("Enter")
    choose(page, "Image size (pixels)", "32")
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text("Registered parts version 1.")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(page.get_by_text("Held-out normal images and the calibrated thresholds")).to_be_visible()

    # The job's end reruns the whole page; a click during that rerun is lost.
    wait_idle(page)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Score").click()
    expect(page.get_by_role("heading", name="Score", exact=True)).to_be_visible()
    batch = write_pngs(tmp_path / "batch", 4, seed=1)
    broken = tmp_path / "batch" / "broken.png"
    broken.write_bytes(b"not a png")
    upload(page, [*batch, broken])
    page.get_by_role("button", name="Start scoring").click()
    expect(page.get_by_role("heading", name="Batch 1:")).to_be_visible()
    expect(page.get_by_text("done · started by e2e tester")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect_metric(page, "Scored", "4")
    expect_metric(page, "Rejected", "1")
    expect(page.get_by_text("Files not used: 1 rejected, 0 ignored.")).to_be_visible()

    # A reload is a new session: the reviewer is asked again, the batch is still there.
    page.reload()
    expect(page.get_by_role("heading", name="Score", exact=True)).to_be_visible()
    expect_metric(page, "Scored", "4")

    set_reviewer(page, "Reviewer", REVIEWER_MISSING)
    review_and_export(page)


def review_and_export(page: Page) -> None:
    """Move a threshold and change a label on Review, then check the CSV from Export."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Review").click()
    expect(page.get_by_role("heading", name="Review", exact=True)).to_be_visible()
    # The first slider is the reconstruction threshold; at its lowest every image is anomalous.
    threshold = page.get_by_test_id("stSlider").first.get_by_role("slider")
    threshold.focus()
    threshold.press("Home")
    wait_idle(page)
    expect_metric(page, "Anomalous", "4")
    expect_metric(page, "Normal", "0")

    page.get_by_role("button", name="Change to normal").first.click()
    expect(page.get_by_text("saved as normal.")).to_be_visible()
    wait_idle(page)
    expect_metric(page, "Reviewed by a person", "1")
    expect_metric(page, "Normal", "1")

    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Export").click()
    expect(page.get_by_role("heading", name="Export", exact=True)).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    path = download.value.path()
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8-sig"))))
    assert download.value.suggested_filename.endswith(".csv")
    assert sorted(row["status"] for row in rows) == [
        "rejected",
        "scored",
        "scored",
        "scored",
        "scored",
    ]
    reviewed = [row for row in rows if row["human_label"]]
    assert [(row["human_label"], row["final_label"], row["reviewer"]) for row in reviewed] == [
        ("normal", "normal", REVIEWER)
    ]
    assert [row["file_name"] for row in rows if row["status"] == "rejected"] == ["broken.png"]


# Draws two Hangul syllables and an unassigned code point on a canvas in the
# page's font. Without a Korean font all three come out as the same empty box.
HANGUL_GLYPHS_DIFFER = """
() => {
  const font = getComputedStyle(document.querySelector("h1")).fontFamily;
  const draw = (text) => {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 64;
    const context = canvas.getContext("2d");
    context.font = `48px ${font}`;
    context.fillText(text, 4, 52);
    return context.getImageData(0, 0, 64, 64).data.join(",");
  };
  const missing = draw("\uffff");
  return draw("가") !== draw("나") && draw("가") !== missing;
}
"""


def test_korean_session(server: str, page: Page, tmp_path: Path) -> None:
    open_app(page, server, "score")
    page.get_by_test_id("stSidebar").get_by_label("Language", exact=True).click()
    page.get_by_role("option", name="한국어").click()
    expect(page.get_by_role("heading", name="검사", exact=True)).to_be_visible()
    set_reviewer(page, "검토자", REVIEWER_MISSING_KO)
    assert page.evaluate(HANGUL_GLYPHS_DIFFER), (
        "Korean text renders as empty boxes: install a Korean font (fonts-nanum)"
    )
    nav = page.get_by_test_id("stSidebarNav")
    for title in ("학습", "검사", "검토", "내보내기", "모델", "비교 평가", "기록"):
        expect(nav.get_by_role("link", name=title, exact=True)).to_be_visible()

    batch = write_pngs(tmp_path / "배치", 3, seed=2)
    notes = tmp_path / "배치" / "메모.txt"
    notes.write_text("텍스트", encoding="utf-8")
    upload(page, [*batch, notes])
    page.get_by_role("button", name="검사 시작").click()
    # Batch 1 is the English run's; the page switches to the new batch 2.
    expect(page.get_by_role("heading", name="2번 배치:")).to_be_visible()
    expect_metric(page, "검사 완료", "3", timeout=JOB_TIMEOUT_MS)
    expect(page.get_by_text("완료 · 시작: e2e tester")).to_be_visible()
    expect(page.get_by_text("사용하지 않은 파일: 제외 1개, 건너뜀 0개")).to_be_visible()

    # The CSV for people: Korean headers, machine-readable values, and the
    # file names exactly as they were uploaded.
    wait_idle(page)
    nav.get_by_role("link", name="내보내기", exact=True).click()
    expect(page.get_by_role("heading", name="내보내기", exact=True)).to_be_visible()
    choose(page, "열 제목", "한국어(사람이 읽는 용도)")
    wait_idle(page)
    with page.expect_download() as download:
        page.get_by_role("button", name="CSV 내려받기").click()
    data = Path(download.value.path()).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")  # the UTF-8 BOM for Excel, on by default
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert sorted(row["파일명"] for row in rows) == sorted([*(p.name for p in batch), "메모.txt"])
    assert [row["상태"] for row in rows if row["파일명"] == "메모.txt"] == ["rejected"]
    scored = [row for row in rows if row["상태"] == "scored"]
    assert len(scored) == 3
    assert {row["최종 라벨"] for row in scored} <= {"normal", "anomalous"}

    # The language survives page switches.
    wait_idle(page)
    nav.get_by_role("link", name="기록", exact=True).click()
    expect(page.get_by_role("heading", name="감사 기록")).to_be_visible()


def test_upload_over_limit_states_limit(
    tmp_path_factory: pytest.TempPathFactory, page: Page, tmp_path: Path
) -> None:
    large = tmp_path / "large.png"
    large.write_bytes(os.urandom(2 * 1024 * 1024))
    home = tmp_path_factory.mktemp("small_limit_home")
    with running_server(home, "--server.maxUploadSize", "1") as url:
        open_app(page, url)
        set_reviewer(page, "Reviewer", REVIEWER_MISSING)
        expect(page.get_by_text("Each file can be up to 1.0 MB")).to_be_visible()
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(large))
        # The browser keeps the file out of the upload, names the limit, and
        # the page has nothing to start from.
        chip = page.get_by_test_id("stFileChip")
        expect(chip).to_contain_text("large.png")
        expect(chip).to_contain_text("1.0MB or smaller")
        expect(page.get_by_text("Add images of normal parts to start training.")).to_be_visible()
        expect(page.get_by_role("button", name="Start training")).to_be_disabled()
