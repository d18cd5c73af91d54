"""TFRecord files -> batched, parsed `tf.data.Dataset` for one input pipeline.

Training data is sharded by file (or by record when there are fewer files
than pipelines), shuffled, repeated and batched with a static batch size.
Evaluation data is read once, in order, and its last batch is padded with
copies of a zeroed example whose `labels['valid']` is False, so every batch
has the same static shape (TPUs need it) and no image is dropped.
Records that fail to parse (corrupt images) are skipped and counted, in
training and evaluation alike, instead of ending the run.
"""
from typing import Callable, Optional

from absl import logging
import tensorflow as tf

from spinenet.data import pipeline

AUTOTUNE = tf.data.AUTOTUNE


def _files(file_pattern):
  patterns = file_pattern.split(',') if isinstance(file_pattern, str) else list(
      file_pattern)
  files = []
  for pattern in patterns:
    matched = tf.io.gfile.glob(pattern.strip())
    if not matched:
      raise ValueError(f'No file matches {pattern!r} (from file_pattern='
                       f'{file_pattern!r}); check the path or run '
                       '`spinenet-create-coco-tfrecord` first.')
    files.extend(sorted(matched))
  return files


def build_dataset(file_pattern,
                  decode_fn: Callable,
                  parse_fn: Callable,
                  global_batch_size: int,
                  training: bool,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  shuffle_buffer: int = 1000,
                  cache: bool = False,
                  seed: Optional[int] = None,
                  skip_counter: Optional[tf.Variable] = None) -> tf.data.Dataset:
  """Builds one input pipeline's dataset.

  Args:
    file_pattern: glob (or comma-separated globs) of TFRecord files; local
      paths or `gs://`.
    decode_fn: serialized `tf.Example` -> dict (e.g.
      `DetectionDecoder(decode_image=False).decode`).
    parse_fn: decoded dict -> `(features, labels)` with static shapes.
    global_batch_size: int. Divided by the number of replicas per pipeline.
    training: bool. Shuffle, repeat and drop the remainder; else one pass,
      in order, with a padded last batch and `labels['valid']`.
    input_context: `tf.distribute.InputContext` of this pipeline (None: one
      pipeline, one replica).
    shuffle_buffer: examples in the shuffle buffer.
    cache: keep the serialized records in memory after the first pass
      (small datasets).
    seed: optional int for reproducible file order and shuffling.
    skip_counter: optional int64 scalar `tf.Variable` (created outside any
      strategy scope), incremented for each record that fails to parse.

  Returns:
    `tf.data.Dataset` of `(features, labels)` batched to the per-replica
    batch size.
  """
  files = _files(file_pattern)
  batch_size = global_batch_size
  num_pipelines, pipeline_id = 1, 0
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(global_batch_size)
    num_pipelines = input_context.num_input_pipelines
    pipeline_id = input_context.input_pipeline_id
  dataset = tf.data.Dataset.from_tensor_slices(files)
  shard_records = num_pipelines > 1 and len(files) < num_pipelines
  if num_pipelines > 1 and not shard_records:
    dataset = dataset.shard(num_pipelines, pipeline_id)
  if training:
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  dataset = dataset.interleave(
      tf.data.TFRecordDataset, cycle_length=min(len(files), 16),
      num_parallel_calls=AUTOTUNE, deterministic=not training)
  if shard_records:
    logging.info('%d file(s) for %d input pipelines: sharding by record',
                 len(files), num_pipelines)
    dataset = dataset.shard(num_pipelines, pipeline_id)
  if cache:
    dataset = dataset.cache()
  if training:
    dataset = dataset.repeat()
    if shuffle_buffer > 1:
      dataset = dataset.shuffle(shuffle_buffer, seed=seed)
  # A record that fails to decode or parse (a corrupt image) is skipped,
  # logged with a running count and counted in `skip_counter`; the epoch
  # goes on.
  dataset = pipeline.map_skipping_failures(
      dataset, lambda s: parse_fn(decode_fn(s)), deterministic=not training,
      skip_counter=skip_counter)
  if training:
    dataset = dataset.batch(batch_size, drop_remainder=True)
  else:
    dataset = pipeline.pad_last_batch(dataset, batch_size).batch(
        batch_size, drop_remainder=True)
  options = tf.data.Options()
  options.experimental_deterministic = not training
  dataset = dataset.with_options(options)
  return dataset.prefetch(AUTOTUNE)
