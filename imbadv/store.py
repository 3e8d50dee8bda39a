"""Store stage: content-addressed trained models and results, trained and computed once, shared by all jobs."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from safetensors.torch import load_file, save_file
from torch import nn

# Bump when the meaning of a stored model or result changes, so old files are never reused.
FORMAT_VERSION = 1


def content_key(spec: dict) -> str:
    """Stable 16-hex-digit key of everything that defines a model or a result."""
    blob = json.dumps({"format": FORMAT_VERSION, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    """Write through `write(tmp)` then rename into place: a killed job leaves no file under `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: Path, data: dict) -> None:
    """JSON written to a temporary name and renamed into place."""
    atomic_write_bytes(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, default=str)))


def read_json(path: Path) -> dict | None:
    """The parsed file, or None (with a warning) when it is missing or does not parse."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        warnings.warn(f"ignoring unreadable {path}: {err}", stacklevel=2)
        return None


class Store:
    """Models under `root/models/<key>.safetensors` with a `<key>.json` record (written last, with the
    weights' size and sha256), results under `root/results/<key>.json`, locks under `root/locks/`.

    File locks (flock) make concurrent jobs train a model once; on NFS mounted without lock
    support they do not exclude each other (see docs/sweep.md).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.lock_wait_seconds = 0.0  # blocked on another job's model, result or images
        for sub in ("models", "results", "images", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def lock(self, key: str) -> FileLock:
        return FileLock(self.root / "locks" / f"{key}.lock")

    def busy(self, key: str) -> bool:
        """Whether another process holds the lock `key` now (it is training that model)."""
        try:
            with self.lock(key).acquire(timeout=0):
                return False
        except Timeout:
            return True

    def recorded(self, key: str) -> bool:
        """Whether model `key` has a record (written after its weights)."""
        return (self.root / "models" / f"{key}.json").exists()

    @contextmanager
    def held(self, key: str) -> Iterator[None]:
        """The lock `key`, held; the time spent waiting for it adds to `lock_wait_seconds`."""
        start = time.perf_counter()
        with self.lock(key):
            self.lock_wait_seconds += time.perf_counter() - start
            yield

    def load_model(self, key: str, model: nn.Module) -> dict | None:
        """Fill `model` with the stored weights and return the record, or None if absent or corrupt."""
        record = read_json(self.root / "models" / f"{key}.json")
        weights = self.root / "models" / f"{key}.safetensors"
        if record is None or not weights.exists():
            return None
        if weights.stat().st_size != record.get("size") or file_sha256(weights) != record.get(
            "sha256"
        ):
            warnings.warn(
                f"model {key} in {self.root} is corrupt (size/sha256); retraining", stacklevel=2
            )
            return None
        model.load_state_dict(load_file(weights, device="cpu"))
        return record

    def save_model(self, key: str, model: nn.Module, record: dict) -> dict:
        """Weights first, then the record that vouches for them: a record always means a whole file."""
        weights = self.root / "models" / f"{key}.safetensors"
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write_bytes(weights, lambda tmp: save_file(state, str(tmp)))
        record = {
            **record,
            "key": key,
            "size": weights.stat().st_size,
            "sha256": file_sha256(weights),
        }
        atomic_write_json(self.root / "models" / f"{key}.json", record)
        self._log("trainings", key)
        return record

    def _log(self, kind: str, key: str, **extra: int) -> None:
        # One line per piece of work done: how tests and users count that nothing ran twice.
        line = {"key": key, "time": time.time(), "pid": os.getpid(), **extra}
        with open(self.root / f"{kind}.jsonl", "a") as log:
            log.write(json.dumps(line) + "\n")

    def model(
        self, key: str, model: nn.Module, train: Callable[[nn.Module], dict]
    ) -> tuple[dict, bool]:
        """Load the model `key` into `model`, or train it once: (record, whether this call trained it)."""
        record = self.load_model(key, model)
        if record is not None:
            return record, False
        with self.held(key):
            record = self.load_model(key, model)  # another job may have finished it meanwhile
            if record is not None:
                return record, False
            return self.save_model(key, model, train(model)), True

    def offer(self, key: str, model: nn.Module, state: dict, record: dict) -> bool:
        """Store `state` (with `record`) as model `key` unless it is stored already; whether it was.

        For the second model one training run yields (a sibling selection rule's epoch). Never
        waits: a held lock means another job is training that model now (waiting could deadlock
        two jobs that each train one and offer the other)."""
        try:
            with self.lock(key).acquire(timeout=0):
                if self.load_model(key, model) is not None:
                    return False
                model.load_state_dict(state)
                self.save_model(key, model, record)
                return True
        except Timeout:
            return False

    def result(
        self, key: str, compute: Callable[[], dict], kind: str = "evaluations"
    ) -> tuple[dict, bool]:
        """The stored result `key`, or compute and store it once: (result, whether this call computed it).

        A stored file that does not parse is recomputed (with a warning), never used. `kind` names
        the work log the computation is recorded in.
        """
        path = self.root / "results" / f"{key}.json"
        result = read_json(path)
        if result is not None:
            return result, False
        with self.held(f"result-{key}"):
            result = read_json(path)
            if result is not None:
                return result, False
            result = compute()
            atomic_write_json(path, result)
            self._log(kind, key)
            return result, True

    def load_images(self, key: str) -> dict[str, np.ndarray] | None:
        """A stored adversarial image set (arrays `adv`, `zero_grads`), or None if absent or unreadable."""
        path = self.root / "images" / f"{key}.npz"
        if not path.exists():
            return None
        try:
            with np.load(path) as f:
                return {name: f[name] for name in f.files}
        except (OSError, ValueError, EOFError) as err:
            warnings.warn(
                f"image set {key} in {self.root} is unreadable ({err}); remaking it", stacklevel=2
            )
            return None

    def images(
        self,
        group: str,
        keys: dict[str, str],
        craft: Callable[[list[str]], dict[str, dict[str, np.ndarray]]],
    ) -> dict[str, dict[str, np.ndarray]]:
        """Each image set of `keys` (name -> key), the missing ones crafted once under `group`'s lock.

        `craft(names)` makes the missing sets together (one input gradient per batch serves every
        FGSM eps); each is stored exactly (float32, compressed) and logged under "craftings".
        """
        sets = {name: self.load_images(key) for name, key in keys.items()}
        if all(v is not None for v in sets.values()):
            return sets
        with self.held(f"images-{group}"):
            sets = {name: self.load_images(key) for name, key in keys.items()}
            missing = [name for name, v in sets.items() if v is None]
            if missing:
                for name, arrays in craft(missing).items():
                    self.save_images(keys[name], arrays)
                    sets[name] = arrays
        return sets

    def save_images(self, key: str, arrays: dict[str, np.ndarray], **log: int) -> None:
        """Store one image set exactly (float32, compressed) and log it under "craftings" (with
        `log`, e.g. stacked=K); the caller holds its group's lock."""
        path = self.root / "images" / f"{key}.npz"
        atomic_write_bytes(path, lambda tmp: _save_npz(tmp, arrays))
        self._log("craftings", key, **log)

    def work_log(self, kind: str = "trainings") -> list[dict]:
        """Every piece of work of `kind` ("trainings", "evaluations", "craftings") recorded, in order."""
        path = self.root / f"{kind}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: numpy would append .npz to a name
        np.savez_compressed(f, **arrays)
