"""Distribution tests, each in child processes (devices are fixed per process).

* MirroredStrategy over 2 logical CPUs vs one device, same global batch:
  same loss and same weights after one step (sync batch norm, losses
  normalized by the global number of positives); also with Winograd convs;
  with the default per-replica normalizer, the mean of the two halves'
  losses, each divided by its own positives.
* MultiWorkerMirroredStrategy with 2 worker processes on 127.0.0.1: both
  train and end with the same weights.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import tiny

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train_worker.py')
_RECORDS_DIR = None


def _records_dir():
  global _RECORDS_DIR
  if _RECORDS_DIR is None:
    _RECORDS_DIR = tempfile.mkdtemp()
    tiny.make_records(_RECORDS_DIR)
  return _RECORDS_DIR


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _weights(npz, prefix=''):
  keys = sorted((k for k in npz.files if k.startswith(prefix + 'w')),
                key=lambda k: int(k[len(prefix) + 1:]))
  return [npz[k] for k in keys]


@pytest.mark.slow
def test_mirrored_matches_one_device():
  out = os.path.join(tempfile.mkdtemp(), 'parity.npz')
  subprocess.run([sys.executable, WORKER, 'parity', f'--records_dir={_records_dir()}',
                  f'--out={out}'], check=True, env=tiny.subprocess_env(), timeout=1800)
  r = np.load(out)
  assert int(r['mirrored_replicas']) == 2 and int(r['one_replicas']) == 1
  np.testing.assert_allclose(r['mirrored_loss'], r['one_loss'], rtol=1e-4)
  one, mirrored = _weights(r, 'one_'), _weights(r, 'mirrored_')
  initial = _weights(r, 'initial_')
  assert len(one) == len(mirrored) == len(initial) > 100
  moved = np.mean([np.any(a != b) for a, b in zip(one, initial)])
  assert moved > 0.5  # the step changed the model
  for a, b in zip(one, mirrored):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
  # Winograd convs (winograd_min_size=16: P3 and its blocks) under the
  # mirrored strategy: the same step as direct convs on one device.
  assert int(r['winograd_replicas']) == 2
  np.testing.assert_allclose(r['winograd_loss'], r['one_loss'], rtol=1e-4)
  for a, b in zip(one, _weights(r, 'winograd_')):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_mirrored_replica_normalizer_is_mean_of_replica_losses():
  # normalizer_scope='replica' (default): each replica divides by its own
  # positives; the halves differ, so this is not the global-batch loss.
  out = os.path.join(tempfile.mkdtemp(), 'replica.npz')
  subprocess.run([sys.executable, WORKER, 'replica_scope',
                  f'--records_dir={_records_dir()}', f'--out={out}'],
                 check=True, env=tiny.subprocess_env(), timeout=1800)
  r = np.load(out)
  assert int(r['replicas']) == 2
  assert r['half_positives'][0] != r['half_positives'][1]
  np.testing.assert_allclose(r['replica_loss'], r['replica_expected_loss'], rtol=1e-4)
  assert abs(float(r['replica_loss']) - float(r['global_loss'])) > 1e-3 * abs(
      float(r['global_loss']))


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes():
  ports = _free_ports(2)
  cluster = {'worker': [f'127.0.0.1:{p}' for p in ports]}
  model_dir = tempfile.mkdtemp()
  outs, procs = [], []
  for index in range(2):
    outs.append(os.path.join(model_dir, f'worker{index}.npz'))
    env = tiny.subprocess_env(TF_CONFIG=json.dumps(
        {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
    procs.append(subprocess.Popen(
        [sys.executable, WORKER, 'multi_worker', f'--records_dir={_records_dir()}',
         f'--model_dir={model_dir}', f'--out={outs[-1]}'], env=env))
  try:
    codes = [p.wait(timeout=900) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert codes == [0, 0]
  w0, w1 = np.load(outs[0]), np.load(outs[1])
  assert int(w0['step']) == int(w1['step']) == 4
  assert int(w0['replicas']) == 2
  for a, b in zip(_weights(w0), _weights(w1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The chief wrote the checkpoints into model_dir, the other worker elsewhere.
  assert os.path.exists(os.path.join(model_dir, 'ckpt-4.index'))
  assert os.path.exists(os.path.join(model_dir, '.workers', 'worker_1', 'ckpt-4.index'))
