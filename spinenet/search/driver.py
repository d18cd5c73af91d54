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


def _rank(record):
  """Sort key of a finished record: higher reward, then lower trial id."""
  return (record['reward'], -record['trial'])


def best_trial(records):
  """The finished trial with the highest reward (lowest id on ties), or None."""
  ok = [r for r in records if r.get('status') == 'ok']
  return max(ok, key=_rank) if ok else None


def _search_config(options, space):
  """The settings a resumed search must share, as they read back from JSON."""
  return _json_round_trip({'algorithm': options.algorithm, 'seed': options.seed,
                           'algorithm_args': options.algorithm_args or {},
                           'space': dataclasses.asdict(space)})


class _Search:
  """The driver's side of one search directory: algorithm, state and records.

  Runs in the driver process. Every change a restart must see is saved
  (`TrialStore.save_state`) before the search moves on: a trial is saved as
  pending before any worker gets it, and its record is appended before the
  algorithm learns from it.

  Args:
    store: `trials.TrialStore` of the search directory.
    options: `SearchOptions`.
    space: `space.SearchSpace`.
    num_trials: total trials of the directory.
    on_best, on_trial: the callbacks of `run_search`.

  Attributes:
    records: finished trial records, in the order they finished.
    best: the best finished record (`best_trial`), or None.
    queued: ids of pending trials to hand out before proposing new ones.
  """

  def __init__(self, store, options, space, num_trials, on_best=None,
               on_trial=None):
    self.store, self.space, self.num_trials = store, space, num_trials
    self.max_attempts = options.max_attempts
    self.algorithm = algorithms.make_algorithm(options.algorithm, space,
                                               options.seed,
                                               **(options.algorithm_args or {}))
    self.config = _search_config(options, space)
    self.state = {'config': self.config, 'next_trial': 0, 'pending': {},
                  'told': []}
    self.records, self.best, self.queued = [], None, []
    self._on_best, self._on_trial = on_best, on_trial
    self._start_count, self._start_time = 0, time.monotonic()

  @property
  def done(self) -> bool:
    return len(self.records) >= self.num_trials

  @property
  def num_new(self) -> int:
    """Trials finished since `resume`."""
    return len(self.records) - self._start_count

  def _save(self):
    algo = self.algorithm.get_state()
    self.store.save_state(dict(self.state, algorithm=algo['json']), algo['arrays'])

  # === Resume ===
  def resume(self) -> None:
    """Picks up the directory: state, records, missed lessons, re-runs, best.

    Raises:
      ValueError: if the directory holds a search with other settings.
    """
    self._restore_state()
    self.records = self.store.read_trials()
    self._tell_unlearned()
    self._requeue_pending()
    self._save()
    self.best = best_trial(self.records)
    if self.best is not None and self._on_best is not None:
      self._on_best(self.best)
    self._start_count, self._start_time = len(self.records), time.monotonic()

  def _restore_state(self):
    """Loads the saved state and the algorithm's, if the directory has one."""
    saved = self.store.load_state()
    if saved is None:
      return
    meta, arrays = saved
    if meta['config'] != self.config:
      raise ValueError(
          f'{self.store.search_dir} holds a search with settings '
          f'{meta["config"]}, not {self.config}; resume with the same settings '
          'or use a new --search_dir.')
    self.algorithm.set_state({'json': meta['algorithm'], 'arrays': arrays})
    self.state = {k: meta[k] for k in self.state}

  def _tell_unlearned(self):
    """Tells the algorithm about trials that finished after the last save."""
    told = set(self.state['told'])
    for r in self.records:
      if r['trial'] not in told:
        logging.info('search | trial %d finished before the interruption; '
                     'telling the algorithm now', r['trial'])
        self.algorithm.tell(space_lib.Architecture.from_dict(r['architecture']),
                            r['reward'])
        self.state['told'].append(r['trial'])

  def _requeue_pending(self):
    """Queues the trials that were running when the search stopped."""
    finished = {r['trial'] for r in self.records}
    pending = self.state['pending']
    for key in sorted(pending, key=int):
      if int(key) in finished:
        del pending[key]
      else:
        pending[key]['attempts'] += 1
        logging.warning('search | re-running trial %s (interrupted in an '
                        'earlier run; attempt %d)', key, pending[key]['attempts'])
        self.queued.append(int(key))

  # === Propose ===
  def next_trial(self) -> Optional[int]:
    """Id of the next trial to hand out: a re-run, else a new proposal.

    None once every trial up to `num_trials` is finished or handed out.
    """
    if self.queued:
      return self.queued.pop(0)
    if len(self.records) + len(self.state['pending']) < self.num_trials:
      return self._propose()
    return None

  def _propose(self):
    """Asks the algorithm and saves the answer as a pending trial."""
    arch = self.algorithm.ask()
    trial_id = self.state['next_trial']
    self.state['next_trial'] += 1
    self.state['pending'][str(trial_id)] = {'architecture': arch.to_dict(),
                                            'attempts': 1}
    self._save()  # handed out only once it is saved as pending
    return trial_id

  def _architecture(self, trial_id):
    entry = self.state['pending'][str(trial_id)]
    return space_lib.Architecture.from_dict(entry['architecture'])

  def task(self, trial_id: int) -> tuple:
    """`(trial_id, block_specs, trial_dir)`: a worker's task for a pending trial."""
    return (trial_id, self.space.to_block_specs(self._architecture(trial_id)),
            self.store.trial_dir(trial_id))

  # === Record ===
  def finish(self, trial_id: int, outcome: dict, worker_id: int) -> None:
    """Records a pending trial's outcome, teaches the algorithm, calls back."""
    arch = self._architecture(trial_id)
    record = self._make_record(trial_id, arch, outcome, worker_id)
    self._record(trial_id, arch, record)
    self._call_back(record)
    self._log_progress(record)

  def lose(self, trial_id: int, worker_id: int) -> None:
    """A worker died running `trial_id`: queue it again, or fail it."""
    entry = self.state['pending'][str(trial_id)]
    if entry['attempts'] < self.max_attempts:
      entry['attempts'] += 1
      self._save()
      self.queued.insert(0, trial_id)
      logging.warning('search | re-running trial %d (attempt %d)', trial_id,
                      entry['attempts'])
    else:
      self.finish(trial_id, {'status': 'failed', 'seconds': 0.0,
                             'error': f'worker died {entry["attempts"]} times'},
                  worker_id)

  def _make_record(self, trial_id, arch, outcome, worker_id):
    """The line of `trials.jsonl`: the trial, its architecture and outcome."""
    entry = self.state['pending'][str(trial_id)]
    record = {'trial': trial_id, 'architecture': entry['architecture'],
              'block_specs': [list(s) for s in self.space.to_block_specs(arch)],
              'attempts': entry['attempts'], 'worker': worker_id,
              'finished_at': time.strftime('%Y-%m-%dT%H:%M:%S')}
    record.update(outcome)
    if record['status'] != 'ok':
      record['reward'] = 0.0  # the floor of AP: the algorithm learns to avoid it
      logging.error('search | trial %d failed:\n%s', trial_id,
                    record.get('error', ''))
    return _json_round_trip(record)  # in memory exactly as in the file

  def _record(self, trial_id, arch, record):
    """Appends the record, then moves the trial from pending to told."""
    self.store.append_trial(record)
    self.records.append(record)
    self.algorithm.tell(arch, record['reward'])
    self.state['told'].append(trial_id)
    del self.state['pending'][str(trial_id)]
    self._save()

  def _call_back(self, record):
    """`on_best` for a new best trial, then `on_trial` with every record."""
    # Same order as `best_trial`: trials finish out of order, so a tie goes
    # to the lower trial id, not to whichever finished first.
    if record['status'] == 'ok' and (self.best is None
                                     or _rank(record) > _rank(self.best)):
      self.best = record
      if self._on_best is not None:
        self._on_best(self.best)
    if self._on_trial is not None:
      self._on_trial(self.records)

  def _log_progress(self, record):
    rate = (time.monotonic() - self._start_time) / self.num_new
    left = self.num_trials - len(self.records)
    eta = time.strftime('%H:%M:%S', time.gmtime(rate * left))
    best = self.best
    logging.info('search | trial %d done in %.0f s: reward %.4f | best %.4f '
                 '(trial %d) | %d/%d trials | %.1f min/trial | ETA %s',
                 record['trial'], record['seconds'], record['reward'],
                 best['reward'] if best else float('nan'),
                 best['trial'] if best else -1, len(self.records),
                 self.num_trials, rate / 60, eta)

  def result(self) -> dict:
    return {'trials': self.records, 'best': self.best, 'num_new': self.num_new}


