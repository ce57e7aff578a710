"""Checksummed manifests of checkpoint directories: what makes a checkpoint complete.

`write_manifest(step_dir, step, meta)` hashes (sha256) and fsyncs every file of a step
directory Orbax has finished writing and writes `manifest.json` atomically:

    {"format": 1, "step": N, "meta": {...}, "created": unix time,
     "files": {"state/_METADATA": {"sha256": "...", "size": 472}, ...},
     "digest": sha256 of the canonical JSON of everything above}

`read_manifest` parses and checks one (its own digest included, so an edited manifest
is caught); `verify_files` checks every listed file's size and sha256. Pure files and
hashlib: no JAX, no Orbax.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


def hash_file(path: str, sync: bool = False) -> tuple[str, int]:
  h, size = hashlib.sha256(), 0
  with open(path, "rb") as f:
    while chunk := f.read(1 << 22):
      h.update(chunk)
      size += len(chunk)
    if sync:
      os.fsync(f.fileno())
  return h.hexdigest(), size


def fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _digest(body: dict) -> str:
  return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(step_dir: str, step: int, meta: dict) -> dict:
  """Hashes and fsyncs every file of `step_dir`, then writes its manifest atomically."""
  files = {}
  for root, dirs, names in os.walk(step_dir):
    dirs.sort()
    for name in sorted(names):
      rel = os.path.relpath(os.path.join(root, name), step_dir)
      if rel.startswith(MANIFEST):
        continue
      sha, size = hash_file(os.path.join(root, name), sync=True)
      files[rel] = {"sha256": sha, "size": size}
    fsync_dir(root)
  body = {"format": MANIFEST_FORMAT, "step": step, "meta": meta, "files": files, "created": time.time()}
  tmp = os.path.join(step_dir, MANIFEST + ".tmp")
  with open(tmp, "w") as f:
    json.dump({**body, "digest": _digest(body)}, f, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(step_dir, MANIFEST))
  fsync_dir(step_dir)
  return body


def read_manifest(step_dir: str) -> tuple[dict | None, str, str]:
  """`(manifest, '', '')`, or `(None, reason, detail)`.

  Reasons: 'empty' (an empty step directory), 'no-manifest', 'unreadable',
  'bad-manifest' (not JSON, wrong format, or failing its own digest: edited), and
  'vanished' (the step directory itself is gone).
  """
  path = os.path.join(step_dir, MANIFEST)
  try:
    with open(path, "rb") as f:  # bytes: a damaged (non-UTF-8) manifest is judged below, not raised here
      text = f.read()
  except FileNotFoundError:
    if not os.path.isdir(step_dir):
      return None, "vanished", "the directory disappeared"
    try:
      if not os.listdir(step_dir):
        return None, "empty", "the step directory is empty"
    except FileNotFoundError:
      return None, "vanished", "the directory disappeared"
    return None, "no-manifest", f"it has no {MANIFEST} (an interrupted or damaged checkpoint)"
  except OSError as e:
    return None, "unreadable", f"cannot read {MANIFEST}: {e.strerror or e}"
  try:
    m = json.loads(text)
    body = {k: m[k] for k in ("format", "step", "meta", "files", "created")}
    ok = (
      m["format"] == MANIFEST_FORMAT
      and isinstance(m["step"], int)
      and isinstance(m["meta"], dict)
      and isinstance(m["files"], dict)
      and all(isinstance(v.get("sha256"), str) and isinstance(v.get("size"), int) for v in m["files"].values())
      and m["digest"] == _digest(body)
    )
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    return None, "bad-manifest", f"{MANIFEST} is not a valid manifest ({type(e).__name__}: {e})"
  if not ok:
    return None, "bad-manifest", f"{MANIFEST} fails its own digest or format check"
  return body, "", ""


def verify_files(step_dir: str, manifest: dict) -> tuple[str, str] | None:
  """`(reason, detail)` for the first problem of the step's files against the manifest, or None.

  Reasons: 'missing-item' (a whole item directory such as state/ is gone), 'missing-file',
  'truncated' (size differs), 'checksum' (sha256 differs), 'unreadable', and 'vanished'
  (the step directory itself disappeared meanwhile: removed, not damaged).
  """
  files = manifest["files"]
  missing = [rel for rel in files if not os.path.isfile(os.path.join(step_dir, rel))]
  if missing:
    if not os.path.isdir(step_dir):
      return "vanished", "the directory disappeared"
    items = sorted({rel.split(os.sep)[0] for rel in missing if os.sep in rel})
    gone = [i for i in items if not os.path.isdir(os.path.join(step_dir, i))]
    if gone:
      return "missing-item", f"item {', '.join(i + '/' for i in gone)} is missing"
    more = f" and {len(missing) - 1} more files" if len(missing) > 1 else ""
    return "missing-file", f"{missing[0]}{more} listed in its manifest are missing"
  for rel, entry in sorted(files.items()):
    path = os.path.join(step_dir, rel)
    try:
      size = os.path.getsize(path)
      if size != entry["size"]:
        return "truncated", f"{rel} has {size} bytes, its manifest says {entry['size']}"
      sha, _ = hash_file(path)
    except FileNotFoundError:
      if not os.path.isdir(step_dir):
        return "vanished", "the directory disappeared"
      return "missing-file", f"{rel} disappeared"
    except OSError as e:
      return "unreadable", f"cannot read {rel}: {e.strerror or e}"
    if sha != entry["sha256"]:
      return "checksum", f"{rel} does not match its sha256 in the manifest"
  return None
