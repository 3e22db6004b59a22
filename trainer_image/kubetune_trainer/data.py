"""Data preparation: read → validate rows → render templates → clean → dedupe → split → mix.

Everything here is deterministic (no global RNG) and independent of the model; tokenization
and packing live in packing.py. Bad rows are collected with file, line and reason; the run
fails with DataError when they exceed dataPreparation.maxBadRecordRatio.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from kubetune_api.finetunejob import (
    DataPreparationSpec,
    DatasetFormat,
    DatasetLineage,
    DatasetSpec,
    Deduplication,
    EvalDataset,
    SplitSpec,
    UnicodeNormalization,
)

from .errors import DataError
from .minhash import LshIndex, MinHasher
from .storage import Storage, StorageError

CHAT_ROLES = ("system", "user", "assistant")
DEFAULT_CHAT_TEMPLATE = "<|{role}|>\n{content}\n"
MAX_BAD_ROWS_IN_REPORT = 100
MAX_BAD_ROWS_IN_MESSAGE = 5
MAX_BAD_ROW_CHARS = 240
"""A bad row's description can quote the data (e.g. an unknown chat role): clip it in messages and reports."""
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")


@dataclass
class Example:
    """One cleaned row. Text data has an empty prompt; the model sees prompt + completion."""

    dataset: str
    task: str
    prompt: str
    completion: str
    source: str
    """file:line it came from."""

    @property
    def key(self) -> str:
        return f"{self.prompt}\x00{self.completion}"

    @property
    def text(self) -> str:
        return join_prompt_completion(self.prompt, self.completion)


def join_prompt_completion(prompt: str, completion: str) -> str:
    if prompt and completion and not prompt[-1].isspace():
        return f"{prompt} {completion}"
    return prompt + completion


def completion_prefix(prompt: str) -> str:
    """What goes between prompt and completion when they are tokenized separately."""
    return " " if prompt and not prompt[-1].isspace() else ""


@dataclass(frozen=True)
class BadRow:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}: {self.reason}"
        return text if len(text) <= MAX_BAD_ROW_CHARS else text[: MAX_BAD_ROW_CHARS - 1] + "…"


class RowError(ValueError):
    """One row that cannot be used; becomes a BadRow."""


@dataclass
class DatasetReport:
    name: str
    uri: str
    files: list[str]
    sha256: str
    rows_read: int = 0
    bad_rows: int = 0
    filtered_short: int = 0
    filtered_long: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    kept: int = 0
    bad_row_details: list[str] = field(default_factory=list)


@dataclass
class PreparedData:
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    report: dict[str, Any]
    lineage: list[DatasetLineage]


# --------------------------------------------------------------------------- reading


def _decode_lines(raw: bytes) -> list[tuple[int, str | UnicodeDecodeError]]:
    """(line number, text or the decoding error); the empty piece after a final newline is dropped."""
    pieces = raw.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    lines: list[tuple[int, str | UnicodeDecodeError]] = []
    for number, line in enumerate(pieces, start=1):
        try:
            lines.append((number, line.removesuffix(b"\r").decode("utf-8")))
        except UnicodeDecodeError as error:
            lines.append((number, error))
    return lines


def render_template(template: str, row: dict[str, Any]) -> str:
    """Fill {field} placeholders from the row; a missing variable is a row error naming it."""
    values = {}
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        if name == "" or not name.isidentifier():
            raise RowError(f"template placeholder {{{name}}} is not a field name")
        if name not in row:
            raise RowError(f"template variable '{name}' missing from row")
        value = row[name]
        if isinstance(value, dict | list) or value is None:
            raise RowError(f"template variable '{name}' must be a string or number, got {_type_name(value)}")
        values[name] = value
    return template.format(**values)


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _string_field(row: dict[str, Any], name: str) -> str:
    if name not in row:
        raise RowError(f"missing field '{name}'")
    value = row[name]
    if not isinstance(value, str):
        raise RowError(f"field '{name}' must be a string, got {_type_name(value)}")
    return value


