"""Tables at 100 columns, own rows before published ones, Offline query sizes never a batch, and
the report in a real browser (issue 23)."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgerob.analysis.compare import config_label, fleet_table, select_published
from edgerob.analysis.report import write_report
from edgerob.cli import app
from edgerob.cli import common
from edgerob.fleet.mlperf import ingest_mlperf
from tests.test_fleet import recorded_store

MLPERF = Path("/work/shared/samples/mlperf")
if not MLPERF.is_dir():
    MLPERF = Path(__file__).resolve().parents[1] / "shared" / "samples" / "mlperf"
CUT = re.compile(r"\d…|…\d|\d\.…")  # an ellipsis inside or beside a number


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """RECORDED rows of five devices (own) plus every shared MLPerf file (published)."""
    if not MLPERF.is_dir():
        pytest.skip("shared MLPerf samples not present")
    folder = tmp_path_factory.mktemp("mixed")
    mp = pytest.MonkeyPatch()
    mp.chdir(folder)
    store = recorded_store(folder)
    ingest_mlperf(MLPERF, store)
    yield folder, store
    mp.undo()


def test_own_rows_first_and_no_offline_batch(mixed):
    _, store = mixed
    rows = fleet_table(store, published="latest")
    sources = [r["source"] for r in rows]
    n_own = sources.count("measured")
    assert n_own == 20 and set(sources[:n_own]) == {"measured"}
    offline = [r for r in rows if r.get("scenario") == "Offline"]
    # (an Offline result inferred from a SingleStream log has 1 sample per query)
    assert offline and all(r["batch_size"] is None and r["samples_per_query"] >= 1
                           for r in offline)
    assert sum(r["samples_per_query"] > 1000 for r in offline) > len(offline) / 2
    assert not any(re.search(r"/b\d{4,}", config_label(r)) for r in rows)
    everything = fleet_table(store, published="all")
    assert len(fleet_table(store, published="none")) == n_own < len(rows) < len(everything)
    # latest: one row per device x benchmark x scenario x precision x setting, the newest
    key = lambda r: (r["target"], r["benchmark"], r["scenario"], r["precision"],
                     (r["configuration"] or "").split(", ")[0], r["accelerators"],
                     r["n_accelerators"])
    latest = [r for r in rows if r["source"] != "measured"]
    assert len({key(r) for r in latest}) == len(latest)
    for r in latest:
        same = [o for o in everything if o["source"] != "measured" and key(o) == key(r)
                and "Triton" not in (o["configuration"] or "") and "MIG" not in (
                    o["configuration"] or "")]
        if same and "Triton" not in (r["configuration"] or ""):
            assert r["mlperf_version"] == max((o["mlperf_version"] for o in same),
                                              key=lambda v: tuple(map(int, re.findall(r"\d+", v))))
    with pytest.raises(Exception, match="--published must be one of"):
        select_published(rows, "newest")


@pytest.mark.parametrize("args", [["compare"], ["cost"], ["cost", "--candidate", "l4"],
                                  ["results"], ["predict", "-t", "l4", "--mlperf", "resnet50",
                                                "--scenario", "Offline"]])
def test_default_tables_fit_100_columns(mixed, monkeypatch, args):
    folder, _ = mixed
    monkeypatch.setattr(common.out, "width", 100)
    monkeypatch.setattr(common.err, "width", 100)
    r = CliRunner().invoke(app, [*args, "--store", f"sqlite:///{folder}/recorded.db"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(len(l) for l in lines) <= 100
    assert not [l for l in lines if CUT.search(l)]
    assert "…" not in r.stdout
    if args[0] in ("compare", "cost", "results"):
        assert "24420000" not in r.stdout and "2.44e+07" not in r.stdout
        assert "capital" not in r.stdout


def test_plots_written_and_bad_suffix_is_a_user_error(mixed, tmp_path):
    folder, _ = mixed
    url = f"sqlite:///{folder}/recorded.db"
    runner = CliRunner()
    r = runner.invoke(app, ["compare", "--store", url, "--plot", str(tmp_path / "b.png")])
    assert r.exit_code == 0 and (tmp_path / "b.png").stat().st_size > 10_000
    r = runner.invoke(app, ["compare", "--store", url, "--plot", str(tmp_path / "b.txt")])
    assert r.exit_code == 2 and not (tmp_path / "b.txt").exists()


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if Path("/usr/bin/chromium").exists() else None)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install "
                                             "chromium): the report is not rendered in a browser")
def test_report_in_chromium_own_first_images_load(mixed, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from render_report import browser_check, screenshot

    _, store = mixed
    path = write_report(store, tmp_path / "report.html", aft=False)
    text = path.read_text()
    assert "<script" not in text
    # the first table holds own rows only; published rows are folded in <details>
    first = text[text.index("id='own'"):text.index("id='published'")]
    assert "MLPerf v" not in first.split("</table>")[0]
    assert text.index("id='published'") < text.index("<details><summary>", text.index(
        "id='published'")) < text.index("id='published-table'")
    page = browser_check(path)
    assert page["sections"][:2] == ["own", "published"]
    assert len(page["images"]) >= 3 and all(w > 0 for w in page["images"])
    assert screenshot(path, tmp_path / "shot.png").stat().st_size > 10_000


def test_pictures_only_where_there_is_something_to_draw():
    from edgerob.analysis.plots import power_mode_figure, prediction_figure

    rows = [{"target": "t", "precision": "fp16", "batch_size": b, "power_mode": m,
             "latency_p50_ms": 1.0 * b, "energy_per_inference_j": 0.01 * b}
            for m in ("15W", "MAXN") for b in (1, 8)]
    fig = power_mode_figure(rows)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["15W", "MAXN"]
    assert power_mode_figure([{**r, "power_mode": None} for r in rows]) is None
    pred = [{"metric": "throughput_sps", "predicted": 10.0, "interval": [8.0, 12.0],
             "measured": 11.0}, {"metric": "throughput_sps", "predicted": 5.0,
                                 "interval": None, "measured": None}]
    fig = prediction_figure(pred)
    assert fig.axes[0].get_xscale() == "log" and "samples/s" in fig.axes[0].get_xlabel()
    assert prediction_figure(pred[1:]) is None
