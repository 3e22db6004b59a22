"""Data preparation: row validation messages, bad-row ratio, templates, split, dedupe, leakage, S3."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from kubetune_trainer import data
from kubetune_trainer.errors import DataError
from kubetune_trainer.minhash import MinHasher, estimated_jaccard
from kubetune_trainer.storage import Storage

from kubetune_api.common import StorageSettings
from kubetune_api.finetunejob import DataPreparationSpec, DatasetSpec, SplitSpec

LENIENT = DataPreparationSpec(max_bad_record_ratio=1.0, deduplication="None")


def _dataset(tmp_path: Path, name: str, content: bytes, **spec: object) -> DatasetSpec:
    path = tmp_path / name
    path.write_bytes(content)
    return DatasetSpec.model_validate({"name": "d", "uri": f"file://{path}", **spec})


@pytest.mark.parametrize(
    ("line", "fmt", "reason"),
    [
        (b'{"prompt": "a"', "prompt-completion", "malformed JSON: Expecting ',' delimiter (column 15)"),
        (b"\xff\xfe bad", "prompt-completion", "invalid UTF-8 at byte 0"),
        (b'{"prompt": "a"}', "prompt-completion", "missing field 'completion'"),
        (
            b'{"prompt": 3, "completion": "b"}',
            "prompt-completion",
            "field 'prompt' must be a string, got int",
        ),
        (b"[1, 2]", "prompt-completion", "expected a JSON object, got array"),
        (b'{"prompt": "a", "completion": "   "}', "prompt-completion", "empty text after cleaning"),
        (b'{"text": null}', "text", "field 'text' must be a string, got null"),
        (b'{"messages": []}', "chat", "field 'messages' must be a non-empty array of {role, content}"),
        (
            b'{"messages": [{"role": "bot", "content": "x"}]}',
            "chat",
            "messages[0].role must be one of system, user, assistant, got 'bot'",
        ),
        (
            b'{"messages": [{"role": "user", "content": "x"}]}',
            "chat",
            "the last message of 'messages' must have role assistant",
        ),
    ],
)
def test_bad_rows_are_reported_with_file_line_and_reason(tmp_path, line, fmt, reason):
    good = (
        b'{"prompt": "p", "completion": "c", "text": "t", '
        b'"messages": [{"role": "assistant", "content": "c"}]}'
    )
    spec = _dataset(tmp_path, "rows.jsonl", good + b"\n" + line + b"\n", format=fmt)
    _, report, bad = data.read_dataset(spec, "d", "d", LENIENT, Storage())
    assert [str(b) for b in bad] == [f"{spec.uri}:2: {reason}"]
    assert report.rows_read == 2 and report.bad_rows == 1


def test_bad_row_ratio_above_the_limit_fails_naming_the_rows(tmp_path):
    rows = [json.dumps({"prompt": f"q{i}", "completion": "a"}) for i in range(8)] + [
        "{oops",
        '{"prompt": "x"}',
    ]
    spec = _dataset(tmp_path, "rows.jsonl", "\n".join(rows).encode(), format="prompt-completion")
    prep = DataPreparationSpec(max_bad_record_ratio=0.1)
    with pytest.raises(DataError) as error:
        data.read_dataset(spec, "d", "d", prep, Storage())
    message = str(error.value)
    assert "2 of 10 rows are bad (20.0% > maxBadRecordRatio 10.0%)" in message
    assert (
        f"{spec.uri}:9: malformed JSON" in message and f"{spec.uri}:10: missing field 'completion'" in message
    )
    # At the limit it passes.
    data.read_dataset(spec, "d", "d", DataPreparationSpec(max_bad_record_ratio=0.2), Storage())


def test_bad_row_message_stays_bounded_for_a_huge_number_of_bad_rows(tmp_path):
    """The first few bad rows, each clipped, and a count: never the whole file, never a template literal."""
    huge_role = {
        "messages": [{"role": "x" * 100_000, "content": "hi"}, {"role": "assistant", "content": "a"}]
    }
    rows = [json.dumps(huge_role)] + ["{oops"] * 100_000 + [json.dumps({"messages": []})] * 5
    spec = _dataset(tmp_path, "chat.jsonl", "\n".join(rows).encode(), format="chat")
    with pytest.raises(DataError) as error:
        data.read_dataset(spec, "d", "d", DataPreparationSpec(max_bad_record_ratio=0.5), Storage())
    message = str(error.value)
    assert "100006 of 100006 rows are bad" in message
    assert message.count(f"{spec.uri}:") == data.MAX_BAD_ROWS_IN_MESSAGE
    assert f"{spec.uri}:1: messages[0].role must be one of system, user, assistant, got 'xxx" in message
    assert f"{spec.uri}:2: malformed JSON" in message and f"{spec.uri}:5: malformed JSON" in message
    assert message.endswith("(and 100001 more)")
    assert "[*]" not in message
    assert len(message) < 2_000  # fits a Kubernetes termination message with room to spare


def test_empty_dataset_is_a_clear_error(tmp_path):
    spec = _dataset(tmp_path, "empty.txt", b"\n\n")
    with pytest.raises(DataError, match=r"dataset d: no usable rows in file://"):
        data.read_dataset(spec, "d", "d", LENIENT, Storage())


@pytest.mark.parametrize(
    ("template", "row", "expected"),
    [
        ("Q: {prompt}\nA:", {"prompt": "hi"}, "Q: hi\nA:"),
        ("{topic} / {prompt}", {"prompt": "hi", "topic": 7}, "7 / hi"),
        ("{{literal}} {prompt}", {"prompt": "hi"}, "{literal} hi"),
    ],
)
def test_templates_fill_fields(template, row, expected):
    assert data.render_template(template, row) == expected


def test_template_with_a_missing_variable_is_a_row_error(tmp_path):
    spec = _dataset(
        tmp_path,
        "t.jsonl",
        b'{"prompt": "p", "completion": "c", "ctx": "x"}\n{"prompt": "p", "completion": "c"}\n',
        format="prompt-completion",
        template="{ctx}: {prompt}",
    )
    examples, _, bad = data.read_dataset(spec, "d", "d", LENIENT, Storage())
    assert [e.prompt for e in examples] == ["x: p"]
    assert [str(b) for b in bad] == [f"{spec.uri}:2: template variable 'ctx' missing from row"]


def test_cleaning_normalises_unicode_and_whitespace_and_filters_length(tmp_path):
    spec = _dataset(tmp_path, "t.txt", ("ﬁne\t  day  \nx\n" + "long " * 50 + "\n").encode())
    prep = DataPreparationSpec(min_chars=3, max_chars=100, deduplication="None")
    examples, report, _ = data.read_dataset(spec, "d", "d", prep, Storage())
    assert [e.completion for e in examples] == ["fine day"]
    assert (report.filtered_short, report.filtered_long) == (1, 1)


def test_split_is_deterministic_salted_and_follows_any_fractions():
    keys = [f"row {i}" for i in range(4000)]
    split = SplitSpec(train=0.6, validation=0.15, test=0.25, seed=5)
    first = [data.split_of(k, split) for k in keys]
    assert first == [data.split_of(k, split) for k in keys]
    shares = {name: first.count(name) / len(keys) for name in ("train", "validation", "test")}
    assert shares == pytest.approx({"train": 0.6, "validation": 0.15, "test": 0.25}, abs=0.03)
    reseeded = [data.split_of(k, split.model_copy(update={"seed": 6})) for k in keys]
    assert reseeded != first


def test_minhash_estimates_jaccard():
    hasher = MinHasher(num_perm=256)
    base = " ".join(f"w{i}" for i in range(60))
    near = base.replace("w30", "x30")
    far = " ".join(f"z{i}" for i in range(60))
    assert estimated_jaccard(hasher.signature(base), hasher.signature(near)) > 0.75
    assert estimated_jaccard(hasher.signature(base), hasher.signature(far)) < 0.1


def test_dedupe_runs_across_splits_so_nothing_leaks(tmp_path):
    import random

    rng = random.Random(0)
    sentences = [" ".join(f"w{rng.randrange(10_000)}" for _ in range(30)) for _ in range(60)]
    near_copies = [s + " extra" for s in sentences[:20]]
    lines = sentences + sentences[:10] + near_copies
    spec = _dataset(tmp_path, "t.txt", "\n".join(lines).encode())
    prepared = data.prepare(
        [spec], SplitSpec(train=0.5, validation=0.0, test=0.5), DataPreparationSpec(), Storage()
    )
    stages = prepared.report["stages"]
    assert stages["exactDuplicates"] == 10 and stages["nearDuplicates"] == 20
    assert prepared.report["leakage"] == {"exactOverlaps": 0, "nearOverlaps": 0}
    train_keys = {e.key for e in prepared.train}
    assert not any(e.key in train_keys for e in prepared.test)
    # Without dedupe the same data does leak, and the check says so.
    leaky = data.prepare(
        [spec],
        SplitSpec(train=0.5, validation=0.0, test=0.5),
        DataPreparationSpec(deduplication="None"),
        Storage(),
    )
    assert leaky.report["leakage"]["nearOverlaps"] > 0


def test_multitask_mixing_follows_weights_and_hashes_raw_bytes(tmp_path):
    a = _dataset(tmp_path, "a.txt", "".join(f"alpha document number {i}\n" for i in range(90)).encode())
    b = _dataset(tmp_path, "b.txt", "".join(f"beta document number {i}\n" for i in range(30)).encode())
    a = a.model_copy(update={"name": "a", "weight": 1.0})
    b = b.model_copy(update={"name": "b", "weight": 3.0})
    prepared = data.prepare([a, b], SplitSpec(train=1.0, validation=0.0, test=0.0), LENIENT, Storage())
    mix = prepared.report["trainMix"]
    assert mix["b"] == pytest.approx(3 * mix["a"], rel=0.05)
    import hashlib

    assert prepared.lineage[0].sha256 == hashlib.sha256((tmp_path / "a.txt").read_bytes()).hexdigest()


def test_prefix_reads_all_files_sorted_and_pvc_maps_to_the_mount(tmp_path, monkeypatch):
    root = tmp_path / "claim" / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("second file\n")
    (root / "a.txt").write_text("first file\n")
    (root / "sub" / "c.jsonl").write_text('{"text": "third file"}\n')
    (root / "ignored.csv").write_text("x\n")
    monkeypatch.setenv("KUBETUNE_PVC_ROOT", str(tmp_path))
    spec = DatasetSpec(name="d", uri="pvc://claim/corpus/")
    examples, report, _ = data.read_dataset(spec, "d", "d", LENIENT, Storage())
    assert [e.completion for e in examples] == ["first file", "second file", "third file"]
    assert report.files == [
        "pvc://claim/corpus/a.txt",
        "pvc://claim/corpus/b.txt",
        "pvc://claim/corpus/sub/c.jsonl",
    ]


def test_s3_prefix_against_a_real_s3_server(monkeypatch):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        storage = Storage(StorageSettings(endpoint=endpoint, region="eu-west-1"))
        client = storage.s3()
        # moto's backend is per process, shared with other tests' servers: a unique bucket.
        bucket = f"data-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        client.put_object(Bucket=bucket, Key="qa/2.jsonl", Body=b'{"prompt": "b?", "completion": "B"}\n')
        client.put_object(
            Bucket=bucket, Key="qa/1.jsonl", Body=b'{"prompt": "a?", "completion": "A"}\n{bad\n'
        )
        spec = DatasetSpec(name="qa", uri=f"s3://{bucket}/qa/", format="prompt-completion")
        examples, _, bad = data.read_dataset(spec, "qa", "qa", LENIENT, storage)
        assert [(e.prompt, e.completion) for e in examples] == [("a?", "A"), ("b?", "B")]
        assert [str(b) for b in bad] == [
            f"s3://{bucket}/qa/1.jsonl:2: malformed JSON: "
            "Expecting property name enclosed in double quotes (column 2)"
        ]
        single = DatasetSpec(name="qa", uri=f"s3://{bucket}/qa/2.jsonl", format="prompt-completion")
        assert len(data.read_dataset(single, "qa", "qa", LENIENT, storage)[0]) == 1
    finally:
        server.stop()
