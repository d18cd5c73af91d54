"""The one tf.data input path: examples -> parsed, batched, prefetched batches.

`build_dataset` serves every task (detection, classification, the search
proxy) and the input benchmark; each passes its own decoder and parser. It
lists and shards the files (or takes an already-made dataset of examples,
e.g. from TFDS), shuffles, caches, repeats, parses in parallel with a
per-example augmentation seed, batches per replica and, for evaluation, pads
the last batch.

A record whose parsing fails (e.g. a corrupt image) is skipped, logged with
its position and a running count, and counted in an optional variable, so
one bad image never stops an epoch.
"""
import sys
from typing import Callable, List, Optional, Sequence, Union

from absl import logging
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


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




def list_files(file_pattern: Union[str, Sequence[str]],
               name: str = 'file_pattern') -> List[str]:
  """The files matched by a glob, comma-separated globs, or a list of globs.

  Args:
    file_pattern: e.g. `'records/train-*'`, `'a/*.tfrecord,b/*.tfrecord'`;
      local paths or `gs://`.
    name: what `file_pattern` is called in error messages (e.g. the option
      it came from).

  Returns:
    The matched paths, sorted within each glob, globs in the given order.

  Raises:
    ValueError: naming the glob, if one matches no file.
  """
  patterns = (file_pattern.split(',') if isinstance(file_pattern, str)
              else list(file_pattern))
  files = []
  for pattern in patterns:
    matched = tf.io.gfile.glob(pattern.strip())
    if not matched:
      raise ValueError(f'No file matches {pattern.strip()!r} (from {name}='
                       f'{file_pattern!r}); check the path.')
    files.extend(sorted(matched))
  return files


# Bytes a TFRecord adds around each record: length (8), its CRC (4), data CRC (4).
_RECORD_OVERHEAD = 16


def _file_size(path: str) -> int:
  """Size of `path` in bytes, or -1 if it cannot be told (no check then)."""
  try:
    return int(tf.io.gfile.stat(path).length)
  except (tf.errors.OpError, OSError):
    return -1


def read_tfrecord_file(path: tf.Tensor, size: tf.Tensor) -> tf.data.Dataset:
  """The readable records of one TFRecord file; damage is reported, not fatal.

  A file cut short (a copy that stopped, a full disk) or damaged inside
  would raise `DataLossError` and stop the whole input. Here the records
  before the damage are kept, the rest of that file is skipped, and a
  warning on stderr names the file and how many records were read from it.
  Damage is told by the bytes read: every record takes its length plus 16
  bytes, so an intact file's records add up to its size (one integer sum
  per record; the file is not read twice).

  Args:
    path: string scalar, a TFRecord file (uncompressed).
    size: int64 scalar, its size in bytes (`-1`: unknown, no check).

  Returns:
    `tf.data.Dataset` of string scalars, the file's readable records.
  """
  records = tf.data.TFRecordDataset(path, buffer_size=8 << 20).ignore_errors()
  marked = records.map(lambda r: (r, tf.constant(True))).concatenate(
      tf.data.Dataset.from_tensors((tf.constant(b''), tf.constant(False))))
  size = tf.cast(size, tf.int64)

  def account(state, element):
    count, read = state
    record, is_record = element
    count += tf.cast(is_record, tf.int64)
    read += tf.where(is_record, tf.cast(tf.strings.length(record), tf.int64) +
                     _RECORD_OVERHEAD, tf.constant(0, tf.int64))

    def warn():
      tf.print(tf.strings.join([
          'WARNING spinenet.data.pipeline: ', path, ' is truncated or '
          'damaged: read ', tf.strings.as_string(count), ' records (',
          tf.strings.as_string(read), ' of its ', tf.strings.as_string(size),
          ' bytes); the rest of this file is skipped.']),
               output_stream=sys.stderr)
      return tf.constant(True)

    damaged = tf.logical_and(
        tf.logical_not(is_record),
        tf.logical_and(size >= 0, tf.not_equal(read, size)))
    tf.cond(damaged, warn, lambda: tf.constant(False))
    return (count, read), element

  zero = tf.constant(0, tf.int64)
  return marked.scan((zero, zero), account).filter(
      lambda record, is_record: is_record).map(
          lambda record, is_record: record)


def read_records(files: Sequence[str],
                 training: bool,
                 input_context: Optional[tf.distribute.InputContext] = None,
                 seed: Optional[int] = None,
                 deterministic: bool = True,
                 cycle_length: int = 16) -> tf.data.Dataset:
  """Serialized records of this input pipeline's share of TFRecord files.

  With an `input_context` of `n` pipelines, pipeline `i` reads files `i`,
  `i + n`, ...; with fewer files than pipelines every pipeline reads every
  file and keeps records `i`, `i + n`, ... instead.

  Args:
    files: TFRecord paths (e.g. from `list_files`).
    training: shuffle the file order (again on every pass).
    input_context: `tf.distribute.InputContext` of this pipeline (None: one
      pipeline).
    seed: file-order seed (None: random).
    deterministic: interleave the files in a fixed order.
    cycle_length: most files read at once (one record from each in turn).

  Returns:
    `tf.data.Dataset` of serialized records (string scalars), one pass. A
    truncated or damaged file gives its records up to the damage, with a
    warning naming it (`read_tfrecord_file`).
  """
  files = list(files)
  num_pipelines, pipeline_id = 1, 0
  if input_context is not None:
    num_pipelines = input_context.num_input_pipelines
    pipeline_id = input_context.input_pipeline_id
  shard_records = len(files) < num_pipelines
  if num_pipelines > 1 and not shard_records:
    files = files[pipeline_id::num_pipelines]
  dataset = tf.data.Dataset.from_tensor_slices(
      (files, [_file_size(f) for f in files]))
  if training:
    dataset = dataset.shuffle(len(files), seed=seed,
                              reshuffle_each_iteration=True)
  dataset = dataset.interleave(
      read_tfrecord_file,
      cycle_length=min(cycle_length, len(files)), block_length=1,
      num_parallel_calls=AUTOTUNE, deterministic=deterministic)
  if shard_records:
    logging.warning('%d file(s) for %d input pipelines: sharding records '
                    'instead of files (each pipeline reads every file).',
                    len(files), num_pipelines)
    dataset = dataset.shard(num_pipelines, pipeline_id)
  return dataset


