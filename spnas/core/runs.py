"""Run directories: resolved config, JSONL log, atomic checkpoints, results.

Every command that trains writes one::

    runs/<name>/
      config.yaml       the resolved configuration (every option, after defaults)
      log.jsonl         one JSON record per step
      checkpoint.pt     the latest checkpoint (atomic replace; resume with --resume)
      result.yaml       the result, when the run has finished
      report.md, plots/ the report (spnas.report.writer)
      tb/               TensorBoard event files, when the tensorboard package is installed

Checkpoints hold tensors and plain data only and are read back with ``weights_only=True``.
Every numeric value of a logged record also goes to TensorBoard (``tensorboard --logdir runs``),
against the record's ``step`` (else ``trial``, else ``epoch``); ``SPNAS_TENSORBOARD=0`` turns that
off. log.jsonl stays the record; the event files are a view of it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from spnas.core.errors import SpnasError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never a torn one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        umask = os.umask(0)  # mkstemp makes the file 0600; give it the mode a plain open() would
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise SpnasError(f"{path}: cannot write ({exc.strerror or exc})") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _plain(value: Any) -> Any:
    """Dataclasses, paths and tuples -> YAML/JSON-friendly plain data."""
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True, width=10_000)


TENSORBOARD_DIR = "tb"
#: the record keys that can be TensorBoard's global step, in order of preference
STEP_KEYS = ("step", "trial", "epoch")


def _summary_writer_class() -> type | None:
    """torch's SummaryWriter, or None when ``SPNAS_TENSORBOARD=0`` or the tensorboard package is missing."""
    if os.environ.get("SPNAS_TENSORBOARD", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    import sys

    if "tensorflow" not in sys.modules and "tensorboard.compat.notf" not in sys.modules:
        # tensorboard imports all of TensorFlow when it is installed (6 s here, and log noise on
        # stderr) unless this module exists; scalars need only tensorboard's own stand-in for it.
        # A process that already holds TensorFlow (e.g. the tflite device) keeps using it.
        import types

        sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # ImportError, or a tensorboard/protobuf version torch cannot use
        return None
    return SummaryWriter


def tensorboard_scalars(record: dict) -> tuple[int, dict[str, float]] | None:
    """The global step and the ``{tag: value}`` scalars of a log record, or None if it has no step.

    Every int or float (not bool, not the step key itself) is a scalar; a record with a ``phase``
    (e.g. the sampling strategies' supernet training) gets it as a tag prefix (``supernet/ce``).
    """
    key = next((k for k in STEP_KEYS if isinstance(record.get(k), int) and not isinstance(record.get(k), bool)), None)
    if key is None:
        return None
    prefix = f"{record['phase']}/" if isinstance(record.get("phase"), str) else ""
    scalars = {f"{prefix}{k}": float(v) for k, v in record.items()
               if k != key and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return record[key], scalars


class RunDir:
    """One run directory. ``resume=False`` refuses to overwrite a directory holding a checkpoint."""

    def __init__(self, path: str | Path, resume: bool = False):
        self.path = Path(path)
        if self.checkpoint_path.exists() and not resume:
            raise SpnasError(
                f"{self.path}: already holds a run; pass --resume to continue it, or choose another --out"
            )
        if resume and not self.checkpoint_path.exists():
            raise SpnasError(f"{self.path}: nothing to resume (no {self.checkpoint_path.name})")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpnasError(f"{self.path}: cannot create run directory ({exc.strerror or exc})") from None
        self._log = None
        self._tb: Any = None  # the SummaryWriter, opened at the first record
        self._tb_off = False
        self._tb_purge_step: int | None = None

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def log_path(self) -> Path:
        return self.path / "log.jsonl"

    def write_config(self, config: Any) -> None:
        atomic_write_text(self.path / "config.yaml", dump_yaml(config))

    def write_result(self, result: Any, name: str = "result.yaml") -> Path:
        path = self.path / name
        atomic_write_text(path, dump_yaml(result))
        return path

    def log(self, record: dict) -> None:
        """Append one JSON line (flushed, so a killed run keeps every finished step)."""
        if self._log is None:
            try:
                self._log = open(self.log_path, "a", encoding="utf-8")
            except OSError as exc:
                raise SpnasError(f"{self.log_path}: cannot write ({exc.strerror or exc})") from None
        self._log.write(json.dumps(_plain(record)) + "\n")
        self._log.flush()
        self._tensorboard(record)

    def _tensorboard(self, record: dict) -> None:
        """Every numeric scalar of ``record`` to ``tb/``; silently off without tensorboard."""
        if self._tb_off:
            return
        if self._tb is None:
            writer_cls = _summary_writer_class()
            if writer_cls is None:
                self._tb_off = True
                return
            try:  # purge_step: after a resume, TensorBoard drops the events of the steps done again
                self._tb = writer_cls(log_dir=str(self.path / TENSORBOARD_DIR), purge_step=self._tb_purge_step,
                                      flush_secs=30)
            except Exception:  # an unwritable tb/ must not stop a run that can still log
                self._tb_off = True
                return
        scalars = tensorboard_scalars(record)
        if scalars is None:
            return
        step, values = scalars
        try:
            for tag, value in values.items():
                self._tb.add_scalar(tag, value, global_step=step)
        except Exception:  # e.g. a full disk: log.jsonl is the record, keep the run going without the view
            self._tb_off = True

    def truncate_log(self, keep_steps: int, key: str = "step") -> None:
        """Drop log lines whose ``key`` is past ``keep_steps`` (the ones written after the checkpoint a
        resume starts from), and a torn last line left by a killed process."""
        if not self.log_path.exists():
            return
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get(key, 0) <= keep_steps:
                kept.append(line)
        atomic_write_text(self.log_path, "".join(l + "\n" for l in kept))
        if key == "step" and self._tb is None:
            self._tb_purge_step = keep_steps + 1

    def save_checkpoint(self, state: dict) -> None:
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())

    def load_checkpoint(self) -> dict:
        return load_checkpoint(self.checkpoint_path)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_yaml(path: str | Path) -> Any:
    """A YAML file spnas wrote (config, result), read with ``yaml.safe_load``; a missing, unreadable
    or malformed file is a one-line SpnasError naming it."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpnasError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = " ".join(str(exc).split())[:160]
        raise SpnasError(f"{path}: cannot read ({first})") from None


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint safely (``weights_only=True``: no code runs from the file)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SpnasError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # torch raises many kinds for a corrupt or unsafe file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpnasError(f"{path}: not a valid spnas checkpoint ({first[:160]})") from None
    if not isinstance(state, dict) or "format" not in state:
        raise SpnasError(f"{path}: not a spnas checkpoint (no 'format' field)")
    return state
