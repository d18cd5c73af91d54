"""What a search directory holds, written so that a crash loses nothing.

  DIR/trials.jsonl   one JSON object per finished trial, append-only, each
                     line flushed and fsync'ed before the search moves on
  DIR/state.npz      the search state: the algorithm's (RNG, population or
                     controller weights), the next trial id, the trials
                     handed out but not finished (pending), the trials the
                     algorithm has learned from; replaced atomically
  DIR/trials/<id>/   each trial's working directory (checkpoints, metrics)
  DIR/best.gin, DIR/best.png   the best architecture so far

A trial is pending from the moment it is handed out (saved in the state
before any worker sees it) until its line is in `trials.jsonl`; a restarted
search re-runs pending trials under the same id and architecture, and tells
the algorithm about finished trials it had not yet learned from. So no trial
is lost, and none runs twice once finished.
"""
import io
import json
import os
from typing import Dict, List

from absl import logging
import numpy as np

TRIALS_FILE = 'trials.jsonl'
STATE_FILE = 'state.npz'


class TrialStore:
  """Reads and writes one search directory.

  Args:
    search_dir: local directory (created if missing).
  """

  def __init__(self, search_dir: str):
    self.search_dir = search_dir
    os.makedirs(search_dir, exist_ok=True)
    self.trials_path = os.path.join(search_dir, TRIALS_FILE)
    self.state_path = os.path.join(search_dir, STATE_FILE)
    self._repair_trials_file()

  def trial_dir(self, trial_id: int) -> str:
    return os.path.join(self.search_dir, 'trials', f'{trial_id:05d}')

  # === trials.jsonl ===
  def _repair_trials_file(self):
    """Drops a last line cut short by a crash (it never counted as written)."""
    if not os.path.exists(self.trials_path):
      return
    with open(self.trials_path, 'rb+') as f:
      data = f.read()
      if data and not data.endswith(b'\n'):
        keep = data.rfind(b'\n') + 1
        logging.warning('%s: dropping an unfinished last line (%d bytes) left by '
                        'an interrupted write.', self.trials_path, len(data) - keep)
        f.truncate(keep)

  def read_trials(self) -> List[dict]:
    """Finished trials, in the order they finished."""
    if not os.path.exists(self.trials_path):
      return []
    trials = []
    with open(self.trials_path) as f:
      for number, line in enumerate(f, 1):
        if line.strip():
          try:
            trials.append(json.loads(line))
          except json.JSONDecodeError as e:
            raise ValueError(f'{self.trials_path}:{number}: not a JSON line '
                             f'({e}); fix or remove that line.') from None
    return trials

  def append_trial(self, record: dict) -> None:
    """Appends one finished trial and waits until it is on disk."""
    line = json.dumps(record, sort_keys=True) + '\n'
    with open(self.trials_path, 'a') as f:
      f.write(line)
      f.flush()
      os.fsync(f.fileno())

  # === state.npz ===
  def load_state(self):
    """`(json dict, {name: array})` of the saved state, or None."""
    if not os.path.exists(self.state_path):
      return None
    with np.load(self.state_path, allow_pickle=False) as data:
      meta = json.loads(str(data['__json__']))
      arrays = {k: data[k] for k in data.files if k != '__json__'}
    return meta, arrays

  def save_state(self, meta: dict, arrays: Dict[str, np.ndarray]) -> None:
    """Writes the state to a temporary file, fsyncs and renames it over the old."""
    buffer = io.BytesIO()
    np.savez(buffer, __json__=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    tmp = self.state_path + '.tmp'
    with open(tmp, 'wb') as f:
      f.write(buffer.getvalue())
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.state_path)