class _WorkerPool:
  """The spawned worker processes, the trial each runs, and their results.

  Args:
    num_workers: processes to start.
    evaluate_fn: picklable `(block_specs, trial_dir) -> dict`.
    threads: CPU threads of each worker's TensorFlow.
  """

  def __init__(self, num_workers, evaluate_fn, threads):
    self._ctx = multiprocessing.get_context('spawn')
    self._results = self._ctx.Queue()
    self._evaluate_fn, self._threads = evaluate_fn, threads
    self.workers = [self._start(w) for w in range(num_workers)]

  def _start(self, worker_id):
    return _Worker(self._ctx, worker_id, self._evaluate_fn, self._threads,
                   self._results)

  def idle(self):
    return [w for w in self.workers if w.trial is None]

  def busy(self):
    return [w for w in self.workers if w.trial is not None]

  def dispatch(self, worker, task):
    """Hands `task` (`_Search.task`) to an idle worker."""
    worker.trial = task[0]
    worker.tasks.put(task)

  def collect(self, timeout):
    """`(worker_id, trial_id, outcome)` of the next finished trial, or None.

    Waits at most `timeout` seconds; the worker becomes idle.
    """
    try:
      worker_id, trial_id, outcome = self._results.get(timeout=timeout)
    except queue.Empty:
      return None
    self.workers[worker_id].trial = None
    return worker_id, trial_id, outcome

  def replace_dead(self):
    """Restarts every worker that died running a trial.

    Returns:
      `[(worker_id, trial_id)]` of the trials those workers were running.
    """
    lost = []
    for i, worker in enumerate(self.workers):
      if worker.trial is not None and not worker.process.is_alive():
        logging.error('search | worker %d died (exit code %s) running trial %d',
                      worker.id, worker.process.exitcode, worker.trial)
        lost.append((worker.id, worker.trial))
        self.workers[i] = self._start(worker.id)
    return lost

  def shutdown(self):
    """Stops every worker (None, then SIGTERM, then SIGKILL; `_Worker.stop`)."""
    for worker in self.workers:
      worker.stop()


