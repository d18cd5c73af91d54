"""The TFRecord input of a detection task: checks, then the one tf.data path."""
from typing import Callable

from spinenet.data import coco_converter
from spinenet.data import pipeline


def build_records_dataset(data, *, task_name: str, options_name: str, split: str,
                          decode_fn: Callable, build_parser: Callable, num_classes: int,
                          training: bool, input_context, make_check_fn: Callable):
  """`pipeline.build_dataset` over `data.file_pattern`, after checking it.

  Args:
    data: the task's data options (`file_pattern`, `global_batch_size`,
      `shuffle_buffer`, `cache`, `seed`), or None.
    task_name: str, e.g. 'RetinaNetTask'; names the source in errors.
    options_name: str, the gin name of the data options class, for the error
      when no file pattern is bound.
    split: 'train_data' or 'eval_data'.
    decode_fn: serialized tf.Example -> dict.
    build_parser: `() -> parser`, the parser (decoded dict and a seed ->
      `(features, labels)`), built once the source is checked.
    num_classes: int, the model's classes; the records' category ids and
      each batch's class indices are checked against it.
    training: bool.
    input_context: `tf.distribute.InputContext` or None.
    make_check_fn: `source_name -> check_fn(features, labels)`, the per-batch
      class-id check naming `source_name`.

  Raises:
    ValueError: no file pattern, or a category id the model cannot hold.
  """
  if data is None or not data.file_pattern:
    raise ValueError(f'{task_name}.{split}.file_pattern is not set; bind '
                     f'it in gin (e.g. `{split.split("_")[0]}/{options_name}.'
                     'file_pattern = "records/train-*.tfrecord"`).')
  source_name = f'{task_name}.{split}.file_pattern'
  coco_converter.check_category_ids(
      pipeline.list_files(data.file_pattern, source_name), num_classes,
      source_name)
  return pipeline.build_dataset(
      data.file_pattern, decode_fn, build_parser(), data.global_batch_size, training,
      input_context, shuffle_buffer=data.shuffle_buffer, cache=data.cache,
      seed=data.seed, source_name=source_name,
      check_fn=make_check_fn(source_name))