def _parse_json_object(text: str) -> dict[str, Any]:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as error:
        raise RowError(f"malformed JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(row, dict):
        raise RowError(f"expected a JSON object, got {_type_name(row)}")
    return row


def parse_row(
    spec: DatasetSpec | EvalDataset, file_uri: str, text: str, text_field: str = "text"
) -> tuple[str, str]:
    """(prompt, completion) of one raw line, before cleaning; raises RowError."""
    fmt = spec.format
    is_jsonl = file_uri.endswith(".jsonl")
    if fmt == DatasetFormat.TEXT:
        if is_jsonl:
            row = _parse_json_object(text)
            document = (
                render_template(spec.template, row) if spec.template else _string_field(row, text_field)
            )
        else:
            document = render_template(spec.template, {"text": text}) if spec.template else text
        return "", document
    if not is_jsonl:
        raise RowError(f"format {fmt.value} needs a .jsonl file")
    row = _parse_json_object(text)
    if fmt == DatasetFormat.PROMPT_COMPLETION:
        prompt_field = getattr(spec, "prompt_field", "prompt")
        completion_field = getattr(spec, "completion_field", "completion")
        prompt = _string_field(row, prompt_field)
        completion = _string_field(row, completion_field)
        if spec.template:
            prompt = render_template(spec.template, row)
        return prompt, completion
    messages_field = getattr(spec, "messages_field", "messages")
    if messages_field not in row:
        raise RowError(f"missing field '{messages_field}'")
    messages = row[messages_field]
    if not isinstance(messages, list) or not messages:
        raise RowError(f"field '{messages_field}' must be a non-empty array of {{role, content}}")
    rendered = []
    for index, message in enumerate(messages):
        where = f"{messages_field}[{index}]"
        if not isinstance(message, dict):
            raise RowError(f"{where} must be an object, got {_type_name(message)}")
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise RowError(f"{where}.role must be one of {', '.join(CHAT_ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise RowError(f"{where}.content must be a string, got {_type_name(content)}")
        rendered.append((role, content))
    if rendered[-1][0] != "assistant":
        raise RowError(f"the last message of '{messages_field}' must have role assistant")
    template = spec.template or DEFAULT_CHAT_TEMPLATE
    history = "".join(render_template(template, {"role": r, "content": c}) for r, c in rendered[:-1])
    # The assistant header without its content: render with empty content and drop the trailing newline.
    prompt = history + render_template(template, {"role": "assistant", "content": ""}).rstrip("\n")
    return prompt, rendered[-1][1]


# --------------------------------------------------------------------------- cleaning


def clean_text(text: str, prep: DataPreparationSpec) -> str:
    if prep.unicode_normalization != UnicodeNormalization.NONE:
        form = cast(Literal["NFC", "NFKC"], prep.unicode_normalization.value)
        text = unicodedata.normalize(form, text)
    if prep.collapse_whitespace:
        text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n")).strip()
    return text


# --------------------------------------------------------------------------- pipeline


def read_dataset(
    spec: DatasetSpec | EvalDataset,
    name: str,
    task: str,
    prep: DataPreparationSpec,
    storage: Storage,
    text_field: str = "text",
) -> tuple[list[Example], DatasetReport, list[BadRow]]:
    """Read, validate and clean one dataset (no dedupe, no split)."""
    try:
        files = storage.list_files(spec.uri)
        raws = [(f, storage.read_bytes(f)) for f in files]
    except StorageError as error:
        raise DataError(f"dataset {name}: {error}") from error
    digest = hashlib.sha256()
    for _, raw in raws:
        digest.update(raw)
    report = DatasetReport(name=name, uri=spec.uri, files=files, sha256=digest.hexdigest())
    bad: list[BadRow] = []
    examples: list[Example] = []
    for file_uri, raw in raws:
        for number, line in _decode_lines(raw):
            if isinstance(line, UnicodeDecodeError):
                report.rows_read += 1
                bad.append(BadRow(file_uri, number, f"invalid UTF-8 at byte {line.start}"))
                continue
            if not line.strip():
                # Blank lines separate documents in .txt files; in JSONL they are rows without data.
                if file_uri.endswith(".jsonl"):
                    report.rows_read += 1
                    bad.append(BadRow(file_uri, number, "empty line"))
                continue
            report.rows_read += 1
            try:
                prompt, completion = parse_row(spec, file_uri, line, text_field)
            except RowError as error:
                bad.append(BadRow(file_uri, number, str(error)))
                continue
            prompt, completion = clean_text(prompt, prep), clean_text(completion, prep)
            if not completion:
                bad.append(BadRow(file_uri, number, "empty text after cleaning"))
                continue
            length = len(join_prompt_completion(prompt, completion))
            if length < prep.min_chars:
                report.filtered_short += 1
                continue
            if length > prep.max_chars:
                report.filtered_long += 1
                continue
            examples.append(Example(name, task, prompt, completion, f"{file_uri}:{number}"))
    report.bad_rows = len(bad)
    report.bad_row_details = [str(b) for b in bad[:MAX_BAD_ROWS_IN_REPORT]]
    ratio = len(bad) / report.rows_read if report.rows_read else 0.0
    if bad and ratio > prep.max_bad_record_ratio:
        shown = "; ".join(str(b) for b in bad[:MAX_BAD_ROWS_IN_MESSAGE])
        more = (
            f" (and {len(bad) - MAX_BAD_ROWS_IN_MESSAGE} more)" if len(bad) > MAX_BAD_ROWS_IN_MESSAGE else ""
        )
        raise DataError(
            f"dataset {name}: {len(bad)} of {report.rows_read} rows are bad ({ratio:.1%} > "
            f"maxBadRecordRatio {prep.max_bad_record_ratio:.1%}): {shown}{more}"
        )
    if not examples:
        raise DataError(f"dataset {name}: no usable rows in {spec.uri}")
    return examples, report, bad


def deduplicate(
    examples: list[Example], prep: DataPreparationSpec, reports: dict[str, DatasetReport]
) -> list[Example]:
    """Exact and (for Near) MinHash near-duplicate removal over all datasets, keeping first occurrences."""
    if prep.deduplication == Deduplication.NONE:
        return examples
    seen: set[str] = set()
    unique = []
    for example in examples:
        if example.key in seen:
            reports[example.dataset].exact_duplicates += 1
            continue
        seen.add(example.key)
        unique.append(example)
    if prep.deduplication != Deduplication.NEAR:
        return unique
    hasher, index = MinHasher(), LshIndex()
    kept = []
    for example in unique:
        signature = hasher.signature(example.text)
        if index.most_similar(signature) >= prep.near_duplicate_threshold:
            reports[example.dataset].near_duplicates += 1
            continue
        index.add(signature)
        kept.append(example)
    return kept


def split_of(key: str, split: SplitSpec) -> str:
    """train / validation / test by a salted content hash: stable across runs, machines and row order."""
    digest = hashlib.sha256(f"{split.seed}\x00{key}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < split.train:
        return "train"
    if position < split.train + split.validation:
        return "validation"
    return "test"


def mix_by_weight(train: list[Example], specs: list[DatasetSpec]) -> tuple[list[Example], dict[str, int]]:
    """Resample each dataset's training rows so its share of the mix matches its weight.

    Keeps the total row count; a dataset above its share is cut (deterministically, by content
    hash), one below is repeated.
    """
    by_dataset = {s.name: [e for e in train if e.dataset == s.name] for s in specs}
    if len(specs) == 1:
        return train, {specs[0].name: len(train)}
    total_weight = sum(s.weight for s in specs)
    mixed: list[Example] = []
    counts = {}
    for spec in specs:
        rows = sorted(by_dataset[spec.name], key=lambda e: hashlib.sha256(e.key.encode()).digest())
        target = max(1, round(len(train) * spec.weight / total_weight)) if rows else 0
        chosen = [rows[i % len(rows)] for i in range(target)] if rows else []
        counts[spec.name] = len(chosen)
        mixed.extend(chosen)
    return mixed, counts


def leakage(train: list[Example], test: list[Example], threshold: float) -> dict[str, int]:
    """Test rows that also appear in training: exactly, or as MinHash near-duplicates."""
    train_keys = {e.key for e in train}
    exact = sum(1 for e in test if e.key in train_keys)
    hasher, index = MinHasher(), LshIndex()
    for example in train:
        index.add(hasher.signature(example.text))
    near = sum(1 for e in test if index.most_similar(hasher.signature(e.text)) >= threshold)
    return {"exactOverlaps": exact, "nearOverlaps": near}


def prepare(
    datasets: list[DatasetSpec], split: SplitSpec, prep: DataPreparationSpec, storage: Storage
) -> PreparedData:
    reports: dict[str, DatasetReport] = {}
    everything: list[Example] = []
    for spec in datasets:
        examples, report, _ = read_dataset(
            spec, spec.name, spec.task or spec.name, prep, storage, spec.text_field
        )
        reports[spec.name] = report
        everything.extend(examples)
    unique = deduplicate(everything, prep, reports)
    # maxSamples applies after cleaning and dedupe, in file order.
    limited = []
    taken: Counter[str] = Counter()
    limits = {s.name: s.max_samples for s in datasets}
    for example in unique:
        limit = limits[example.dataset]
        if limit is None or taken[example.dataset] < limit:
            taken[example.dataset] += 1
            limited.append(example)
    splits: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for example in limited:
        splits[split_of(example.key, split)].append(example)
    for name, report in reports.items():
        report.kept = taken[name]
    if not splits["train"]:
        raise DataError("no training rows left after cleaning, deduplication and the split")
    mixed, mix_counts = mix_by_weight(splits["train"], datasets)
    threshold = prep.near_duplicate_threshold
    summary: dict[str, Any] = {
        "datasets": [vars(r) for r in reports.values()],
        "stages": {
            "rowsRead": sum(r.rows_read for r in reports.values()),
            "badRows": sum(r.bad_rows for r in reports.values()),
            "filteredShort": sum(r.filtered_short for r in reports.values()),
            "filteredLong": sum(r.filtered_long for r in reports.values()),
            "afterCleaning": len(everything),
            "exactDuplicates": sum(r.exact_duplicates for r in reports.values()),
            "nearDuplicates": sum(r.near_duplicates for r in reports.values()),
            "afterDeduplication": len(unique),
            "afterMaxSamples": len(limited),
        },
        "split": {k: len(v) for k, v in splits.items()} | {"seed": split.seed},
        "trainMix": mix_counts,
        "leakage": leakage(splits["train"], splits["test"] + splits["validation"], threshold),
    }
    lineage = [DatasetLineage(name=r.name, uri=r.uri, sha256=r.sha256, rows=r.kept) for r in reports.values()]
    return PreparedData(mixed, splits["validation"], splits["test"], summary, lineage)


def read_eval_dataset(
    spec: EvalDataset, prep: DataPreparationSpec, storage: Storage, name: str
) -> list[Example]:
    """An evaluation-only dataset (the forgetting guard's general set): cleaned, not split."""
    examples, _, _ = read_dataset(spec, name, name, prep, storage)
    return examples[: spec.max_samples] if spec.max_samples else examples
