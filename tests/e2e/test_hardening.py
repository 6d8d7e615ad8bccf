"""Hostile and edge inputs (issue classes 1-9): each gets a located one-line error, a
non-zero exit, no panic and nothing published, and strata never changes a source value
it passes through. Expected values come from pyarrow reading the files strata was given,
never from strata itself."""
from __future__ import annotations

import json
import math
import os
import pathlib
import random
import stat
import struct
import subprocess
import threading
import http.server
import functools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_curated, run_strata

SPEC = """
name = "edge"
[source]
url = "{url}"
{source_extra}
[label]
column = "y"
positive = {positive}
[groups]
attributes = ["g"]
min_group_rows = 1
[curate]
strategy = "reweigh"
seed = 7
[publish]
shard_rows = 50
{extra}
"""


def write_spec(dirpath: pathlib.Path, url: str, *, weight: str | None = "w", ident: str | None = "id",
               positive: str = '"yes"', extra: str = "") -> pathlib.Path:
    source_extra = ""
    if weight:
        source_extra += f'weight_column = "{weight}"\n'
    if ident:
        source_extra += f'id_column = "{ident}"\n'
    p = dirpath / "edge.toml"
    p.write_text(SPEC.format(url=url, source_extra=source_extra, positive=positive, extra=extra))
    return p


def table(n: int, seed: int = 1, **overrides) -> pa.Table:
    rng = random.Random(seed)
    cols = {
        "id": pa.array(range(n), pa.int64()),
        "g": pa.array([rng.choice(["a", "b", "c"]) for _ in range(n)], pa.string()),
        "y": pa.array([rng.choice(["yes", "no"]) for _ in range(n)], pa.string()),
        "w": pa.array([1.0] * n, pa.float64()),
        "x": pa.array([rng.random() for _ in range(n)], pa.float64()),
    }
    for k, v in overrides.items():
        cols[k] = v if isinstance(v, pa.Array) else pa.array(v)
    return pa.table(cols)


