"""Runs a search: the algorithm proposes, worker processes evaluate, state on disk.

The driver process holds the search algorithm and the search directory
(`trials.TrialStore`); `num_workers` spawned processes each evaluate one
trial at a time with `evaluate_fn(block_specs, trial_dir) -> {'reward', ...}`
(the proxy task, or anything else that rewards an architecture), with
`threads_per_worker` CPU threads each.

Running the same call again on the same directory resumes: finished trials
are kept, trials that were running are re-run under the same id and
architecture, and the algorithm continues from its saved state (RNG,
population or controller weights). `num_trials` counts every trial of the
directory, so raising it extends a finished search.
"""
import dataclasses
import json
import multiprocessing
import os
import queue
import shutil
import time
import traceback
from typing import Callable, Dict, Optional

from absl import logging

from spinenet.search import algorithms
from spinenet.search import space as space_lib
from spinenet.search import trials as trials_lib

EvaluateFn = Callable[[tuple, str], Dict]


@dataclasses.dataclass(frozen=True)
class SearchOptions:
  """How to search.

  Attributes:
    algorithm: 'reinforce' (the paper's RNN controller), 'evolution' or
      'random'.
    seed: seed of the algorithm.
    algorithm_args: keyword arguments of the algorithm, e.g.
      `{'population_size': 8, 'tournament_size': 3}` for evolution or
      `{'learning_rate': 0.01}` for reinforce.
    threads_per_worker: CPU threads of each worker's TensorFlow.
    max_attempts: a trial whose worker process dies is re-run up to this
      many times in all (an exception in the trial fails it at once).
  """
  algorithm: str = 'reinforce'
  seed: int = 0
  algorithm_args: Optional[dict] = None
  threads_per_worker: int = 1
  max_attempts: int = 2

  def __post_init__(self):
    if self.algorithm not in algorithms.ALGORITHMS:
      raise ValueError(f'SearchOptions.algorithm must be one of '
                       f'{algorithms.ALGORITHMS}. Received: {self.algorithm!r}')
    if self.threads_per_worker < 1 or self.max_attempts < 1:
      raise ValueError('SearchOptions.threads_per_worker and max_attempts must '
                       f'be >= 1. Received: {self.threads_per_worker}, '
                       f'{self.max_attempts}')


def _limit_threads(threads):
  """CPU threads of this process's TensorFlow (read when its runtime starts)."""
  os.environ['OMP_NUM_THREADS'] = str(threads)
  os.environ['TF_NUM_INTRAOP_THREADS'] = str(threads)
  os.environ['TF_NUM_INTEROP_THREADS'] = '1'


def _worker_main(worker_id, evaluate_fn, threads, tasks, results):
  """Worker process: evaluates trials from `tasks` until it gets None."""
  _limit_threads(threads)
  while True:
    task = tasks.get()
    if task is None:
      return
    trial_id, block_specs, trial_dir = task
    start = time.monotonic()
    try:
      if os.path.exists(trial_dir):  # a re-run starts from scratch
        shutil.rmtree(trial_dir)
      os.makedirs(trial_dir)
      outcome = dict(evaluate_fn(block_specs, trial_dir), status='ok')
    except Exception:  # pylint: disable=broad-except
      outcome = {'status': 'failed', 'error': traceback.format_exc(limit=20)}
    outcome['seconds'] = round(time.monotonic() - start, 2)
    results.put((worker_id, trial_id, outcome))


class _Worker:
  """One spawned worker process and what it is running."""

  def __init__(self, ctx, worker_id, evaluate_fn, threads, results):
    self.id, self.trial = worker_id, None
    self.tasks = ctx.Queue()
    self.process = ctx.Process(
        target=_worker_main, name=f'search-worker-{worker_id}', daemon=True,
        args=(worker_id, evaluate_fn, threads, self.tasks, results))
    self.process.start()

  def stop(self, timeout=10.0):
    if self.process.is_alive():
      self.tasks.put(None)
      self.process.join(timeout)
    if self.process.is_alive():
      # SIGTERM first; training treats it as a preemption notice and may go
      # on to evaluate, so SIGKILL if the worker is still there.
      self.process.terminate()
      self.process.join(timeout)
    if self.process.is_alive():
      self.process.kill()
      self.process.join(timeout)


