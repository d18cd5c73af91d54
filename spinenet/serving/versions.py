"""The numbered version directories of a model base path (TF Serving's layout).

`spinenet-export` writes `BASE/<version>/saved_model.pb`; TF Serving and
`spinenet-serve` load the largest version. Both sides read the directory
through `scan`.
"""
import os
from typing import List, Tuple

import tensorflow as tf

SAVED_MODEL = 'saved_model.pb'


def scan(model_base_path: str, *, saved_models_only: bool = False
         ) -> List[Tuple[int, str]]:
  """`(version, path)` of each numeric subdirectory, in increasing version.

  Args:
    model_base_path: local directory or `gs://` path; a missing one has no
      versions.
    saved_models_only: keep only versions holding a `saved_model.pb`
      (what can be served); otherwise every numeric entry counts (what an
      export must not overwrite).

  Returns:
    Sorted list of `(int version, version directory)`.
  """
  if not tf.io.gfile.isdir(model_base_path):
    return []
  found = []
  for entry in tf.io.gfile.listdir(model_base_path):
    entry = entry.rstrip('/')
    if not entry.isdigit():
      continue
    path = os.path.join(model_base_path, entry)
    if saved_models_only and not tf.io.gfile.exists(os.path.join(path, SAVED_MODEL)):
      continue
    found.append((int(entry), path))
  return sorted(found)


def next_version(model_base_path: str) -> int:
  """1 + the largest numeric subdirectory of `model_base_path` (1 if none)."""
  return max((version for version, _ in scan(model_base_path)), default=0) + 1


def latest_version(model_base_path: str) -> Tuple[int, str]:
  """`(version, path)` of the largest version holding a SavedModel.

  A `model_base_path` that is itself a SavedModel is served as version 1.

  Raises:
    FileNotFoundError: no servable version, naming the path.
  """
  if tf.io.gfile.exists(os.path.join(model_base_path, SAVED_MODEL)):
    return 1, model_base_path
  versions = scan(model_base_path, saved_models_only=True)
  if not versions:
    raise FileNotFoundError(
        f'--model_base_path={model_base_path} holds no SavedModel version (expected '
        'numbered subdirectories such as 1/saved_model.pb, as spinenet-export writes).')
  return versions[-1]