def assert_refused(proc, *needles: str, out: pathlib.Path | None = None, code: int = 3):
    """Exit `code`, one located error line, no panic, nothing on stdout, nothing published."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "panicked" not in proc.stderr, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])
    assert proc.stdout == "", proc.stdout
    if out is not None:
        assert not (out / "_latest").exists(), "a refused run moved _latest"
        assert not list(out.glob("runs/*/manifest.json")), "a refused run left a manifest"
    return errors[0]


def curate(spec: pathlib.Path, out: pathlib.Path, *args, check=False, env=None):
    return run_strata("curate", str(spec), "--out", str(out), "--format", "json", *args, check=check, env=env)


# --- 1. source values never change: NaN beside min = max statistics ------------------

def nan_table(n=200):
    """Every float column is constant but for one NaN (min = max in the statistics) and
    one -0.0 where the constant is 0.0 elsewhere."""
    t = table(n)
    x = [2.5] * n
    x[17] = float("nan")
    z = [0.0] * n
    z[5] = -0.0
    fid = [float(i) for i in range(n)]
    return t.set_column(t.schema.get_field_index("x"), "x", pa.array(x, pa.float64())).append_column(
        "z", pa.array(z, pa.float64())).append_column("near_label", pa.array(x, pa.float32())).append_column(
        "fid", pa.array(fid, pa.float64()))


@pytest.mark.parametrize("statistics", [True, False])
@pytest.mark.parametrize("files", [1, 3])
def test_nan_beside_constant_statistics_survives_curation(tmp_path, statistics, files):
    t = nan_table()
    src = tmp_path / "src"
    src.mkdir()
    step = math.ceil(t.num_rows / files)
    for i in range(files):
        # every file has the NaN-bearing constant columns; the first holds the NaN
        pq.write_table(t.slice(i * step, step), src / f"part-{i}.parquet", write_statistics=statistics)
    if statistics:
        md = pq.ParquetFile(src / "part-0.parquet").metadata.row_group(0)
        xs = md.column(t.schema.get_field_index("x")).statistics
        assert xs.min == xs.max == 2.5, "the writer must leave NaN out of min/max for this test"
    spec = write_spec(tmp_path, f"{src}/")
    out = tmp_path / "out"
    curate(spec, out, check=True)
    got = read_curated(out).sort_by("id")
    assert got.num_rows == t.num_rows
    for col in ["x", "z", "near_label", "fid", "g", "y", "w"]:
        want = t.column(col).to_pylist()
        have = got.column(col).to_pylist()
        for i, (a, b) in enumerate(zip(want, have)):
            if isinstance(a, float) and math.isnan(a):
                assert isinstance(b, float) and math.isnan(b), (col, i, b)
            else:
                assert struct.pack("<d", a) == struct.pack("<d", b) if isinstance(a, float) else a == b, (col, i, a, b)
    # a check sees the NaN too
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "no_nan.sql").write_text("-- name: no_nan\n-- stage: source\nSELECT * FROM source WHERE isnan(x)\n")
    spec2 = write_spec(tmp_path, f"{src}/", extra=f'[checks]\ndirs = ["{sql}"]\n')
    proc = run_strata("check", str(spec2), "--json", str(tmp_path / "c.json"), check=False)
    assert proc.returncode == 1, proc.stderr
    result = json.loads((tmp_path / "c.json").read_text())["checks"][0]
    assert result["failing_rows"] == 1, result


def test_nan_weight_beside_constant_statistics_is_refused(tmp_path):
    w = [1.0] * 100
    w[3] = float("nan")
    src = tmp_path / "src.parquet"
    pq.write_table(table(100, w=pa.array(w, pa.float64())), src, write_statistics=True)
    out = tmp_path / "out"
    proc = curate(write_spec(tmp_path, str(src)), out)
    assert_refused(proc, "source.weight_column", "1 rows", "unusable weight", out=out)


def test_every_source_column_survives_curation_byte_for_byte(tmp_path):
    """The property: random edge values in every type, joined back on the id."""
    rng = random.Random(11)
    n = 300
    specials = [float("nan"), -0.0, 0.0, float("inf"), float("-inf"), 1e308, -1e-308, 5e-324]
    def f():
        return rng.choice(specials) if rng.random() < 0.3 else rng.uniform(-1e6, 1e6)
    t = table(n,
              f64=pa.array([None if rng.random() < 0.1 else f() for _ in range(n)], pa.float64()),
              f32=pa.array([None if rng.random() < 0.1 else f() for _ in range(n)], pa.float32()),
              i64=pa.array([rng.choice([-(2**63), 2**63 - 1, 0, -1, rng.randrange(-10**12, 10**12)]) for _ in range(n)], pa.int64()),
              s=pa.array([rng.choice(["", "é", "a\x00b", "\t", "x" * 300, None]) for _ in range(n)]),
              b=pa.array([rng.choice([True, False, None]) for _ in range(n)]),
              d=pa.array([rng.randrange(-10**5, 10**5) for _ in range(n)], pa.date32()))
    src = tmp_path / "src.parquet"
    pq.write_table(t, src, row_group_size=37)
    out = tmp_path / "out"
    curate(write_spec(tmp_path, str(src)), out, "--target-partitions", "3", check=True)
    got = read_curated(out).sort_by("id")
    for col in t.column_names:
        a, b = t.column(col), got.column(col)
        assert a.type == b.type, col
        if pa.types.is_floating(a.type):
            fmt = "<d" if a.type == pa.float64() else "<f"
            for x, y in zip(a.to_pylist(), b.to_pylist()):
                assert (x is None and y is None) or struct.pack(fmt, x) == struct.pack(fmt, y), (col, x, y)
        else:
            assert a.to_pylist() == b.to_pylist(), col


# --- 2. weights every stage can carry ---------------------------------------------------

@pytest.mark.parametrize("bad", [float("inf"), 1e300, 1e-11, -1.0, float("nan")])
@pytest.mark.parametrize("command", ["profile", "curate"])
def test_unusable_weights_are_refused_by_every_stage(tmp_path, bad, command):
    w = [1.0] * 60
    w[10] = bad
    src = tmp_path / "src.parquet"
    pq.write_table(table(60, w=pa.array(w, pa.float64())), src)
    spec = write_spec(tmp_path, str(src))
    out = tmp_path / "out"
    if command == "curate":
        proc = curate(spec, out)
    else:
        proc = run_strata("profile", str(spec), "--format", "json", check=False)
    assert_refused(proc, "source.weight_column", "unusable weight", "column `w`", out=out)


def test_tiny_weights_throughout_are_refused_not_skipped(tmp_path):
    src = tmp_path / "src.parquet"
    pq.write_table(table(60, w=pa.array([1e-11] * 60, pa.float64())), src)
    out = tmp_path / "out"
    assert_refused(curate(write_spec(tmp_path, str(src)), out), "60 rows", "unusable weight", out=out)


def test_small_and_large_usable_weights_go_through_every_stage(tmp_path):
    """The ends of the documented range: curate, verify, assign and check all read the run."""
    w = [1e-6, 1e15] * 30
    src = tmp_path / "src.parquet"
    t = table(60, w=pa.array(w, pa.float64()))
    pq.write_table(t, src)
    spec = write_spec(tmp_path, str(src))
    out = tmp_path / "out"
    summary = json.loads(curate(spec, out, check=True).stdout)
    assert all(s["weight_factor"] is not None for s in summary["strata"] if s["rows_before"]), summary
    run_strata("shards", "verify", str(out))
    run_strata("shards", "assign", str(out), "--world-size", "2", "--rank", "0")
    manifest = json.loads((out / json.loads((out / "_latest").read_text())["manifest"]).read_text())
    assert all(math.isfinite(s["weight_sum"]) for s in manifest["splits"])
    # Kamiran-Calders keeps the training weight total (closed form, from the source weights)
    train = read_curated(out).filter(pa.compute.equal(read_curated(out).column("split"), "train"))
    src_w = {r["id"]: r["w"] for r in t.to_pylist()}
    total_before = sum(src_w[i] for i in train.column("id").to_pylist())
    assert math.isclose(sum(train.column("sample_weight").to_pylist()), total_before, rel_tol=1e-9)


# --- 3. a named column missing from one file ---------------------------------------------

@pytest.mark.parametrize("column,key", [("g", "groups.attributes"), ("y", "label.column"),
                                        ("w", "source.weight_column"), ("id", "source.id_column"),
                                        ("x", "train.features")])
def test_named_column_missing_from_one_file(tmp_path, column, key):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(table(40, seed=1), src / "a.parquet")
    pq.write_table(table(40, seed=2).drop_columns([column]), src / "b.parquet")
    # a model input missing from a file would be read as nulls and imputed
    spec = write_spec(tmp_path, f"{src}/", extra='[train]\nfeatures = ["x"]')
    out = tmp_path / "out"
    for cmd in (["validate", str(spec)], ["profile", str(spec)]):
        assert_refused(run_strata(*cmd, check=False), key, f"column `{column}` is missing from file", "b.parquet")
    assert_refused(curate(spec, out), key, "b.parquet", out=out)


# --- 4. output paths that are not regular files -------------------------------------------

def test_outputs_write_through_links_fifos_and_devices(tmp_path):
    src = tmp_path / "src.parquet"
    pq.write_table(table(60), src)
    spec = write_spec(tmp_path, str(src))
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    run_strata("profile", str(spec), "--format", "json", "--out", str(link))
    assert link.is_symlink(), "the link was replaced by a file"
    assert json.loads(target.read_text())["total_rows"] == 60
    # a FIFO stays a FIFO, and its reader gets the profile
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("text", fifo.read_text()))
    reader.start()
    run_strata("profile", str(spec), "--format", "json", "--out", str(fifo))
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert json.loads(got["text"])["total_rows"] == 60
    # a full device: an error, and the device node is still a device
    if os.path.exists("/dev/full"):
        proc = run_strata("profile", str(spec), "--format", "json", "--out", "/dev/full", check=False)
        assert_refused(proc, "/dev/full")
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


# --- 5. absurd numbers ----------------------------------------------------------------------

@pytest.mark.parametrize("args,env", [
    (["--target-partitions", "18446744073709551615"], {}),
    (["--target-partitions", "10000000"], {}),
    (["--target-partitions", "0"], {}),
    (["--memory-limit", "0"], {}),
])
def test_absurd_counts_are_usage_errors(tmp_path, args, env):
    src = tmp_path / "src.parquet"
    pq.write_table(table(20), src)
    proc = run_strata("profile", str(write_spec(tmp_path, str(src))), *args, check=False, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "panicked" not in proc.stderr


@pytest.mark.parametrize("var,value", [("DATAFUSION_EXECUTION_TARGET_PARTITIONS", "18446744073709551615"),
                                       ("DATAFUSION_EXECUTION_TARGET_PARTITIONS", "10000000"),
                                       ("DATAFUSION_EXECUTION_BATCH_SIZE", "18446744073709551615")])
def test_absurd_engine_variables_are_errors(tmp_path, var, value):
    src = tmp_path / "src.parquet"
    pq.write_table(table(20), src)
    proc = run_strata("profile", str(write_spec(tmp_path, str(src))), check=False, env={var: value})
    assert_refused(proc, var)


def test_world_size_bounds(tmp_path):
    src = tmp_path / "src.parquet"
    pq.write_table(table(60), src)
    out = tmp_path / "out"
    curate(write_spec(tmp_path, str(src)), out, check=True)
    for n in ["18446744073709551615", "4000000000", "0"]:
        proc = run_strata("shards", "assign", str(out), "--world-size", n, "--rank", "0", check=False)
        assert proc.returncode == 2, proc.stderr
        assert "panicked" not in proc.stderr
    # the largest allowed world answers at once
    proc = run_strata("shards", "assign", str(out), "--world-size", "16777216", "--rank", "16777215")
    assert proc.stdout == ""


# --- 6. a check with no end ------------------------------------------------------------------

def test_a_check_past_its_time_limit_is_an_error_and_the_others_finish(tmp_path):
    src = tmp_path / "src.parquet"
    pq.write_table(table(3000), src)
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "endless.sql").write_text(
        "-- name: endless\n-- stage: source\n"
        "SELECT count(*) FROM source a, source b, source c, source d WHERE a.x + b.x + c.x + d.x < -1\n")
    (sql / "quick.sql").write_text("-- name: quick\n-- stage: source\nSELECT * FROM source WHERE g IS NULL\n")
    spec = write_spec(tmp_path, str(src), extra=f'[checks]\ndirs = ["{sql}"]\ntimeout_secs = 3\n')
    proc = run_strata("check", str(spec), "--json", str(tmp_path / "r.json"), check=False)
    assert proc.returncode == 3, proc.stderr
    results = {c["name"]: c for c in json.loads((tmp_path / "r.json").read_text())["checks"]}
    assert results["endless"]["status"] == "error"
    assert "timed out after 3 s" in results["endless"]["message"]
    assert results["quick"]["status"] == "pass"
    assert results["endless"]["duration_ms"] < 30_000
    # the flag overrides the spec
    proc = run_strata("check", str(spec), "--check-timeout", "1", "--json", str(tmp_path / "r2.json"), check=False)
    endless = [c for c in json.loads((tmp_path / "r2.json").read_text())["checks"] if c["name"] == "endless"][0]
    assert "timed out after 1 s" in endless["message"]


# --- 7. plain http:// sources ------------------------------------------------------------------

class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that answers byte ranges (object_store reads Parquet footers
    and row groups by range); the standard library's handler ignores them."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        rng = self.headers.get("Range")
        path = pathlib.Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        start, _, end = rng.removeprefix("bytes=").partition("-")
        if start == "":
            start, end = len(data) - int(end), len(data) - 1
        else:
            start, end = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
        body = data[start:end + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(RangeHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_plain_http_source_with_allow_http(tmp_path, http_server):
    root, base = http_server
    t = table(80)
    pq.write_table(t, root / "data.parquet")
    spec = write_spec(tmp_path, f"{base}/data.parquet")
    # refused by default, naming the setting
    assert_refused(run_strata("profile", str(spec), check=False), "allow_http")
    allowed = write_spec(tmp_path, f"{base}/data.parquet", extra="[storage.http]\nallow_http = true\n")
    profile = json.loads(run_strata("profile", str(allowed), "--format", "json").stdout)
    assert profile["total_rows"] == 80
    by_env = json.loads(run_strata("profile", str(spec), "--format", "json", env={"STRATA_ALLOW_HTTP": "true"}).stdout)
    assert by_env["total_rows"] == 80
    want = {g: sum(1 for v in t.column("g").to_pylist() if v == g) for g in "abc"}
    have = {grp["attributes"]["g"]: grp["rows"] for grp in profile["groups"]}
    assert have == want


# --- 8. nothing to curate ---------------------------------------------------------------------

@pytest.mark.parametrize("case", ["no rows", "no labels", "zero weights", "no positive"])
def test_nothing_to_curate_is_an_error_for_curate_and_a_warning_for_profile(tmp_path, case):
    n = 0 if case == "no rows" else 50
    t = table(n)
    if case == "no labels":
        t = t.set_column(t.schema.get_field_index("y"), "y", pa.array([None] * n, pa.string()))
    if case == "zero weights":
        t = t.set_column(t.schema.get_field_index("w"), "w", pa.array([0.0] * n, pa.float64()))
    if case == "no positive":
        t = t.set_column(t.schema.get_field_index("y"), "y", pa.array(["no"] * n))
    src = tmp_path / "src.parquet"
    pq.write_table(t, src)
    spec = write_spec(tmp_path, str(src))
    out = tmp_path / "out"
    needle = {"no rows": "no rows", "no labels": "null label", "zero weights": "weight 0",
              "no positive": "never appears"}[case]
    assert_refused(curate(spec, out), needle, out=out)
    if case != "no positive":  # the profile refuses an absent positive too
        proc = run_strata("profile", str(spec), "--format", "json")
        profile = json.loads(proc.stdout)
        assert profile["warnings"], profile
        assert "-0.0" not in proc.stdout


def test_no_negative_zero_in_any_json(tmp_path):
    """A split with no rows (test = 0.0 of a tiny source) sums to -0.0 in Rust."""
    src = tmp_path / "src.parquet"
    pq.write_table(table(30), src)
    spec = write_spec(tmp_path, str(src)).read_text().replace(
        "[publish]", "[curate.split]\ntrain = 0.9\nvalidation = 0.1\ntest = 0.0\n[publish]")
    p = tmp_path / "s.toml"
    p.write_text(spec)
    out = tmp_path / "out"
    proc = curate(p, out, check=True)
    assert "-0.0" not in proc.stdout and "-0," not in proc.stdout
    for f in out.rglob("*.json"):
        assert "-0.0" not in f.read_text(), f
    table_out = run_strata("curate", str(p), "--out", str(tmp_path / "out2")).stdout
    assert "-0.000000e0" not in table_out


# --- 9. a pointer or manifest that leads outside the root ---------------------------------------

def test_latest_and_manifest_paths_never_leave_the_root(tmp_path):
    src = tmp_path / "src.parquet"
    pq.write_table(table(60), src)
    out = tmp_path / "out"
    curate(write_spec(tmp_path, str(src)), out, check=True)
    latest = json.loads((out / "_latest").read_text())
    # a pointer naming another place
    (out / "_latest").write_text(json.dumps({**latest, "run_id": "../../elsewhere/runs/x"}))
    for cmd in (["shards", "verify", str(out)], ["shards", "assign", str(out), "--world-size", "1", "--rank", "0"]):
        assert_refused(run_strata(*cmd, check=False), "_latest", "not a run id")
    (out / "_latest").write_text(json.dumps(latest))
    # a manifest whose shard path climbs out
    mpath = out / latest["manifest"]
    m = json.loads(mpath.read_text())
    m["shards"][0]["path"] = "../../../etc/passwd"
    mpath.write_text(json.dumps(m))
    proc = run_strata("shards", "assign", str(out), "--world-size", "1", "--rank", "0", check=False)
    assert_refused(proc, "not a plain path")
    assert "/etc/passwd" not in proc.stdout


# --- 10. smaller -------------------------------------------------------------------------------

def test_smaller_messages(tmp_path):
    src = tmp_path / "src.parquet"
    pq.write_table(table(30), src)
    # a float label value says what is allowed
    spec = write_spec(tmp_path, str(src), positive="1.5")
    assert_refused(run_strata("validate", str(spec), check=False), "edge.toml:10:", "1.5", "a string, an integer or a boolean")
    # a glob that matches nothing names the pattern
    spec = write_spec(tmp_path, f"{tmp_path}/nothing-*.parquet")
    assert_refused(run_strata("validate", str(spec), check=False), "nothing-*.parquet")
    # a bad STRATA_LOG is an error
    spec = write_spec(tmp_path, str(src))
    proc = run_strata("validate", str(spec), check=False, env={"STRATA_LOG": "strata=notalevel[["})
    assert proc.returncode == 2 and "STRATA_LOG" in proc.stderr, proc.stderr
    # EXPLAIN is not a check
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "explain.sql").write_text("-- name: explain\n-- stage: source\nEXPLAIN SELECT * FROM source\n")
    spec = write_spec(tmp_path, str(src), extra=f'[checks]\ndirs = ["{sql}"]\n')
    proc = run_strata("check", str(spec), "--json", str(tmp_path / "r.json"), check=False)
    assert proc.returncode == 3
    assert "not EXPLAIN" in json.loads((tmp_path / "r.json").read_text())["checks"][0]["message"]
    # dirs = [] says what is wrong
    spec = write_spec(tmp_path, str(src), extra="[checks]\ndirs = []\n")
    assert_refused(run_strata("check", str(spec), check=False), "checks.dirs", "at least one folder")
    # control characters in group values are escaped in terminal tables
    t = table(30, g=pa.array(["a\x1b[31m", "b\nc"] * 15))
    pq.write_table(t, src)
    text = run_strata("profile", str(write_spec(tmp_path, str(src)))).stdout
    assert "\x1b" not in text and "a\\u{1b}[31m" in text and "b\\nc" in text
    # files whose schemas cannot be merged: the file is named
    d = tmp_path / "mixed"
    d.mkdir()
    pq.write_table(table(20), d / "a.parquet")
    pq.write_table(table(20).set_column(4, "x", pa.array(["s"] * 20)), d / "b.parquet")
    assert_refused(run_strata("validate", str(write_spec(tmp_path, f"{d}/")), check=False), "b.parquet")


# --- fuzz: generated specs and files with edge values --------------------------------------

def test_fuzz_never_panics_hangs_or_changes_a_value(tmp_path):
    rng = random.Random(20261202)
    edge = [float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 1e-320, 1e308, None, 1.0, 2.0]
    for case in range(12):
        n = rng.choice([0, 1, 2, 7, 40])
        d = tmp_path / f"case{case}"
        d.mkdir()
        w = [rng.choice(edge + [1.0] * 6) for _ in range(n)]
        t = table(n, seed=case, w=pa.array(w, pa.float64()),
                  x=pa.array([rng.choice(edge) for _ in range(n)], pa.float64()),
                  g=pa.array([rng.choice(["a", "b", None, ""]) for _ in range(n)]),
                  y=pa.array([rng.choice(["yes", "no", None]) for _ in range(n)]))
        files = rng.choice([1, 2])
        for i in range(files):
            part = t.slice(i * (n // files + 1), n // files + 1)
            if rng.random() < 0.2:
                part = part.drop_columns(["x"])  # mismatched schemas
            pq.write_table(part, d / f"p{i}.parquet", write_statistics=rng.random() < 0.5)
        spec = write_spec(d, f"{d}/", weight=rng.choice(["w", None]), ident=rng.choice(["id", None]))
        out = d / "out"
        try:
            proc = curate(spec, out, "--target-partitions", str(rng.choice([1, 2, 5])))
        except subprocess.TimeoutExpired:
            pytest.fail(f"case {case}: strata hung")
        assert "panicked" not in proc.stderr, (case, proc.stderr)
        assert proc.returncode in (0, 3), (case, proc.returncode, proc.stderr)
        if proc.returncode != 0:
            assert not (out / "_latest").exists()
            continue
        got = read_curated(out).sort_by("id")
        want = pa.concat_tables([pq.read_table(p) for p in sorted(d.glob("p*.parquet"))],
                                promote_options="default").sort_by("id")
        for col in ["w", "x", "g", "y"]:
            if col not in want.column_names:
                continue
            for a, b in zip(want.column(col).to_pylist(), got.column(col).to_pylist()):
                same = (a is None and b is None) or (isinstance(a, float) and math.isnan(a) and math.isnan(b)) \
                    or (isinstance(a, float) and struct.pack("<d", a) == struct.pack("<d", b)) or a == b
                assert same, (case, col, a, b)


def test_helper_column_names_are_refused_but_pandas_index_columns_pass(tmp_path):
    """A source column named like one of curation's helpers would be shadowed: refused by
    name. pandas' `__index_level_0__` is an ordinary column and goes through unchanged."""
    src = tmp_path / "src.parquet"
    pq.write_table(table(40).append_column("__cell", pa.array([1] * 40)), src)
    out = tmp_path / "out"
    assert_refused(curate(write_spec(tmp_path, str(src)), out), "`__cell`", "rename it", out=out)
    t = table(40).append_column("__index_level_0__", pa.array(range(100, 140)))
    pq.write_table(t, src)
    curate(write_spec(tmp_path, str(src)), out, check=True)
    got = read_curated(out).sort_by("id")
    assert got.column("__index_level_0__").to_pylist() == list(range(100, 140))


