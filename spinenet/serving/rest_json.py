"""TF Serving's REST JSON encoding of predict requests and responses.

Implements the documented contract of tensorflow_model_server's REST API
(https://www.tensorflow.org/tfx/serving/api_rest), for a signature given as
`{input name: (tf.DType, tf.TensorShape)}`:

* Row format: `{"instances": [...]}`, one entry per example. With a single
  input an entry is the bare value; otherwise (or also with one input) an
  object `{input name: value}`. Answered with `{"predictions": [...]}`, one
  entry per example: the bare value if the signature has one output, else an
  object `{output name: value}`.
* Columnar format: `{"inputs": value}` (single input) or `{"inputs": {input
  name: value}}`, each value a whole batch. Answered with `{"outputs":
  value}` or `{"outputs": {output name: value}}`.
* Binary values: `{"b64": "<base64>"}` wherever a string tensor element is
  expected. String outputs whose name ends in `_bytes` are returned the same
  way; other string outputs as UTF-8 text.
* `"signature_name"` selects the signature (default `serving_default`).

Every malformed request raises `RequestError` with a message that names the
field, what came and what was expected.
"""
import base64
import binascii
from typing import Any, Dict, Mapping, Tuple

import numpy as np
import tensorflow as tf

DEFAULT_SIGNATURE = 'serving_default'


class RequestError(ValueError):
  """A predict request that does not follow the contract (HTTP 400)."""


def _is_binary(value):
  return isinstance(value, dict) and set(value) == {'b64'}


def _decode_binary(value, where):
  encoded = value['b64']
  if not isinstance(encoded, str):
    raise RequestError(f'{where}: "b64" must hold a base64 string, got '
                       f'{type(encoded).__name__}.')
  try:
    return base64.b64decode(encoded, validate=True)
  except (binascii.Error, ValueError) as e:
    raise RequestError(f'{where}: "b64" is not valid base64 ({e}).') from None


def _shape_of(value):
  """Shape of a nested list, following first elements."""
  shape = []
  while isinstance(value, list):
    shape.append(len(value))
    if not value:
      break
    value = value[0]
  return tuple(shape)


def _strings(value, where):
  if isinstance(value, list):
    return [_strings(v, where) for v in value]
  if _is_binary(value):
    return _decode_binary(value, where)
  if isinstance(value, str):
    return value.encode('utf-8')
  raise RequestError(f'{where}: expected strings (or {{"b64": ...}} objects) for a '
                     f'DT_STRING input, got {type(value).__name__} {str(value)[:40]}.')


def to_array(value: Any, dtype: tf.DType, where: str) -> np.ndarray:
  """A JSON value as a NumPy array of `dtype`.

  Raises:
    RequestError: ragged nesting, wrong element types, or numbers that do not
      fit `dtype` (fractions or out-of-range values for integer types).
  """
  dtype = tf.dtypes.as_dtype(dtype)
  shape = _shape_of(value)
  if dtype == tf.string:
    array = np.empty(shape, dtype=object)
    strings = _strings(value, where)
    try:
      array[...] = strings
    except ValueError:
      raise RequestError(f'{where}: nested lists of different lengths; a tensor '
                         'must be rectangular.') from None
    return array
  try:
    array = np.asarray(value)
  except ValueError:
    raise RequestError(f'{where}: nested lists of different lengths; a tensor must '
                       'be rectangular.') from None
  if array.dtype == object or array.shape != shape:
    raise RequestError(f'{where}: nested lists of different lengths or mixed types; '
                       f'expected a rectangular tensor of {dtype.name} numbers.')
  if array.size and array.dtype.kind not in 'biuf':
    raise RequestError(f'{where}: expected {dtype.name} numbers, got '
                       f'{array.dtype.kind!r} values such as {array.flat[0]!r}.')
  if dtype.is_integer:
    if array.dtype.kind == 'f' and array.size:
      if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
        raise RequestError(f'{where}: expected {dtype.name} integers, got fractional '
                           'numbers (e.g. pixel values must be whole 0..255).')
    if array.size and (array.min() < dtype.min or array.max() > dtype.max):
      raise RequestError(f'{where}: values must be in [{dtype.min}, {dtype.max}] for '
                         f'{dtype.name}; got [{array.min()}, {array.max()}].')
  elif dtype == tf.bool and array.dtype.kind != 'b' and array.size:
    raise RequestError(f'{where}: expected true/false for a bool input.')
  return array.astype(dtype.as_numpy_dtype)


def _check_shape(array, shape: tf.TensorShape, where):
  if shape.rank is not None and array.ndim != shape.rank:
    raise RequestError(
        f'{where}: expected a tensor of rank {shape.rank} (shape '
        f'{shape.as_list()}, batch first), got rank {array.ndim} (shape '
        f'{list(array.shape)}).')
  for axis, (want, got) in enumerate(zip(shape.as_list(), array.shape)):
    if want is not None and want != got:
      raise RequestError(f'{where}: dimension {axis} must be {want}, got {got} '
                         f'(shape {list(array.shape)}).')


