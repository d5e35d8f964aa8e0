"""Atomic, verifiable training checkpoints.

SB3's ``CheckpointCallback`` writes straight to the final file, so a kill during a
save leaves a truncated zip that looks like the newest checkpoint. Here every file
is written to a temporary name in the same directory, flushed, fsynced and renamed
with :func:`os.replace`, and the directory is fsynced. A ``manifest.json``, written
the same way, records each checkpoint's sha256; a checkpoint is loaded only after
its bytes match, and only with ``torch.load(weights_only=True)``, so no pickled
Python object is ever executed.

Layout of a store directory::

    ckpt_000000050000.pt   one torch.save'd dict per checkpoint (step = env timesteps)
    manifest.json          {"format": 1, "entries": [{file, step, sha256, score, created}]}

The manifest is the only authority. If it is missing or corrupt the store holds
*no* checkpoints (``entries() == []``, and the loaders raise
:class:`NoCheckpointError` naming the problem); ``ckpt_*.pt`` files it does not
list are never loaded and never deleted (see :meth:`CheckpointStore.unlisted_files`).
Rebuilding entries from unlisted files was rejected: without a recorded sha256 a
bit flip inside a tensor would load silently. One writer per directory.

With SB3: ``store.save(model.num_timesteps, capture_training_state(model, extras=...),
score=...)`` and, on resume, ``entry, state, skipped = store.load_latest_good()``
then ``extras = restore_training_state(model, state)``.

Example:
    >>> import tempfile
    >>> store = CheckpointStore(tempfile.mkdtemp(), keep_last=2)
    >>> entry = store.save(100, {"w": torch.zeros(2), "note": "any weights-only value"}, score=0.5)
    >>> loaded_entry, state, skipped = store.load_latest_good()
    >>> (loaded_entry == entry, state["w"].tolist(), skipped)
    (True, [0.0, 0.0], [])
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..hashing import sha256_file
from convopt_mlflow.errors import UserError

from .state import capture_training_state, restore_training_state  # re-exported: the SB3 side of a checkpoint

__all__ = [
    "CheckpointEntry",
    "CheckpointStore",
    "CorruptCheckpointError",
    "NoCheckpointError",
    "capture_training_state",
    "restore_training_state",
    "sha256_file",
]

MANIFEST = "manifest.json"
_FORMAT = 1
_FILE_RE = re.compile(r"ckpt_(\d{12})\.pt")
_TMP_PREFIXES = (".ckpt_", ".manifest_")


class CorruptCheckpointError(Exception):
    """A checkpoint whose file is missing, fails its sha256 check or does not load."""

    def __init__(self, entry: "CheckpointEntry", reason: str):
        self.entry = entry
        self.reason = reason
        super().__init__(f"checkpoint {entry.file} (step {entry.step}) is unusable: {reason}")


class NoCheckpointError(UserError):
    """No usable checkpoint exists (e.g. ``resume`` of a run that never saved one)."""


@dataclass(frozen=True)
class CheckpointEntry:
    """One manifest row.

    Attributes:
        file: file name inside the store directory (``ckpt_{step:012d}.pt``).
        step: environment timesteps (``num_timesteps``) at save time.
        sha256: hex digest of the file's bytes.
        score: the caller's score (higher is better), or None; non-finite scores are stored as None.
        created: save time, seconds since the Unix epoch (UTC).
    """

    file: str
    step: int
    sha256: str
    score: float | None
    created: float


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(directory: Path, name: str, prefix: str, write) -> str:
    """Write via ``write(fileobj)`` to a temp file, fsync, rename to ``name``; return its sha256."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        digest = sha256_file(tmp)  # the bytes that are now on disk, read back after fsync
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return digest


def _best_of(entries: list[CheckpointEntry]) -> CheckpointEntry | None:
    """Highest finite score; the earliest step wins ties (like SB3's EvalCallback's strict ``>``)."""
    scored = [e for e in entries if e.score is not None]
    return max(scored, key=lambda e: (e.score, -e.step), default=None)