def test_invalid_utf8_names_the_file_and_the_column(tmp_path):
    """A string column with bytes that are not UTF-8 (written past pyarrow's validation):
    the Parquet reader's error names neither; strata's names both. Exit 3, nothing
    published."""
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(table(30, seed=1).append_column("name", pa.array(["fine"] * 30)), src / "a.parquet")
    raw = pa.array([b"ok"] * 29 + [b"\xff\xfe"], pa.binary())
    bad = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())
    pq.write_table(table(30, seed=2).append_column("name", bad), src / "b.parquet")
    out = tmp_path / "out"
    spec = write_spec(tmp_path, f"{src}/")
    assert_refused(curate(spec, out), "b.parquet", "column `name`", "not valid UTF-8", out=out)


@pytest.mark.parametrize("fault,stage", [("deal-panic", "dealing"), ("encode-panic", "encoding"),
                                         ("encode-error", "encoding")])
@pytest.mark.parametrize("spill", [False, True])
def test_a_failing_shard_writer_ends_in_an_error_not_a_hang(tmp_path, fault, stage, spill):
    """STRATA_SINK_FAULT makes a worker of the shard writer panic or fail: the run must
    end promptly with one located error, exit 3, and commit nothing."""
    import time
    src = tmp_path / "src.parquet"
    pq.write_table(table(3000), src)
    out = tmp_path / "out"
    env = {"STRATA_SINK_FAULT": fault, "STRATA_RANGE_ROWS": "256"}
    if spill:
        env["STRATA_SHARD_MEMORY"] = "0"
    started = time.monotonic()
    proc = curate(write_spec(tmp_path, str(src)), out, env=env)
    assert time.monotonic() - started < 60
    assert proc.returncode == 3, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and f"writing shards ({stage})" in errors[0], proc.stderr
    assert not (out / "_latest").exists() and not list(out.glob("runs/*/manifest.json"))
