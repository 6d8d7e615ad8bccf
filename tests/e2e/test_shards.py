"""Published shards read back by pyarrow: every shard stratified within one row, the
manifest true to the files, and publishing through S3 faults (a fault-injecting proxy
in front of the real S3-compatible server)."""
from __future__ import annotations

import collections
import hashlib
import json
import math
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, latest_manifest, run_strata
from faulty_proxy import FaultyProxy
from strata_hash import shuffle_key

ADULT_SPEC = ROOT / "pipelines/adult.toml"


def adult_spec_text(extra: str = "") -> str:
    text = ADULT_SPEC.read_text().replace("../data/adult/train.parquet", str(ROOT / "data/adult/train.parquet"))
    return text + extra


def publish(spec, out, *args, env=None, check=True):
    return run_strata("curate", str(spec), "--out", str(out), "--format", "json", *args, env=env, check=check)


def assert_stratified(out):
    """Reads every shard with pyarrow and checks it against the manifest and against
    proportional allocation: each of a split's S shards holds floor(c/S) or ceil(c/S)
    rows of every stratum with c rows in the split."""
    m = latest_manifest(out)
    run = out / "runs" / m["run_id"]
    cols = m["stratum_columns"]
    by_split = collections.defaultdict(list)
    for shard in m["shards"]:
        path = run / shard["path"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert len(data) == shard["bytes"]
        t = pq.read_table(path)
        assert t.column_names == [c["name"] for c in m["schema"]]
        assert t.num_rows == shard["rows"] == pq.ParquetFile(path).metadata.num_rows
        counts = collections.Counter(zip(*(t.column(c).cast(pa.string()).to_pylist() for c in cols)))
        assert {tuple(s["values"]): s["rows"] for s in shard["strata"]} == dict(counts)
        by_split[shard["split"]].append(counts)
    for split in m["splits"]:
        shards = by_split.get(split["split"], [])
        assert len(shards) == split["shards"]
        if not shards:
            continue
        total = sum(shards, collections.Counter())
        assert sum(total.values()) == split["rows"]
        s = len(shards)
        for stratum, c in total.items():
            for counts in shards:
                assert counts.get(stratum, 0) in (c // s, math.ceil(c / s)), (split["split"], stratum, c, s)
        sizes = [sum(x.values()) for x in shards]
        assert max(sizes) - min(sizes) <= 1
    return m


def assert_dealt_in_key_blocks(out, m, seed, id_column):
    """Checks the dealing rule with shuffle keys computed here (strata_hash.py): inside a
    shard rows are in key order, and within a split each stratum's rows, in key order,
    are cut into consecutive blocks, shard 0 first. The copies of a row are identical,
    so its k appearances (in shard order) get the keys of copies 0..k-1, ascending."""
    run = out / "runs" / m["run_id"]
    cols = m["stratum_columns"]
    shards = []
    copies = collections.Counter()
    for shard in sorted(m["shards"], key=lambda s: (s["split"], s["index"])):
        t = pq.read_table(run / shard["path"])
        ids = t.column(id_column).to_pylist()
        copies.update(ids)
        shards.append((shard, ids, list(zip(*(t.column(c).cast(pa.string()).to_pylist() for c in cols)))))
    keys_of = {i: sorted(map(shuffle_key(seed, [i]), range(k))) for i, k in copies.items()}
    seen = collections.Counter()
    blocks = collections.defaultdict(list)  # (split, stratum) -> [(shard, min key, max key)]
    for shard, ids, strata in shards:
        keys = []
        for i in ids:
            keys.append(keys_of[i][seen[i]])
            seen[i] += 1
        assert keys == sorted(keys), f"{shard['path']}: rows not in shuffle-key order"
        by_stratum = collections.defaultdict(list)
        for k, st in zip(keys, strata):
            by_stratum[st].append(k)
        for st, ks in by_stratum.items():
            blocks[(shard["split"], st)].append((shard["index"], min(ks), max(ks)))
    for (split, st), bs in blocks.items():
        for (a, _, a_max), (b, b_min, _) in zip(bs, bs[1:]):
            assert a < b and a_max < b_min, f"{split} {st}: shard {a} holds keys after shard {b}'s"


def test_adult_shards_are_stratified_and_true_to_the_manifest(tmp_path):
    publish(ADULT_SPEC, tmp_path / "out")
    m = assert_stratified(tmp_path / "out")
    train = [s for s in m["shards"] if s["split"] == "train"]
    assert len(train) == math.ceil(m["splits"][0]["rows"] / m["target_shard_rows"]) > 1
    assert m["inputs"][0]["url"].endswith("data/adult/train.parquet")
    assert m["spec_sha256"] == hashlib.sha256(ADULT_SPEC.read_bytes()).hexdigest()
    # rows inside a shard are shuffled: not sorted by any stratum column
    t = pq.read_table(tmp_path / "out" / "runs" / m["run_id"] / train[0]["path"])
    sexes = t.column("sex").to_pylist()
    assert sexes != sorted(sexes) and sexes != sorted(sexes, reverse=True)


@pytest.mark.parametrize("stratify,exact", [("groups", "true"), ("groups", "false"), ("groups_label", "false")])
def test_generated_skewed_data_oversampled_into_stratified_shards(tmp_path, stratify, exact):
    rng = random.Random(11)
    groups = ["a"] * 70 + ["b"] * 20 + ["c"] * 8 + ["d"] * 2
    rows = 12000
    g = [rng.choice(groups) for _ in range(rows)]
    rate = {"a": 0.3, "b": 0.5, "c": 0.1, "d": 0.7}
    y = [int(rng.random() < rate[x]) for x in g]
    region = [rng.choice(["north", "south", None]) for _ in range(rows)]
    table = pa.table({"id": list(range(rows)), "grp": g, "region": region, "y": y,
                      "x": [rng.random() for _ in range(rows)]})
    pq.write_table(table, tmp_path / "gen.parquet")
    spec = tmp_path / "gen.toml"
    spec.write_text(f"""
[source]
url = "{tmp_path / 'gen.parquet'}"
id_column = "id"

[label]
column = "y"
positive = 1

[groups]
attributes = ["grp", "region"]

[curate]
strategy = "resample"
seed = 9

[curate.resample]
target = "uniform"
stratify = "{stratify}"
mode = "oversample"
exact = {exact}
max_replication = 100

[publish]
shard_rows = 1700
""")
    publish(spec, tmp_path / "out")
    m = assert_stratified(tmp_path / "out")
    assert_dealt_in_key_blocks(tmp_path / "out", m, seed=9, id_column="id")
    train = m["splits"][0]
    assert train["split"] == "train" and train["shards"] > 3
    assert m["stratum_columns"] == (["grp", "region"] if stratify == "groups" else ["grp", "region", "y"])
    # oversampling: every (grp, region) group of train the same size (exactly, or in
    # expectation for Bernoulli draws), replicated rows present
    t = pa.concat_tables([pq.read_table(tmp_path / "out" / "runs" / m["run_id"] / s["path"])
                          for s in m["shards"] if s["split"] == "train"])
    per_group = collections.Counter(zip(t.column("grp").to_pylist(), t.column("region").to_pylist()))
    if exact == "true":
        assert len(set(per_group.values())) == 1, per_group
    else:
        mean = sum(per_group.values()) / len(per_group)
        assert all(abs(n - mean) < 0.25 * mean for n in per_group.values()), per_group
    assert len(set(t.column("id").to_pylist())) < t.num_rows


RETRY = """
[storage.retry]
max_retries = 2
initial_backoff_secs = 0.05
max_backoff_secs = 0.2
retry_timeout_secs = 10
"""


def keys(s3_client, bucket, prefix):
    resp = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in resp.get("Contents", []))


def s3_manifest(s3_client, bucket, prefix):
    latest = json.loads(s3_client.get_object(Bucket=bucket, Key=f"{prefix}/_latest")["Body"].read())
    return json.loads(s3_client.get_object(Bucket=bucket, Key=f"{prefix}/{latest['manifest']}")["Body"].read())


def test_publish_through_failures_commits_nothing_then_recovers(tmp_path, s3_endpoint, s3_env, s3_client):
    bucket = "strata-faults"
    s3_client.create_bucket(Bucket=bucket)
    spec = tmp_path / "adult.toml"
    spec.write_text(adult_spec_text(RETRY))
    proxy = FaultyProxy(s3_endpoint)
    env = {**s3_env, "AWS_ENDPOINT_URL": proxy.url}
    try:
        publish(spec, f"s3://{bucket}/clean", env=env)
        clean = s3_manifest(s3_client, bucket, "clean")
        hashes = [s["sha256"] for s in clean["shards"]]

        # the server goes away after three uploads
        proxy.down_after_puts(3)
        failed = publish(spec, f"s3://{bucket}/broken", env=env, check=False)
        assert failed.returncode == 3, failed.stderr
        errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "s3://strata-faults/broken/" in errors[0], failed.stderr
        left = keys(s3_client, bucket, "broken/")
        assert left, "some shards were uploaded before the fault"
        assert not any(k.endswith("manifest.json") for k in left), left
        assert "broken/_latest" not in left

        # back up: the re-run commits the same bytes
        proxy.healthy()
        publish(spec, f"s3://{bucket}/broken", env=env)
        assert [s["sha256"] for s in s3_manifest(s3_client, bucket, "broken")["shards"]] == hashes

        # transient faults are retried
        proxy.flaky(every=4)
        publish(spec, f"s3://{bucket}/flaky", env=env)
        assert proxy.failed > 0
        assert [s["sha256"] for s in s3_manifest(s3_client, bucket, "flaky")["shards"]] == hashes
        proxy.healthy()
        verified = run_strata("shards", "verify", f"s3://{bucket}/flaky/", "--format", "json", env=s3_env)
        assert json.loads(verified.stdout)["ok"] is True
    finally:
        proxy.close()