def parse_request(body: Mapping[str, Any], signatures: Mapping[str, Mapping[str, Tuple]]):
  """Parses a decoded JSON predict request.

  Args:
    body: the decoded JSON object.
    signatures: `{signature name: {input name: (tf.DType, tf.TensorShape)}}`.

  Returns:
    `(signature_name, {input name: np.ndarray}, row_format)`.

  Raises:
    RequestError.
  """
  if not isinstance(body, dict):
    raise RequestError('The request body must be a JSON object with "instances" or '
                       f'"inputs"; got a JSON {type(body).__name__}.')
  name = body.get('signature_name', DEFAULT_SIGNATURE)
  if not isinstance(name, str) or name not in signatures:
    raise RequestError(f'"signature_name": {name!r} is not a signature of this model; '
                       f'expected one of {sorted(signatures)}.')
  specs = signatures[name]
  unknown = set(body) - {'signature_name', 'instances', 'inputs'}
  if unknown:
    raise RequestError(f'Unknown request field(s) {sorted(unknown)}; expected '
                       '"signature_name" and one of "instances" or "inputs".')
  if ('instances' in body) == ('inputs' in body):
    raise RequestError('The request must have exactly one of "instances" (row '
                       'format) or "inputs" (columnar format).')
  if 'instances' in body:
    return name, _parse_rows(body['instances'], specs), True
  return name, _parse_columns(body['inputs'], specs), False


def _named(value, specs):
  """True if `value` is an object keyed by input names (not a b64 value)."""
  return isinstance(value, dict) and not _is_binary(value)


def _parse_rows(instances, specs):
  if not isinstance(instances, list) or not instances:
    raise RequestError('"instances" must be a non-empty list (one entry per '
                       f'example); got {type(instances).__name__} of length '
                       f'{len(instances) if isinstance(instances, list) else "-"}.')
  names = sorted(specs)
  columns = {n: [] for n in names}
  for i, instance in enumerate(instances):
    if _named(instance, specs):
      _check_names(instance, specs, f'instances[{i}]')
      for n in names:
        columns[n].append(instance[n])
    elif len(names) == 1:
      columns[names[0]].append(instance)
    else:
      raise RequestError(f'instances[{i}]: the signature has inputs {names}, so each '
                         'instance must be an object keyed by them.')
  arrays = {}
  for n, values in columns.items():
    dtype, shape = specs[n]
    where = f'"instances" input {n!r}'
    per_example = [to_array(v, dtype, f'instances[{i}] {n!r}')
                   for i, v in enumerate(values)]
    first = per_example[0].shape
    for i, a in enumerate(per_example):
      if a.shape != first:
        raise RequestError(f'instances[{i}] {n!r}: shape {list(a.shape)} differs from '
                           f'instances[0] ({list(first)}); every instance of a batch '
                           'must have the same shape.')
    array = np.stack(per_example)
    _check_shape(array, shape, where)
    arrays[n] = array
  return arrays


def _check_names(obj, specs, where):
  missing, extra = sorted(set(specs) - set(obj)), sorted(set(obj) - set(specs))
  if missing or extra:
    raise RequestError(f'{where}: inputs must be exactly {sorted(specs)}; missing '
                       f'{missing}, unexpected {extra}.')


def _parse_columns(inputs, specs):
  names = sorted(specs)
  if _named(inputs, specs) and not (len(names) == 1 and names[0] not in inputs):
    _check_names(inputs, specs, '"inputs"')
    values = dict(inputs)
  elif len(names) == 1:
    values = {names[0]: inputs}
  else:
    raise RequestError(f'"inputs" must be an object keyed by the inputs {names}.')
  arrays = {}
  for n in names:
    dtype, shape = specs[n]
    array = to_array(values[n], dtype, f'"inputs" {n!r}')
    _check_shape(array, shape, f'"inputs" {n!r}')
    arrays[n] = array
  return arrays


def _json_value(array: np.ndarray, binary: bool):
  if array.dtype == object or array.dtype.kind == 'S':
    def convert(x):
      if isinstance(x, np.ndarray):
        return [convert(v) for v in x]
      if binary:
        return {'b64': base64.b64encode(x).decode('ascii')}
      return x.decode('utf-8', errors='replace')
    return convert(np.asarray(array, dtype=object))
  return array.tolist()


def format_response(outputs: Dict[str, np.ndarray], row_format: bool) -> Dict[str, Any]:
  """The JSON object answering a predict request.

  Args:
    outputs: `{output name: np.ndarray}`, batch first.
    row_format: the request used "instances".

  Returns:
    `{"predictions": [...]}` or `{"outputs": ...}`.
  """
  names = sorted(outputs)
  converted = {n: _json_value(np.asarray(outputs[n]), n.endswith('_bytes')) for n in names}
  if not row_format:
    return {'outputs': converted[names[0]] if len(names) == 1 else converted}
  batch = {len(v) if isinstance(v, list) else None for v in converted.values()}
  if len(batch) != 1 or None in batch:
    raise ValueError('Row format needs every output to have the same batch size; '
                     f'got {sorted(str(b) for b in batch)}.')
  size = batch.pop()
  if len(names) == 1:
    return {'predictions': converted[names[0]]}
  return {'predictions': [{n: converted[n][i] for n in names} for i in range(size)]}