def best_trial(records):
  """The finished trial with the highest reward (earliest on ties), or None."""
  ok = [r for r in records if r.get('status') == 'ok']
  return max(ok, key=lambda r: (r['reward'], -r['trial'])) if ok else None


def run_search(evaluate_fn: EvaluateFn, search_dir: str, num_trials: int,
               num_workers: int = 1,
               options: SearchOptions = SearchOptions(),
               space: space_lib.SearchSpace = space_lib.SearchSpace(),
               on_best: Optional[Callable[[dict], None]] = None,
               on_trial: Optional[Callable[[list], None]] = None,
               poll_seconds: float = 1.0) -> dict:
  """Runs (or resumes) a search until `search_dir` holds `num_trials` trials.

  Args:
    evaluate_fn: picklable `(block_specs, trial_dir) -> dict` with `reward`
      (float, higher is better) and optionally `metrics`, `params`,
      `flops`; runs in the worker processes.
    search_dir: the search directory (see `trials`).
    num_trials: total trials of the directory.
    num_workers: worker processes.
    options: `SearchOptions`.
    space: `space.SearchSpace`.
    on_best: called in this process with the record of each new best trial
      (e.g. to write `best.gin`).
    on_trial: called in this process with all finished records after each
      trial (e.g. to plot the reward curve).
    poll_seconds: how often to check that workers are alive.

  Returns:
    dict with `trials` (finished trial records), `best` (record or None),
    `num_new` (trials finished by this call).

  Raises:
    ValueError: for a bad argument or a directory of another search.
  """
  if num_trials < 1 or num_workers < 1:
    raise ValueError(f'`num_trials` and `num_workers` must be >= 1. Received: '
                     f'num_trials={num_trials}, num_workers={num_workers}')
  store = trials_lib.TrialStore(search_dir)
  algorithm = algorithms.make_algorithm(options.algorithm, space, options.seed,
                                        **(options.algorithm_args or {}))
  config = {'algorithm': options.algorithm, 'seed': options.seed,
            'algorithm_args': options.algorithm_args or {},
            'space': dataclasses.asdict(space)}
  config = _json_round_trip(config)
  state = {'config': config, 'next_trial': 0, 'pending': {}, 'told': []}
  saved = store.load_state()
  if saved is not None:
    meta, arrays = saved
    if meta['config'] != config:
      raise ValueError(
          f'{search_dir} holds a search with settings {meta["config"]}, not '
          f'{config}; resume with the same settings or use a new --search_dir.')
    algorithm.set_state({'json': meta['algorithm'], 'arrays': arrays})
    state = {k: meta[k] for k in state}

  def save():
    algo = algorithm.get_state()
    store.save_state(dict(state, algorithm=algo['json']), algo['arrays'])

  records = store.read_trials()
  finished = {r['trial'] for r in records}
  told = set(state['told'])
  for r in records:  # finished after the last saved state: learn from them now
    if r['trial'] not in told:
      logging.info('search | trial %d finished before the interruption; telling '
                   'the algorithm now', r['trial'])
      algorithm.tell(space_lib.Architecture.from_dict(r['architecture']),
                     r['reward'])
      state['told'].append(r['trial'])
  queued = []
  for key in sorted(state['pending'], key=int):
    if int(key) in finished:
      del state['pending'][key]
    else:
      state['pending'][key]['attempts'] += 1
      logging.warning('search | re-running trial %s (interrupted in an earlier '
                      'run; attempt %d)', key, state['pending'][key]['attempts'])
      queued.append(int(key))
  save()

  best = best_trial(records)
  if best is not None and on_best is not None:
    on_best(best)
  start_count, start_time = len(records), time.monotonic()
  if len(records) >= num_trials:
    logging.info('search | %s already holds %d trials (asked for %d)',
                 search_dir, len(records), num_trials)
    return {'trials': records, 'best': best, 'num_new': 0}

  ctx = multiprocessing.get_context('spawn')
  results = ctx.Queue()
  workers = [_Worker(ctx, w, evaluate_fn, options.threads_per_worker, results)
             for w in range(num_workers)]
  logging.info('search | %s: %d/%d trials done, %d workers x %d threads, '
               'algorithm %s', search_dir, len(records), num_trials,
               num_workers, options.threads_per_worker, options.algorithm)

  def dispatch(worker, trial_id):
    entry = state['pending'][str(trial_id)]
    arch = space_lib.Architecture.from_dict(entry['architecture'])
    worker.trial = trial_id
    worker.tasks.put((trial_id, space.to_block_specs(arch),
                      store.trial_dir(trial_id)))

  def finish(trial_id, outcome, worker_id):
    nonlocal best
    entry = state['pending'][str(trial_id)]
    arch = space_lib.Architecture.from_dict(entry['architecture'])
    record = {'trial': trial_id, 'architecture': entry['architecture'],
              'block_specs': [list(s) for s in space.to_block_specs(arch)],
              'attempts': entry['attempts'], 'worker': worker_id,
              'finished_at': time.strftime('%Y-%m-%dT%H:%M:%S')}
    record.update(outcome)
    if record['status'] != 'ok':
      record['reward'] = 0.0  # the floor of AP: the algorithm learns to avoid it
      logging.error('search | trial %d failed:\n%s', trial_id,
                    record.get('error', ''))
    record = _json_round_trip(record)  # in memory exactly as in the file
    store.append_trial(record)
    records.append(record)
    algorithm.tell(arch, record['reward'])
    state['told'].append(trial_id)
    del state['pending'][str(trial_id)]
    save()
    if record['status'] == 'ok' and (best is None or record['reward'] > best['reward']):
      best = record
      if on_best is not None:
        on_best(best)
    if on_trial is not None:
      on_trial(records)
    done = len(records) - start_count
    rate = (time.monotonic() - start_time) / done
    eta = time.strftime('%H:%M:%S', time.gmtime(rate * (num_trials - len(records))))
    logging.info('search | trial %d done in %.0f s: reward %.4f | best %.4f '
                 '(trial %d) | %d/%d trials | %.1f min/trial | ETA %s', trial_id,
                 record['seconds'], record['reward'],
                 best['reward'] if best else float('nan'),
                 best['trial'] if best else -1, len(records), num_trials,
                 rate / 60, eta)

  try:
    while len(records) < num_trials:
      for worker in workers:
        if worker.trial is not None:
          continue
        if queued:
          dispatch(worker, queued.pop(0))
        elif len(records) + len(state['pending']) < num_trials:
          arch = algorithm.ask()
          trial_id = state['next_trial']
          state['next_trial'] += 1
          state['pending'][str(trial_id)] = {'architecture': arch.to_dict(),
                                             'attempts': 1}
          save()  # handed out only once it is saved as pending
          dispatch(worker, trial_id)
      busy = [w for w in workers if w.trial is not None]
      if not busy:
        break
      try:
        worker_id, trial_id, outcome = results.get(timeout=poll_seconds)
      except queue.Empty:
        for i, worker in enumerate(workers):
          if worker.trial is not None and not worker.process.is_alive():
            lost = worker.trial
            entry = state['pending'][str(lost)]
            logging.error('search | worker %d died (exit code %s) running trial '
                          '%d', worker.id, worker.process.exitcode, lost)
            if entry['attempts'] < options.max_attempts:
              entry['attempts'] += 1
              save()
              queued.insert(0, lost)
              logging.warning('search | re-running trial %d (attempt %d)', lost,
                              entry['attempts'])
            else:
              finish(lost, {'status': 'failed', 'seconds': 0.0,
                            'error': f'worker died {entry["attempts"]} times'},
                     worker.id)
            workers[i] = _Worker(ctx, worker.id, evaluate_fn,
                                 options.threads_per_worker, results)
        continue
      workers[worker_id].trial = None
      finish(trial_id, outcome, worker_id)
  finally:
    for worker in workers:
      worker.stop()
  return {'trials': records, 'best': best, 'num_new': len(records) - start_count}


def _json_round_trip(value):
  return json.loads(json.dumps(value))