_SAFE_SCALARS = (type(None), bool, int, float, str, bytes, torch.dtype, torch.device, torch.Size)


def _check_weights_only_safe(obj: Any, where: str = "state") -> None:
    """Raise TypeError if ``obj`` holds anything ``torch.load(weights_only=True)`` would refuse.

    Exact types are checked on purpose: ``np.float64`` subclasses ``float`` but is
    pickled as a numpy object, which the weights-only unpickler rejects.
    """
    if isinstance(obj, torch.Tensor) or type(obj) in _SAFE_SCALARS:
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if type(key) not in (str, int):
                raise TypeError(f"{where}: key {key!r} of type {type(key).__name__} is not str or int")
            _check_weights_only_safe(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            _check_weights_only_safe(value, f"{where}[{i}]")
        return
    raise TypeError(f"{where} has type {type(obj).__module__}.{type(obj).__qualname__}, "
                    "which torch.load(weights_only=True) cannot load; convert it to tensors/primitives")


class CheckpointStore:
    """A directory of atomically written, sha256-verified checkpoints.

    Args:
        directory: created if missing.
        keep_last: how many most recent checkpoints (by step) to keep, >= 1. The
            best-scoring one (highest finite score, earliest on ties) is kept as well.
    """

    def __init__(self, directory: str | Path, *, keep_last: int = 3):
        if int(keep_last) < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep_last = int(keep_last)
        self.manifest_problem: str | None = None
        self._entries: list[CheckpointEntry] = []
        self._entries = self._read_manifest()

    # ------------------------------------------------------------------ manifest
    def _read_manifest(self) -> list[CheckpointEntry]:
        path = self.directory / MANIFEST
        if not path.exists():
            self.manifest_problem = None if not self.unlisted_files() else "manifest.json is missing"
            return []
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != _FORMAT:
                raise ValueError(f"unknown manifest format {doc.get('format')!r}")
            entries = [self._parse_entry(row) for row in doc["entries"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.manifest_problem = f"manifest.json is unreadable ({type(exc).__name__}: {exc})"
            return []
        self.manifest_problem = None
        return sorted(entries, key=lambda e: e.step)

    @staticmethod
    def _parse_entry(row: Mapping[str, Any]) -> CheckpointEntry:
        file, step, sha, score, created = (row[k] for k in ("file", "step", "sha256", "score", "created"))
        match = _FILE_RE.fullmatch(file) if isinstance(file, str) else None
        if match is None or type(step) is not int or int(match.group(1)) != step:
            raise ValueError(f"bad entry file/step: {file!r}, {step!r}")  # also blocks path traversal
        if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            raise ValueError(f"bad sha256 for {file}")
        if score is not None and type(score) not in (int, float):
            raise ValueError(f"bad score for {file}")
        return CheckpointEntry(file, step, sha, None if score is None else float(score), float(created))

    def _write_manifest(self, entries: list[CheckpointEntry]) -> None:
        payload = json.dumps({"format": _FORMAT, "entries": [asdict(e) for e in entries]},
                             indent=1, allow_nan=False).encode("utf-8")
        _atomic_write(self.directory, MANIFEST, ".manifest_", lambda f: f.write(payload))
        self._entries = list(entries)
        self.manifest_problem = None

    # ------------------------------------------------------------------ queries
    def entries(self) -> list[CheckpointEntry]:
        """The manifest's entries, sorted by step (ascending)."""
        return list(self._entries)

    def best(self) -> CheckpointEntry | None:
        """The entry with the highest finite score (earliest on ties), or None."""
        return _best_of(self._entries)

    def path(self, entry: CheckpointEntry) -> Path:
        return self.directory / entry.file

    def unlisted_files(self) -> list[Path]:
        """``ckpt_*.pt`` files on disk that the manifest does not list (never loaded, never deleted)."""
        listed = {e.file for e in self._entries}
        return sorted(p for p in self.directory.iterdir() if _FILE_RE.fullmatch(p.name) and p.name not in listed)

    # ------------------------------------------------------------------ save
    def save(self, step: int, state: Mapping[str, Any], *, score: float | None = None) -> CheckpointEntry:
        """Write ``state`` as the checkpoint of ``step`` and record it in the manifest.

        ``state`` must be loadable with ``weights_only=True`` (tensors, primitives,
        lists/tuples/dicts); anything else raises TypeError before a byte is written.
        A save at ``step`` starts the timeline from there: entries with a larger
        step (left over from before a rollback) are dropped, as is an existing entry
        of the same step. Then the ``keep_last`` newest plus the best are kept and
        the other files deleted (after the manifest no longer lists them).
        """
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        state = dict(state)
        _check_weights_only_safe(state)
        self._remove_stale_tmp()
        name = f"ckpt_{step:012d}.pt"
        sha = _atomic_write(self.directory, name, ".ckpt_", lambda f: torch.save(state, f))
        finite = score is not None and math.isfinite(float(score))
        entry = CheckpointEntry(name, step, sha, float(score) if finite else None, time.time())

        kept = [e for e in self._entries if e.step < step] + [entry]
        best = _best_of(kept)
        keep = {e.file for e in kept[-self.keep_last:]} | ({best.file} if best else set())
        dropped = [e for e in self._entries if e.file not in keep and e.file != name]
        self._write_manifest([e for e in kept if e.file in keep])
        for e in dropped:
            self.path(e).unlink(missing_ok=True)
        return entry

    def _remove_stale_tmp(self) -> None:
        """Delete temp files left by a save that was killed (safe: one writer per directory)."""
        for p in self.directory.iterdir():
            if p.name.startswith(_TMP_PREFIXES) and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ load
    def load(self, entry: CheckpointEntry) -> dict:
        """Verify ``entry``'s sha256, then load it on CPU with ``weights_only=True``.

        Raises:
            CorruptCheckpointError: the file is missing, its sha256 differs, or it does not load.
        """
        path = self.path(entry)
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise CorruptCheckpointError(entry, f"unreadable file ({exc.strerror or exc})") from exc
        if actual != entry.sha256:
            raise CorruptCheckpointError(entry, f"sha256 mismatch (manifest {entry.sha256[:12]}…, file {actual[:12]}…)")
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:  # zip errors, UnpicklingError for unsafe content, ...
            raise CorruptCheckpointError(entry, f"torch.load(weights_only=True) failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(state, dict):
            raise CorruptCheckpointError(entry, f"holds a {type(state).__name__}, not a dict")
        return state

    def _first_good(self, candidates: list[CheckpointEntry], what: str):
        skipped: list[tuple[CheckpointEntry, str]] = []
        for entry in candidates:
            try:
                return entry, self.load(entry), skipped
            except CorruptCheckpointError as exc:
                skipped.append((entry, exc.reason))
        problems = [self.manifest_problem] if self.manifest_problem else []
        problems += [f"{e.file}: {reason}" for e, reason in skipped]
        detail = "; ".join(problems) or "no checkpoints saved"
        raise NoCheckpointError(f"no usable {what} checkpoint in {self.directory} ({detail})")

    def load_latest_good(self, *, max_step: int | None = None) -> tuple[CheckpointEntry, dict, list[tuple[CheckpointEntry, str]]]:
        """Load the newest entry (step <= ``max_step`` if given) that verifies and loads.

        Returns ``(entry, state, skipped)``; ``skipped`` lists the newer entries that
        were unusable, each with the reason, for the caller to log.

        Raises:
            NoCheckpointError: nothing usable (the message lists every skip).
        """
        candidates = [e for e in reversed(self._entries) if max_step is None or e.step <= max_step]
        return self._first_good(candidates, "" if max_step is None else f"(step <= {max_step})")
