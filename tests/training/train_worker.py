"""Child process of the distributed and resume tests (not collected by pytest).

  python train_worker.py parity --records_dir=D --out=F.npz
      one training step of the same global batch on one device and on a
      MirroredStrategy over 2 logical CPUs (loss normalizer 'global'); saves
      losses and weights (and the initial weights).
  python train_worker.py replica_scope --records_dir=D --out=F.npz
      one mirrored step with the default 'replica' normalizer, and that
      loss computed by hand on one device from the two halves of the batch.
  python train_worker.py multi_worker --records_dir=D --model_dir=M --out=F.npz
      trains with MultiWorkerMirroredStrategy (TF_CONFIG from the parent);
      saves this worker's weights.
"""
import argparse
import os

import numpy as np
import tensorflow as tf

import tiny


def _records(directory):
  return {'train': os.path.join(directory, 'records', 'train-*.tfrecord'),
          'val': os.path.join(directory, 'records', 'val-*.tfrecord')}


def _two_cpus_and_task(args, normalizer_scope=None):
  """Splits the CPU into 2 logical devices, then the tiny task on the records.

  Before anything of spinenet's is imported: the logical devices must be set
  before TensorFlow initializes them.
  """
  cpu = tf.config.list_physical_devices('CPU')[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  from spinenet.training import losses, retinanet_task  # pylint: disable=g-import-not-at-top
  data = retinanet_task.DataOptions(_records(args.records_dir)['train'],
                                    global_batch_size=4, aug_rand_hflip=False,
                                    seed=0)
  loss_options = (losses.LossOptions() if normalizer_scope is None else
                  losses.LossOptions(normalizer_scope=normalizer_scope))
  return retinanet_task.RetinaNetTask(
      tiny.model_fn(init_stochastic_depth_rate=0.0, use_sync_bn=True), data,
      losses=loss_options)


def parity(args):
  task = _two_cpus_and_task(args, normalizer_scope='global')
  from spinenet.training import optimization, retinanet_task, trainer  # pylint: disable=g-import-not-at-top
  # The same model with Winograd 3x3 convs (same variables, same math).
  winograd_task = retinanet_task.RetinaNetTask(
      tiny.model_fn(init_stochastic_depth_rate=0.0, use_sync_bn=True,
                    winograd_min_size=16), task.train_data, losses=task.loss_options)
  options = optimization.OptimizerOptions(warmup_steps=0)
  step_options = trainer.StepOptions(weight_decay=4e-5, gradient_clip_norm=5.0)
  initial = batch = None
  results = {}
  for name, strategy, task in (
      ('one', tf.distribute.OneDeviceStrategy('/cpu:0'), task),
      ('mirrored', tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']), task),
      ('winograd', tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']),
       winograd_task)):
    with strategy.scope():
      model = task.build_model()
      optimizer = optimization.build_optimizer(options, 0.05)
    if initial is None:
      initial = model.get_weights()
      batch = next(iter(task.build_inputs(training=True)))
    model.set_weights(initial)
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).repeat())
    runner = trainer.Runner(task, model, optimizer, strategy, dataset,
                            global_batch_size=4, step_options=step_options)
    losses = [float(runner.train(tf.constant(1))['total_loss'])]
    results[f'{name}_loss'] = np.array(losses)
    results[f'{name}_replicas'] = np.array(strategy.num_replicas_in_sync)
    for i, w in enumerate(model.get_weights()):
      results[f'{name}_w{i}'] = w
  for i, w in enumerate(initial):
    results[f'initial_w{i}'] = w
  np.savez(args.out, **results)


def replica_scope(args):
  """The default 'replica' normalizer on 2 mirrored CPUs against a hand computation.

  Its own process: a MirroredStrategy created after others in one process
  reuses their collective instance keys, so a different sequence of
  collectives (no all-reduce of the positives here) would clash.
  """
  task = _two_cpus_and_task(args)
  from spinenet.training import losses as losses_lib, optimization, retinanet_task, trainer  # pylint: disable=g-import-not-at-top
  assert task.loss_options.normalizer_scope == 'replica'
  model = task.build_model()
  initial = model.get_weights()
  batch = next(iter(task.build_inputs(training=True)))
  # By hand, one device: forward the whole batch (sync batch norm sees the
  # global batch either way), each half normalized by its own positives.
  features, labels = batch
  outputs = model(features, training=True)
  halves = []
  for part in (slice(0, 2), slice(2, 4)):
    cut = lambda t, part=part: t[part]  # pylint: disable=cell-var-from-loop
    halves.append(float(task.build_losses(
        tf.nest.map_structure(cut, outputs),
        tf.nest.map_structure(cut, labels))['model_loss']))
  global_task = retinanet_task.RetinaNetTask(
      task._model_fn, task.train_data, losses=losses_lib.LossOptions(normalizer_scope='global'))  # pylint: disable=protected-access
  global_task.build_model()
  global_loss = float(global_task.build_losses(outputs, labels)['model_loss'])
  strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  with strategy.scope():
    model = task.build_model()
    optimizer = optimization.build_optimizer(
        optimization.OptimizerOptions(warmup_steps=0), 0.05)
  model.set_weights(initial)
  dataset = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(batch).repeat())
  runner = trainer.Runner(task, model, optimizer, strategy, dataset,
                          global_batch_size=4)
  loss = float(runner.train(tf.constant(1))['total_loss'])
  np.savez(args.out, replica_loss=loss, replica_expected_loss=np.mean(halves),
           global_loss=global_loss, replicas=strategy.num_replicas_in_sync,
           half_positives=[float(tf.reduce_sum(labels['box_weights'][p]))
                           for p in (slice(0, 2), slice(2, 4))])


def multi_worker(args):
  tf.config.threading.set_intra_op_parallelism_threads(1)
  from spinenet.training import optimization, retinanet_task, strategies, train_lib  # pylint: disable=g-import-not-at-top
  strategy = strategies.get_strategy('auto')
  assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), strategy
  records = _records(args.records_dir)
  data = retinanet_task.DataOptions(records['train'], global_batch_size=4,
                                    shuffle_buffer=4)
  task = retinanet_task.RetinaNetTask(tiny.model_fn(use_sync_bn=True), data)
  experiment = train_lib.build_experiment(
      task, 'train', args.model_dir, strategy,
      optimization.OptimizerOptions(warmup_steps=1, learning_rate=0.05),
      train_lib.TrainerOptions(train_steps=4, steps_per_loop=2,
                               checkpoint_interval=2))
  try:
    result = train_lib.run(experiment, 'train')
  finally:
    experiment.close()
  np.savez(args.out, step=result['step'],
           replicas=strategy.num_replicas_in_sync,
           **{f'w{i}': w for i, w in enumerate(experiment.model.get_weights())})


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('mode', choices=['parity', 'replica_scope', 'multi_worker'])
  parser.add_argument('--records_dir', required=True)
  parser.add_argument('--model_dir')
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  {'parity': parity, 'replica_scope': replica_scope,
   'multi_worker': multi_worker}[args.mode](args)


if __name__ == '__main__':
  main()
