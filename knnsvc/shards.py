"""Sharded runs: one batch split over N workers, each writing its own manifest, merged into one report.

**Assignment.** Shard I of N takes the items at positions I, I + N, I + 2N, ... of the batch's
sorted plan (round-robin by sorted position, as prematching shards its groups). The plan is the
sorted file list every command already builds (`knnsvc.audio.find_audio` sorts), so every shard
of a run, on any machine that sees the same files, computes the same assignment without talking to
the others; shards differ in size by at most one item, so N workers finish together (a hash of the
path would keep an item's shard when files are added, but leaves shards unbalanced on small
batches). Every shard sees the whole plan and writes whether each of its items was converted,
skipped (its output was already there: a rerun after pre-emption only does what is missing) or
failed.

**Manifests.** A manifest is one JSON object (`MANIFEST_FORMAT`), rewritten atomically after every
item, so a killed shard leaves the entries it finished and a merge can tell it is incomplete:

    {"format": "knnsvc-manifest", "version": 1, "kind": "convert" | "score",
     "settings": {...}, "fingerprint": "<16 hex>", "shard": {"index": I, "count": N} | null,
     "total": <items in the whole batch>, "entries": [{"position": p, ...}, ...], "extra": {...}}

`fingerprint` hashes `settings` (what determines the outputs), so shards of different runs are
never merged. Shard I of N writes ``<stem>.shard-I-of-N<suffix>`` beside the path it is given
(`shard_path`; the path itself when N = 1).

**Merging** (`read_shards`, `merge_entries`, `write_report`): all N shards of one run, each once,
complete, same settings; the result has the form of an unsharded run's manifest (``shard: null``,
entries in batch order) and is written atomically, never over an existing file unless asked.
Each refusal is one `ShardError` line naming the file(s).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from knnsvc.files import atomic_path

log = logging.getLogger(__name__)

T = TypeVar("T")

MANIFEST_FORMAT = "knnsvc-manifest"
MANIFEST_VERSION = 1
MAX_SHARDS = 100_000
"""The largest number of shards accepted (a guard against typos, far above any cluster's job array)."""


class ShardError(ValueError):
    """A shard setting, manifest or merge that cannot be used (the message is one line)."""


# ----------------------------------------------------------------------------------- assignment
def shard_problem(num_shards: int, shard_index: int) -> str | None:
    """Why (`num_shards`, `shard_index`) is not a shard of a run, as one line, or None."""
    if not 1 <= num_shards <= MAX_SHARDS:
        return f"the number of shards must be within 1-{MAX_SHARDS}, got {num_shards}"
    if not 0 <= shard_index < num_shards:
        return f"shard index {shard_index} is out of range for {num_shards} shard(s) (0-{num_shards - 1})"
    return None


def check_shard(num_shards: int, shard_index: int) -> None:
    """Raise `ShardError` (one line) unless 1 <= num_shards and 0 <= shard_index < num_shards."""
    problem = shard_problem(num_shards, shard_index)
    if problem:
        raise ShardError(problem)


def shard_positions(total: int, num_shards: int, shard_index: int) -> range:
    """The positions in a batch of `total` items that shard `shard_index` of `num_shards` takes."""
    check_shard(num_shards, shard_index)
    return range(shard_index, total, num_shards)


def shard_items(items: Sequence[T], num_shards: int, shard_index: int) -> list[T]:
    """The items of `items` (in the batch's sorted order) that shard `shard_index` of `num_shards`
    takes: positions I, I + N, ... Every item is in exactly one shard."""
    return [items[position] for position in shard_positions(len(items), num_shards, shard_index)]


def shard_path(path: str | os.PathLike, num_shards: int, shard_index: int) -> Path:
    """Where shard `shard_index` of `num_shards` writes the manifest a run names `path`:
    ``<stem>.shard-I-of-N<suffix>`` beside it, or `path` itself for an unsharded run."""
    path = Path(path)
    check_shard(num_shards, shard_index)
    if num_shards == 1:
        return path
    return path.with_name(f"{path.stem}.shard-{shard_index}-of-{num_shards}{path.suffix or '.json'}")


def plain(value: Any) -> Any:
    """A JSON-safe copy of a setting: paths and devices as strings, dataclasses and mappings as dicts."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a numpy or torch scalar
        return plain(value.item())
    return str(value)


def fingerprint(settings: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the settings (sorted JSON): equal iff the settings are equal."""
    text = json.dumps(plain(settings), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------------- writing
def write_json(path: str | os.PathLike, data: Mapping[str, Any], overwrite: bool = True) -> Path:
    """Write `data` as indented JSON atomically (NaN kept as the JSON extension ``NaN``).

    Raises:
        ShardError: `overwrite` is False and `path` exists.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise ShardError(f"{path}: already exists (merged before?); use --overwrite to replace it")
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


@dataclass
class Manifest:
    """The manifest of one shard (or of an unsharded run: ``num_shards == 1``), written atomically
    by `save` (the caller saves after every item, so a killed run keeps what it finished).

    Attributes:
        path: where it is written (already the shard's own path, see `shard_path`).
        kind: ``convert`` or ``score``.
        settings: what determines the outputs (plain values); its `fingerprint` is checked by merges.
        total: items in the whole batch (all shards).
        entries: position in the batch -> the entry (``position`` is added when saved).
        extra: kind-specific values shared by the whole shard.
    """

    path: Path
    kind: str
    settings: dict[str, Any]
    num_shards: int = 1
    shard_index: int = 0
    total: int = 0
    entries: dict[int, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The manifest as the JSON object described in the module docstring."""
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "kind": self.kind,
            "settings": plain(self.settings),
            "fingerprint": fingerprint(self.settings),
            "shard": None if self.num_shards == 1 else {"index": self.shard_index, "count": self.num_shards},
            "total": self.total,
            "entries": [{"position": position, **self.entries[position]} for position in sorted(self.entries)],
            "extra": self.extra,
        }

    def record(self, position: int, **entry: Any) -> None:
        """Set the entry of the item at `position` and save the manifest."""
        self.entries[position] = entry
        self.save()

    def save(self) -> Path:
        """Write the manifest atomically (replacing this shard's earlier one)."""
        return write_json(self.path, self.to_json())

    def previous_entries(self) -> dict[int, dict[str, Any]]:
        """The entries of this shard's manifest from an earlier run with the same settings and shards
        (e.g. before a pre-emption), or {} when there is none, or it is unreadable or of another run."""
        try:
            data = load_manifest(self.path)
        except ShardError:
            return {}
        same_shard = data["shard"] == self.to_json()["shard"]
        if data["fingerprint"] != fingerprint(self.settings) or not same_shard or data["total"] != self.total:
            return {}
        return {int(entry["position"]): {k: v for k, v in entry.items() if k != "position"}
                for entry in data["entries"]}


# ----------------------------------------------------------------------------------- reading and merging
def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read one manifest, checking its form.

    Raises:
        ShardError: one line naming `path`: missing, unreadable, not JSON, or not a manifest of this version.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardError(f"{path}: no such manifest (has that shard run?)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ShardError(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err})") from None
    except ValueError as err:
        raise ShardError(f"{path}: not a JSON manifest ({err})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ShardError(f"{path}: not a knnsvc manifest")
    if data.get("version") != MANIFEST_VERSION:
        raise ShardError(f"{path}: manifest version {data.get('version')}, expected {MANIFEST_VERSION}")
    for key, kind in (("kind", str), ("settings", dict), ("fingerprint", str), ("total", int), ("entries", list),
                      ("extra", dict)):
        if not isinstance(data.get(key), kind):
            raise ShardError(f"{path}: damaged manifest ({key!r} missing or of the wrong type)")
    return data


def read_shards(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Read the manifests of all shards of one run and check that they can be merged; returns them
    in shard order.

    Raises:
        ShardError: one line: a file that is not a shard manifest (or a merged/unsharded one), shards of
            different kinds, settings or shard counts, a shard given twice, a missing shard, or a shard
            that did not finish (fewer entries than its share of the batch: rerun it).
    """
    if not paths:
        raise ShardError("no manifests to merge")
    shards: dict[int, tuple[Path, dict[str, Any]]] = {}
    first: tuple[Path, dict[str, Any]] | None = None
    for raw in paths:
        path = Path(raw)
        data = load_manifest(path)
        shard = data.get("shard")
        if not isinstance(shard, dict):
            raise ShardError(f"{path}: a merged or unsharded manifest, not one shard's (merged already?)")
        index, count = shard.get("index"), shard.get("count")
        if not isinstance(index, int) or not isinstance(count, int) or shard_problem(count, index):
            raise ShardError(f"{path}: damaged manifest (shard {index!r} of {count!r})")
        if first is None:
            first = (path, data)
        else:
            reference_path, reference = first
            if data["kind"] != reference["kind"]:
                raise ShardError(f"{path}: a {data['kind']} manifest, but {reference_path} is a "
                                 f"{reference['kind']} one")
            if count != reference["shard"]["count"]:
                raise ShardError(f"{path}: shard of {count}, but {reference_path} is a shard of "
                                 f"{reference['shard']['count']}; merge the shards of one run")
            if data["fingerprint"] != reference["fingerprint"] or data["total"] != reference["total"]:
                raise ShardError(f"{path}: made with other settings than {reference_path} "
                                 f"({_differences(reference, data)}); merge the shards of one run")
        if index in shards:
            raise ShardError(f"{path}: shard {index} of {count} is given twice (also {shards[index][0]})")
        shards[index] = (path, data)
    assert first is not None
    count = first[1]["shard"]["count"]
    missing = [str(index) for index in range(count) if index not in shards]
    if missing:
        raise ShardError(f"missing shard(s) {', '.join(missing)} of {count} (beside {first[0]}); run them first")
    for index in range(count):
        path, data = shards[index]
        expected = list(range(index, data["total"], count))
        got = [entry.get("position") for entry in data["entries"]]
        if got != expected:
            raise ShardError(f"{path}: shard {index} of {count} is incomplete ({len(got)} of {len(expected)} items "
                             "recorded); rerun it, it skips what is done")
    return [shards[index][1] for index in range(count)]


def _differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    keys = sorted(set(a["settings"]) | set(b["settings"]))
    changed = [key for key in keys if a["settings"].get(key) != b["settings"].get(key)]
    if a["total"] != b["total"]:
        changed.append(f"total {a['total']} vs {b['total']}")
    return ", ".join(changed[:5]) or "fingerprint"


def merge_entries(shards: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The entries of checked shards (`read_shards`) in batch order, without their ``position``."""
    merged = sorted((entry for shard in shards for entry in shard["entries"]), key=lambda entry: entry["position"])
    return [{key: value for key, value in entry.items() if key != "position"} for entry in merged]


def merged_manifest(shards: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest an unsharded run with the shards' settings writes (entries in batch order)."""
    first = shards[0]
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "kind": first["kind"],
        "settings": first["settings"],
        "fingerprint": first["fingerprint"],
        "shard": None,
        "total": first["total"],
        "entries": [{"position": position, **entry} for position, entry in enumerate(merge_entries(shards))],
        "extra": dict(extra if extra is not None else first["extra"]),
    }


def output_problem(output: Path, inputs: Sequence[str | os.PathLike], overwrite: bool) -> str | None:
    """Why a merge cannot write `output`, as one line, or None: it is one of the shard files, an
    existing folder, or an existing file without `overwrite` (a second merge of the same shards)."""
    resolved = output.resolve()
    if any(Path(path).resolve() == resolved for path in inputs):
        return f"{output}: is one of the manifests being merged; choose another output"
    if output.is_dir():
        return f"{output}: is a folder; name the file to write"
    if output.exists() and not overwrite:
        return f"{output}: already exists (merged before?); use --overwrite to replace it"
    return None
