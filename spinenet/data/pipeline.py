"""tf.data input: TFRecord shards -> parsed, batched, prefetched examples.

A record whose parsing fails (e.g. a corrupt image) is skipped, logged with
its position and a running count, and counted in an optional variable, so
one bad image never stops an epoch.
"""
import sys
from typing import Callable, Optional

from absl import logging
import tensorflow as tf

from spinenet.data import decoder as decoder_lib

AUTOTUNE = tf.data.AUTOTUNE


def make_parser_fn(parser, decode_image: bool = False):
  """Serialized tf.Example -> `parser(DetectionDecoder().decode(...))`.

  Args:
    parser: a `TrainParser` or `EvalParser` (anything taking
      `(data, seed=None)`).
    decode_image: passed to `DetectionDecoder`; False lets the parser decode
      only the part of a JPEG it keeps.

  Returns:
    `fn(serialized, seed=None) -> (image, labels)`, for `build_dataset`.
  """
  decoder = decoder_lib.DetectionDecoder(decode_image=decode_image)

  def parser_fn(serialized, seed=None):
    return parser(decoder.decode(serialized), seed=seed)

  return parser_fn


def _zeros_like_spec(spec):
  if not spec.shape.is_fully_defined():
    raise ValueError(
        'map_skipping_failures: the mapped function must return static '
        'shapes, so skipped records can be filtered out of a batch. Received '
        f'element spec {spec}')
  return tf.zeros(spec.shape, spec.dtype)