def build_dataset(source: Union[str, Sequence[str], tf.data.Dataset],
                  decode_fn: Callable,
                  parse_fn: Callable,
                  global_batch_size: int,
                  training: bool,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  shuffle_buffer: int = 1000,
                  cache: bool = False,
                  seed: Optional[int] = None,
                  deterministic: Optional[bool] = None,
                  cycle_length: int = 16,
                  skip_counter: Optional[tf.Variable] = None,
                  source_name: str = 'file_pattern',
                  check_fn: Optional[Callable] = None) -> tf.data.Dataset:
  """One input pipeline's batches of parsed examples, for any task.

  Steps: read the source (`read_records`: file sharding, file shuffling,
  parallel interleave, record sharding; a truncated file gives its readable
  records and a warning naming it); cache (optional); for training,
  repeat and shuffle records; pair each example with an augmentation seed;
  decode and parse in parallel, skipping and counting the examples that
  fail (`map_skipping_failures`); for evaluation, mark examples valid and
  pad (`pad_last_batch`); batch to the per-replica batch size with a static
  batch dimension; prefetch.

  Args:
    source: TFRecord files as a glob, comma-separated globs or a list of
      globs; or a `tf.data.Dataset` of examples (anything `decode_fn` takes,
      e.g. TFDS's dicts) that is already this pipeline's share (e.g.
      `tfds.load(..., read_config=tfds.ReadConfig(input_context=...))`),
      which skips the file steps only.
    decode_fn: example -> decoded example (e.g.
      `DetectionDecoder(decode_image=False).decode`).
    parse_fn: `(decoded, seed) -> (features, labels)` with static shapes and
      a dict `labels`; `seed` is an int64 `[2]` stateless seed, different for
      every example (and every pass).
    global_batch_size: examples per step over all replicas; each pipeline
      batches `input_context.get_per_replica_batch_size(global_batch_size)`.
    training: shuffle, repeat forever and drop the last partial batch; else
      one pass, with `labels['valid']` (bool) and a last batch padded with
      zeroed, invalid examples, so no example is dropped.
    input_context: `tf.distribute.InputContext` of this pipeline, from
      `strategy.distribute_datasets_from_function` (None: one pipeline, one
      replica).
    shuffle_buffer: examples in the training shuffle buffer (<= 1: none).
    cache: keep the examples read (still encoded) in memory after the first
      pass (small datasets).
    seed: seed of the file order, shuffling and augmentation seeds (None:
      random).
    deterministic: the same elements in the same order on every run; default
      `seed is not None or not training`.
    cycle_length: most files read at once.
    skip_counter: optional int64 scalar `tf.Variable`, incremented for each
      example that fails to parse; create it outside any `tf.distribute`
      strategy scope.
    source_name: what `source` is called in error messages (e.g.
      `'train_data.file_pattern'`).
    check_fn: optional `(features, labels) -> (features, labels)` applied to
      each batch after the skip-and-count step, so an error it raises (e.g.
      `detection_parser.check_class_ids`) stops the input instead of
      skipping the record.

  Returns:
    `tf.data.Dataset` of `(features, labels)` batched to the per-replica
    batch size, every shape static.

  Raises:
    ValueError: if a glob of `source` matches no file.

  Example:
    ```python
    parser = detection_parser.TrainParser(256, aug_scale_min=0.5,
                                          aug_scale_max=2.0)
    ds = build_dataset('records/train-*',
                       DetectionDecoder(decode_image=False).decode, parser,
                       global_batch_size=8, training=True)
    images, labels = next(iter(ds))  # images: float32 [8, 256, 256, 3]
    ```
  """
  if deterministic is None:
    deterministic = seed is not None or not training
  batch_size = global_batch_size
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(global_batch_size)
  if isinstance(source, tf.data.Dataset):
    dataset = source
  else:
    dataset = read_records(list_files(source, source_name), training,
                           input_context, seed, deterministic, cycle_length)
  if cache:
    dataset = dataset.cache()
  if training:
    dataset = dataset.repeat()
    if shuffle_buffer > 1:
      dataset = dataset.shuffle(shuffle_buffer, seed=seed,
                                reshuffle_each_iteration=True)
  # Seeds are paired before the parallel map, so with a fixed `seed` each
  # example gets the same augmentation whatever the parsing order.
  seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
  dataset = tf.data.Dataset.zip((dataset, seeds))
  dataset = map_skipping_failures(
      dataset, lambda example, s: parse_fn(decode_fn(example), s),
      deterministic=deterministic, skip_counter=skip_counter)
  if not training:
    dataset = pad_last_batch(dataset, batch_size)
  dataset = dataset.batch(batch_size, drop_remainder=True)
  if check_fn is not None:
    dataset = dataset.map(check_fn)
  options = tf.data.Options()
  options.deterministic = deterministic
  dataset = dataset.with_options(options)
  where = (source_name if isinstance(source, tf.data.Dataset)
           else f'{source_name}={source!r}')
  logging.info('input (%s): %s, per-replica batch %d',
               'train' if training else 'eval', where, batch_size)
  return dataset.prefetch(AUTOTUNE)
