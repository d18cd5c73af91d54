"""Cheap `evaluate_fn`s for the driver tests (imported by spawned workers)."""
import os
import time

from spinenet.search import surrogate


def _trial_id(trial_dir):
  return int(os.path.basename(trial_dir))


def closeness_trial(block_specs, trial_dir):
  """Reward = closeness to SpineNet-49; records the worker's thread limit."""
  with open(os.path.join(trial_dir, 'ran'), 'w') as f:
    f.write(os.environ.get('TF_NUM_INTRAOP_THREADS', ''))
  return {'reward': surrogate.closeness(block_specs), 'params': len(block_specs),
          'flops': None}


def slow_trial(block_specs, trial_dir):
  time.sleep(1.0)
  return closeness_trial(block_specs, trial_dir)


def crash_once_trial(block_specs, trial_dir):
  """Trial 1's worker process dies the first time (as if killed)."""
  marker = os.path.join(os.path.dirname(os.path.dirname(trial_dir)), 'crashed')
  if _trial_id(trial_dir) == 1 and not os.path.exists(marker):
    open(marker, 'w').close()
    os._exit(3)  # pylint: disable=protected-access
  return closeness_trial(block_specs, trial_dir)


def failing_trial(block_specs, trial_dir):
  if _trial_id(trial_dir) == 1:
    raise RuntimeError('loss became NaN (fake)')
  return closeness_trial(block_specs, trial_dir)


def tied_trial_first_is_slowest(block_specs, trial_dir):
  """Every trial scores 0.5; trial 0 finishes last, so ties finish out of order."""
  del block_specs
  time.sleep(3.0 if _trial_id(trial_dir) == 0 else 0.0)
  return {'reward': 0.5, 'params': 1, 'flops': None}