def _run_trials(search, pool, poll_seconds):
  """Hands trials to idle workers and records results until `search.done`."""
  while not search.done:
    for worker in pool.idle():
      trial_id = search.next_trial()
      if trial_id is None:
        break
      pool.dispatch(worker, search.task(trial_id))
    if not pool.busy():
      break
    result = pool.collect(poll_seconds)
    if result is not None:
      worker_id, trial_id, outcome = result
      search.finish(trial_id, outcome, worker_id)
    else:  # nothing finished in time: check that the workers are alive
      for worker_id, trial_id in pool.replace_dead():
        search.lose(trial_id, worker_id)


def run_search(evaluate_fn: EvaluateFn, search_dir: str, num_trials: int,
               num_workers: int = 1,
               options: SearchOptions = SearchOptions(),
               space: space_lib.SearchSpace = space_lib.SearchSpace(),
               on_best: Optional[Callable[[dict], None]] = None,
               on_trial: Optional[Callable[[list], None]] = None,
               poll_seconds: float = 1.0) -> dict:
  """Runs (or resumes) a search until `search_dir` holds `num_trials` trials.

  Resumes the directory's state (`_Search.resume`), starts the workers, then
  hands out trials (re-runs first, then the algorithm's proposals) and
  records each result (`_run_trials`) until enough trials are finished;
  the workers are stopped on the way out, whatever happened.

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
  search = _Search(trials_lib.TrialStore(search_dir), options, space,
                   num_trials, on_best=on_best, on_trial=on_trial)
  search.resume()
  if search.done:
    logging.info('search | %s already holds %d trials (asked for %d)',
                 search_dir, len(search.records), num_trials)
    return search.result()
  pool = _WorkerPool(num_workers, evaluate_fn, options.threads_per_worker)
  logging.info('search | %s: %d/%d trials done, %d workers x %d threads, '
               'algorithm %s', search_dir, len(search.records), num_trials,
               num_workers, options.threads_per_worker, options.algorithm)
  try:
    _run_trials(search, pool, poll_seconds)
  finally:
    pool.shutdown()
  return search.result()


def _json_round_trip(value):
  return json.loads(json.dumps(value))
