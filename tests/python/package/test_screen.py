"""dermal.screen on a Dask LocalCluster of 2 worker processes, with the demo
model and the library from the build in $DERMAL_BUILD_DIR: rows equal to
dermal-classify's, a killed worker's photos redone, an interrupted run
resumed, bad photos as rows with their status; every photo exactly once."""
import csv
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PACKAGE_DIR = os.path.join(ROOT, "capi", "python")
BUILD_DIR = os.environ.get("DERMAL_BUILD_DIR", "")
LIBRARY = os.path.join(BUILD_DIR, "capi", "libdermal_c.so")
CLI = os.path.join(BUILD_DIR, "examples", "dermal-classify")
DEMO_MODEL = os.path.join(ROOT, "examples", "data", "demo-model.pt")
BAD_INPUTS = os.path.join(ROOT, "tests", "fixtures", "bad_inputs")
PHOTO_COUNT = 120


@pytest.fixture(scope="module")
def screen(dermal):
    """dermal.screen bound to the build's library; fails (never skips) without the CLI to compare with."""
    if not os.path.isfile(CLI):
        pytest.fail(f"{CLI} is missing; build first: cmake -S . -B build && cmake --build build -j2", pytrace=False)
    from dermal import screen as module
    return module


@pytest.fixture(scope="module")
def client(screen):
    """A client of a LocalCluster of 2 worker processes, 1 thread each (what the command line starts)."""
    import distributed
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of generated JPEG lesion photos (and nothing else)."""
    folder = tmp_path_factory.mktemp("photos")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "lesions.py"), "--seed", "14", "--count",
                    str(PHOTO_COUNT), "--width", "160", "--height", "120", "--format", "jpg", "--out", str(folder)],
                   check=True)
    for path in glob.glob(str(folder / "*_mask.png")) + [str(folder / "labels.csv")]:
        os.remove(path)
    return str(folder)


@pytest.fixture(scope="module")
def expected(photos):
    """dermal-classify --json --top-k 3 of every photo: path -> [(label, probability)]."""
    paths = sorted(glob.glob(os.path.join(photos, "*.jpg")))
    assert len(paths) == PHOTO_COUNT
    output = subprocess.run([CLI, "--json", "--top-k", "3", "--model", DEMO_MODEL] + paths,
                            check=True, capture_output=True, text=True).stdout
    return {entry["image"]: [(score["label"], score["probability"]) for score in entry["top"]]
            for entry in json.loads(output)}


def read_rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def assert_matches_cli(rows, expected):
    """Every expected photo exactly once, status ok, labels equal and probabilities within 1e-6 of the CLI's."""
    files = [row["file"] for row in rows]
    assert sorted(files) == sorted(expected), "photos lost or duplicated"
    for row in rows:
        assert row["status"] == "ok", row
        assert row["heatmap_flat"] in ("true", "false")
        for rank, (label, probability) in enumerate(expected[row["file"]], start=1):
            assert row[f"label_{rank}"] == label
            assert float(row[f"probability_{rank}"]) == pytest.approx(probability, abs=1e-6)


def test_rows_equal_the_cli_and_overlays_are_written(screen, client, photos, expected, tmp_path):
    out, overlays = str(tmp_path / "results.csv"), str(tmp_path / "overlays")
    summary = screen.screen(client, [photos], out, DEMO_MODEL, top_k=3, batch_size=8, overlays=overlays)
    assert (summary.screened, summary.failed, summary.skipped) == (PHOTO_COUNT, 0, 0)
    rows = read_rows(out)
    assert list(rows[0]) == screen.columns(3)
    assert_matches_cli(rows, expected)
    # The overlay of one photo is the CLI's, byte for byte, and so is the flat flag.
    row = rows[0]
    cli_overlay = str(tmp_path / "cli-overlay.jpg")
    output = subprocess.run([CLI, "--json", "--model", DEMO_MODEL, "--heatmap", cli_overlay, row["file"]],
                            check=True, capture_output=True, text=True).stdout
    assert row["heatmap_flat"] == str(json.loads(output)[0]["heatmap"]["flat"]).lower()
    assert row["overlay"] == os.path.join(overlays, os.path.basename(row["file"]) + ".gradcam.jpg")
    with open(row["overlay"], "rb") as ours, open(cli_overlay, "rb") as theirs:
        assert ours.read() == theirs.read()
    assert all(os.path.isfile(row["overlay"]) for row in rows)
    assert len(os.listdir(overlays)) == PHOTO_COUNT  # no temporary files left behind


def test_a_killed_workers_photos_are_redone(screen, client, photos, expected, tmp_path):
    out = str(tmp_path / "results.csv")
    pids = client.run(os.getpid)
    summary = {}
    run = threading.Thread(target=lambda: summary.update(
        result=screen.screen(client, [photos], out, DEMO_MODEL, batch_size=2, progress=False)))
    run.start()
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and run.is_alive() and time.monotonic() < deadline:
        busy = [address for address, keys in client.processing().items() if keys]
        if busy and os.path.exists(out) and len(read_rows(out)) > 0:
            victim = busy[0]
            written_before_kill = len(read_rows(out))
            os.kill(pids[victim], signal.SIGKILL)
        time.sleep(0.005)
    run.join(180)
    assert victim is not None, "the run ended before a worker could be killed mid-run"
    assert written_before_kill < PHOTO_COUNT
    assert summary["result"].screened == PHOTO_COUNT
    assert_matches_cli(read_rows(out), expected)
    client.wait_for_workers(2, timeout=60)
    assert pids[victim] not in client.run(os.getpid).values()  # the nanny started a new process