def pad_last_batch(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
  """Marks `(features, labels)` elements valid and appends invalid padding.

  For evaluation with static batch shapes: every element gets
  `labels['valid'] = True`, then `batch_size - 1` zeroed elements with
  `labels['valid'] = False` follow, so `.batch(batch_size,
  drop_remainder=True)` keeps every real element and drops only padding.
  The padding is built from the (static) element spec, not from a record, so
  the files are read once (a second read's look-ahead would parse, and count
  as skipped, corrupt records again).

  Args:
    dataset: unbatched `(features, labels)` with a dict `labels` and static
      shapes (as `map_skipping_failures` returns).
    batch_size: int, the batch size the caller batches with.

  Returns:
    The unbatched dataset, followed by the padding.
  """
  dataset = dataset.map(lambda features, labels: (
      features, dict(labels, valid=tf.constant(True))))
  # Boolean zeros are False: the padding's `valid`.
  padding = tf.nest.map_structure(_zeros_like_spec, dataset.element_spec)
  return dataset.concatenate(
      tf.data.Dataset.from_tensors(padding).repeat(batch_size - 1))


def _count_and_drop_failures(dataset, skip_counter):
  """Logs and counts elements with `ok = False`, then drops them."""

  def count(skipped, element):
    parsed, ok = element
    skipped += tf.cast(tf.logical_not(ok), tf.int64)
    if skip_counter is not None:
      skip_counter.assign_add(tf.cast(tf.logical_not(ok), tf.int64))

    def warn():
      # stderr, not logging.warning: that maps to TF's C++ log, which
      # TF_CPP_MIN_LOG_LEVEL=2 silences.
      tf.print('WARNING spinenet.data.pipeline: skipped a record that failed '
               'to parse (corrupt image?); records skipped so far:', skipped,
               output_stream=sys.stderr)
      return tf.constant(True)

    tf.cond(ok, lambda: tf.constant(False), warn)
    return skipped, (parsed, ok)

  def is_ok(parsed, ok):
    del parsed
    return ok

  def drop_flag(parsed, ok):
    del ok
    return parsed

  dataset = dataset.scan(tf.constant(0, tf.int64), count)
  return dataset.filter(is_ok).map(drop_flag)


def map_skipping_failures(dataset: tf.data.Dataset,
                          fn: Callable,
                          deterministic: bool = False,
                          skip_counter: Optional[tf.Variable] = None):
  """`dataset.map(fn)` in parallel, skipping the elements `fn` fails on.

  Use it in place of `map` for parsing: a corrupt image then costs one
  example (logged to stderr with a running count, and counted in
  `skip_counter`) instead of the epoch.

  Args:
    dataset: any `tf.data.Dataset`; a tuple element is passed to `fn` as
      positional arguments, as `map` does.
    fn: element -> nested tensors with static shapes.
    deterministic: keep the input order.
    skip_counter: optional int64 scalar `tf.Variable`, incremented for each
      skipped element; create it outside any `tf.distribute` strategy scope.

  Returns:
    `tf.data.Dataset` of `fn`'s outputs for the elements it succeeded on.
  """

  def attempt(*element):
    tried = tf.data.Dataset.from_tensors(element).map(
        lambda *e: (fn(*e), True)).ignore_errors(log_warning=True)
    fallback = tf.nest.map_structure(_zeros_like_spec, tried.element_spec[0])
    return tried.concatenate(
        tf.data.Dataset.from_tensors((fallback, False))).take(1)

  # One tiny dataset per record is how tf.data lets a map fail softly; a
  # parallel interleave of them costs about as much as a parallel map.
  dataset = dataset.interleave(
      attempt, cycle_length=AUTOTUNE, block_length=1,
      num_parallel_calls=AUTOTUNE, deterministic=deterministic)
  return _count_and_drop_failures(dataset, skip_counter)


def build_dataset(file_pattern: str,
                  parser_fn: Callable,
                  batch_size: int,
                  is_training: bool,
                  deterministic: bool = False,
                  cycle_length: int = 8,
                  shuffle_buffer: int = 1000,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  seed: Optional[int] = None,
                  skip_counter: Optional[tf.Variable] = None,
                  repeat: Optional[bool] = None) -> tf.data.Dataset:
  """Reads TFRecord shards into batches of parsed examples.

  Files are read by a parallel interleave (shuffled for training), records
  are shuffled (training), parsed in parallel, batched and prefetched.
  Records that `parser_fn` fails on are skipped and counted (see module
  docstring).

  Args:
    file_pattern: glob of TFRecord files, or several globs separated by
      commas.
    parser_fn: `fn(serialized, seed=None) -> element` with static shapes,
      e.g. `make_parser_fn(TrainParser(...))`.
    batch_size: GLOBAL batch size; with `input_context` each pipeline
      batches `input_context.get_per_replica_batch_size(batch_size)`.
    is_training: shuffle, repeat (unless `repeat` says otherwise) and drop
      the last partial batch (static batch dimension).
    deterministic: same elements in the same order on every run, and the
      same augmentation: `parser_fn` gets `seed=[seed, record index]`.
    cycle_length: files read at once.
    shuffle_buffer: records in the shuffle buffer (training only).
    input_context: `tf.distribute.InputContext` from
      `strategy.distribute_datasets_from_function`; files (or, with fewer
      files than pipelines, records) are sharded by pipeline.
    seed: shuffle and augmentation seed; defaults to 0 when `deterministic`.
    skip_counter: optional int64 scalar `tf.Variable`, incremented for each
      skipped record; create it outside any `tf.distribute` strategy scope.
    repeat: repeat forever; defaults to `is_training`.

  Returns:
    `tf.data.Dataset` of batched `parser_fn` outputs; the batch dimension is
    static when training, or when not training and the last batch is full.

  Raises:
    ValueError: if `file_pattern` matches no file.

  Example:
    ```python
    parser_fn = make_parser_fn(TrainParser(256, aug_scale_min=0.5,
                                           aug_scale_max=2.0))
    ds = build_dataset('records/train-*', parser_fn, batch_size=8,
                       is_training=True)
    images, labels = next(iter(ds))  # images: float32 [8, 256, 256, 3]
    ```
  """
  files = []
  for pattern in file_pattern.split(','):
    files.extend(sorted(tf.io.gfile.glob(pattern.strip())))
  if not files:
    raise ValueError(f'`file_pattern` {file_pattern!r} matched no files.')
  if deterministic and seed is None:
    seed = 0
  repeat = is_training if repeat is None else repeat
  per_pipeline_batch = batch_size
  shard_records = None
  if input_context is not None:
    per_pipeline_batch = input_context.get_per_replica_batch_size(batch_size)
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    if len(files) >= n:
      files = files[i::n]
    else:
      logging.warning('%d files for %d input pipelines: sharding records '
                      'instead of files (each pipeline reads every file).',
                      len(files), n)
      shard_records = (n, i)

  dataset = tf.data.Dataset.from_tensor_slices(files)
  if is_training:
    dataset = dataset.shuffle(len(files), seed=seed,
                              reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  dataset = dataset.interleave(
      lambda f: tf.data.TFRecordDataset(f, buffer_size=8 << 20),
      cycle_length=min(cycle_length, len(files)), block_length=1,
      num_parallel_calls=AUTOTUNE, deterministic=deterministic)
  if shard_records is not None:
    dataset = dataset.shard(*shard_records)
  if is_training:
    dataset = dataset.shuffle(shuffle_buffer, seed=seed,
                              reshuffle_each_iteration=True)
  if deterministic:
    # Augmentation seeded by (seed, record index): the same on every run.
    def fn(index, serialized):
      return parser_fn(serialized, seed=tf.stack(
          [tf.constant(seed, tf.int64), index]))
    dataset = dataset.enumerate()
  else:
    fn = parser_fn
  dataset = map_skipping_failures(dataset, fn, deterministic, skip_counter)
  dataset = dataset.batch(per_pipeline_batch, drop_remainder=is_training)
  options = tf.data.Options()
  options.deterministic = deterministic
  dataset = dataset.with_options(options)
  return dataset.prefetch(AUTOTUNE)
