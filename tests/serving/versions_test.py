"""The version scanner export and serving share."""
import os

import pytest

from spinenet.serving import versions


def _version(base, name, saved_model=True):
  os.makedirs(os.path.join(base, name))
  if saved_model:
    open(os.path.join(base, name, versions.SAVED_MODEL), 'w').close()


def test_scan_next_and_latest(tmp_path):
  base = str(tmp_path / 'model')
  assert versions.scan(base) == [] and versions.next_version(base) == 1
  _version(base, '2')
  _version(base, '10')
  _version(base, '11', saved_model=False)  # an export under way, or a failed one
  _version(base, 'notes')
  assert versions.scan(base) == [(2, os.path.join(base, '2')), (10, os.path.join(base, '10')),
                                 (11, os.path.join(base, '11'))]
  assert [v for v, _ in versions.scan(base, saved_models_only=True)] == [2, 10]
  assert versions.next_version(base) == 12  # never overwrites a numbered directory
  assert versions.latest_version(base) == (10, os.path.join(base, '10'))  # numeric, not text order


def test_latest_of_a_saved_model_itself_and_of_nothing(tmp_path):
  _version(str(tmp_path), 'one')
  assert versions.latest_version(str(tmp_path / 'one')) == (1, str(tmp_path / 'one'))
  with pytest.raises(FileNotFoundError, match=r'--model_base_path=.*holds no SavedModel'):
    versions.latest_version(str(tmp_path))