def test_two_runs_share_a_cluster(screen, client, photos, expected, tmp_path):
    """Each run keeps its own model plugin: neither replaces nor removes the other's."""
    outs = [str(tmp_path / "first.csv"), str(tmp_path / "second.csv")]
    runs = [threading.Thread(target=screen.screen, args=(client, [photos], out, DEMO_MODEL),
                             kwargs=dict(batch_size=2, progress=False)) for out in outs]
    runs[0].start()
    while not (os.path.exists(outs[0]) and len(read_rows(outs[0])) > 0) and runs[0].is_alive():
        time.sleep(0.005)
    runs[1].start()
    for run in runs:
        run.join(180)
    for out in outs:
        assert_matches_cli(read_rows(out), expected)


def test_an_interrupted_command_line_run_resumes(photos, expected, tmp_path):
    out = str(tmp_path / "results.csv")
    environment = dict(os.environ, DERMAL_LIBRARY=LIBRARY, PYTHONPATH=PACKAGE_DIR)
    command = [sys.executable, "-m", "dermal.screen", photos, "--out", out, "--workers", "2", "--batch-size", "2"]
    # Its own session, so that killing it takes its worker processes along, as a crash would.
    first = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None and \
            not (os.path.exists(out) and len(read_rows(out)) >= 10):
        time.sleep(0.005)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    interrupted = len(read_rows(out))
    assert 10 <= interrupted < PHOTO_COUNT, f"{interrupted} rows: the first run was not interrupted mid-run"
    second = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"already in {out}" in second.stderr
    assert_matches_cli(read_rows(out), expected)


def test_a_row_cut_short_is_dropped_and_redone(screen, client, photos, expected, tmp_path):
    out = str(tmp_path / "results.csv")
    some = sorted(expected)[:5]
    screen.screen(client, some[:3], out, DEMO_MODEL, progress=False)
    with open(out, "rb") as file:
        text = file.read()
    with open(out, "wb") as file:
        file.write(text[:-20])  # the third row loses its end, as when a run is killed mid-write
    summary = screen.screen(client, some, out, DEMO_MODEL, progress=False)
    assert (summary.screened, summary.skipped) == (3, 2)
    assert_matches_cli(read_rows(out), {path: expected[path] for path in some})


def test_bad_photos_become_rows_with_their_status(screen, client, tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    statuses = {}
    with open(os.path.join(BAD_INPUTS, "expected.txt")) as listing:
        for line in listing:
            name, status = line.split()[:2]
            shutil.copy(os.path.join(BAD_INPUTS, name), folder / name)
            statuses[str(folder / name)] = status
    out = str(tmp_path / "results.csv")
    summary = screen.screen(client, [str(folder)], out, DEMO_MODEL, batch_size=4, progress=False)
    rows = read_rows(out)
    assert {row["file"]: row["status"] for row in rows} == statuses
    assert len(rows) == len(statuses)
    assert summary.failed == sum(status != "ok" for status in statuses.values()) > 0
    for row in rows:
        assert (row["error_message"] != "") == (row["status"] != "ok")
        assert (row["label_1"] != "") == (row["status"] == "ok")


def test_an_unreadable_file_is_an_io_row(screen, client, photos, tmp_path):
    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copy(sorted(glob.glob(os.path.join(photos, "*.jpg")))[0], folder / "photo.jpg")
    os.symlink(str(tmp_path / "deleted.jpg"), folder / "broken-link.jpg")
    out = str(tmp_path / "results.csv")
    screen.screen(client, [str(folder)], out, DEMO_MODEL, progress=False)
    statuses = {os.path.basename(row["file"]): (row["status"], row["error_message"]) for row in read_rows(out)}
    assert statuses["photo.jpg"] == ("ok", "")
    assert statuses["broken-link.jpg"][0] == "io"
    assert "broken-link.jpg" in statuses["broken-link.jpg"][1]


def test_a_results_file_with_other_columns_is_refused(screen, tmp_path):
    out = tmp_path / "results.csv"
    out.write_text(",".join(screen.columns(3)) + "\n")
    with pytest.raises(screen.ScreenError, match="another --top-k"):
        screen.screen(None, [str(tmp_path)], str(out), DEMO_MODEL, top_k=2)
    assert out.read_text() == ",".join(screen.columns(3)) + "\n"


def test_dermal_imports_without_dask(screen):
    """Dask is optional: without it, dermal imports and dermal.screen says what to install."""
    program = ("import sys; sys.modules['distributed'] = None\n"
               "import dermal\n"
               "try:\n    import dermal.screen\nexcept ImportError as error:\n    print(error)\n")
    output = subprocess.run([sys.executable, "-c", program], env=dict(os.environ, PYTHONPATH=PACKAGE_DIR),
                            check=True, capture_output=True, text=True).stdout
    assert "apt-get install python3-distributed" in output
