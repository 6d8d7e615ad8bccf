"""The same profile through s3:// on a real S3-compatible server (moto on 127.0.0.1)."""
from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

from conftest import ROOT, profile_json, run_strata

BUCKET = "strata-e2e"


@pytest.fixture(scope="module")
def uploaded(s3_client):
    s3_client.create_bucket(Bucket=BUCKET)
    s3_client.upload_file(str(ROOT / "data/adult/train.parquet"), BUCKET, "adult/one/train.parquet")
    # the same rows split into three files, plus a marker that is not Parquet
    table = pq.read_table(ROOT / "data/adult/train.parquet")
    step = table.num_rows // 3 + 1
    for i in range(3):
        buf = io.BytesIO()
        pq.write_table(table.slice(i * step, step), buf, compression="zstd")
        s3_client.put_object(Bucket=BUCKET, Key=f"adult/many/part-{i}.parquet", Body=buf.getvalue())
    s3_client.put_object(Bucket=BUCKET, Key="adult/many/_SUCCESS", Body=b"")
    s3_client.put_object(Bucket=BUCKET, Key="adult/empty/readme.txt", Body=b"no parquet here")
    s3_client.put_object(Bucket=BUCKET, Key="adult/corrupt/bad.parquet", Body=b"PAR1 not really PAR1")
    return BUCKET


def without_source(p: dict) -> dict:
    return {k: v for k, v in p.items() if k != "source"}


def test_s3_profile_equals_file_profile(uploaded, s3_env):
    spec = str(ROOT / "pipelines/adult.toml")
    local = profile_json(spec)
    for url in (
        f"s3://{uploaded}/adult/one/train.parquet",
        f"s3://{uploaded}/adult/one/",
        f"s3://{uploaded}/adult/many/",
        f"s3://{uploaded}/adult/many/part-*.parquet",
    ):
        remote = profile_json(spec, "--source", url, env=s3_env)
        assert without_source(remote) == without_source(local), url
        assert remote["source"]["url"].startswith(f"s3://{uploaded}/adult/")
    assert profile_json(spec, "--source", f"s3://{uploaded}/adult/many/", env=s3_env)["source"]["files"] == 3


@pytest.mark.parametrize(
    "key, message",
    [
        ("adult/missing.parquet", "no such file"),
        ("adult/empty/", "no `.parquet` files found"),
        ("adult/corrupt/", "bad.parquet`: not a readable Parquet file"),
    ],
)
def test_s3_bad_sources(uploaded, s3_env, key, message):
    proc = run_strata("profile", str(ROOT / "pipelines/adult.toml"), "--source", f"s3://{uploaded}/{key}",
                      env=s3_env, check=False)
    assert proc.returncode == 3, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert message in errors[0], errors[0]
    assert "testing" not in proc.stderr, "credentials must never be printed"
