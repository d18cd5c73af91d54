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

`loads` decodes a request body without the usual ten-fold blow-up of large
numeric arrays: a nested list of numbers that is the value of an object field
(e.g. `"instances": [[[[1, 2, 3], ...]]]`) is kept as its text
(`NumericText`) and converted straight to a NumPy array of the input's dtype
by `to_array`, a few megabytes at a time.
"""
import base64
import binascii
import json
import math
import re
import secrets
from typing import Any, Dict, Mapping, Tuple

import numpy as np
import tensorflow as tf

DEFAULT_SIGNATURE = 'serving_default'
MAX_NESTING = 32  # deepest JSON array or object accepted (tensors have rank <= 32)
MIN_NUMERIC_TEXT_BYTES = 4096  # shorter numeric arrays go through json.loads
_CHUNK_BYTES = 4 << 20
# A '[' after ':' followed only by characters of numbers, commas, brackets and
# whitespace: a candidate nested list of numbers (its balanced end is found
# separately).
_NUMERIC_RUN = re.compile(rb':[ \t\r\n]*(\[[-+.eE0-9,\[\] \t\r\n]*)')
_LONG_INTEGER = re.compile(rb'[0-9]{19}')
_TO_SPACES = bytes.maketrans(b'[],\t\r\n', b'      ')
_NOT_SKELETON = b'-+.eE0123456789 \t\r\n'


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


class NumericText:
  """The text of a nested JSON list of numbers, converted on demand.

  Attributes:
    body: the whole request body (bytes; not copied).
    start, end: the list's `[` and one past its `]`.
  """

  def __init__(self, body: bytes, start: int, end: int):
    self.body, self.start, self.end = body, start, end

  def __len__(self):
    return self.end - self.start

  def to_list(self) -> list:
    """The list as `json.loads` gives it (slow; for error messages)."""
    return _json_loads(self.body[self.start:self.end])

  def to_array(self, dtype: tf.DType, where: str) -> np.ndarray:
    """The list as an array of `dtype`, or `to_array(self.to_list(), ...)`.

    The fast path reads the shape from the brackets and commas alone, checks
    the list is rectangular and parses the numbers chunk by chunk; anything it
    does not handle (fractions or exponents for an integer dtype, integers of
    19 or more digits, empty lists, malformed text) goes the slow way, which
    gives the precise error.
    """
    dtype = tf.dtypes.as_dtype(dtype)
    array = None
    if (dtype.is_integer or dtype.is_floating) and dtype != tf.bfloat16:
      array = self._fast_array(dtype, where)
    if array is None:
      return to_array(self.to_list(), dtype, where)
    return array

  def _fast_array(self, dtype, where):
    body, start, end = self.body, self.start, self.end
    if _LONG_INTEGER.search(body, start, end):
      return None
    integer = dtype.is_integer
    if integer and any(body.find(c, start, end) >= 0 for c in (b'.', b'e', b'E')):
      return None
    skeleton = b''.join(body[i:min(i + _CHUNK_BYTES, end)].translate(None, _NOT_SKELETON)
                        for i in range(start, end, _CHUNK_BYTES))
    shape = _skeleton_shape(skeleton, where)
    if shape is None or not _matches_skeleton(skeleton, shape):
      return None
    count = math.prod(shape)
    parse_dtype = np.int64 if integer else np.float64
    array = np.empty(count, dtype.as_numpy_dtype)
    filled, pos = 0, start
    while pos < end:
      cut = body.find(b',', min(pos + _CHUNK_BYTES, end), end)
      cut = end if cut < 0 else cut + 1
      text = body[pos:cut].translate(_TO_SPACES)
      pos = cut
      if not text.strip():
        continue
      try:
        numbers = np.fromstring(text, dtype=parse_dtype, sep=' ')
      except ValueError:
        return None
      if filled + numbers.size > count:
        return None
      if integer and numbers.size:
        low, high = numbers.min(), numbers.max()
        if low < dtype.min or high > dtype.max:
          bad = numbers[(numbers < dtype.min) | (numbers > dtype.max)][0]
          raise RequestError(f'{where}: {bad} does not fit the input\'s dtype '
                             f'{dtype.name} (values must be in [{dtype.min}, '
                             f'{dtype.max}]).')
      array[filled:filled + numbers.size] = numbers
      filled += numbers.size
    if filled != count:
      return None
    return array.reshape(shape)


def _skeleton_shape(skeleton: bytes, where: str):
  """Shape of a rectangular list from its `[`, `]` and `,` (None if unsure)."""
  rank = len(skeleton) - len(skeleton.lstrip(b'['))
  if rank > MAX_NESTING:
    raise RequestError(f'{where}: lists nested {rank} deep; a tensor has at most '
                       f'{MAX_NESTING} dimensions.')
  if rank == 0 or b'[]' in skeleton:
    return None
  shape, inner = [], 0
  for depth in range(rank, 0, -1):
    closing = b']' * (rank - depth + 1)
    end = skeleton.find(closing)
    if end < 0:
      return None
    length = end + len(closing) - (depth - 1)
    size, remainder = divmod(length - 1, inner + 1)
    if remainder or size < 1:
      return None
    shape.append(size)
    inner = length
  return tuple(reversed(shape))


def _skeleton(shape) -> bytes:
  """The brackets and commas of a rectangular nested list of `shape`."""
  text = b''
  for size in reversed(shape):
    text = b'[' + b','.join([text] * size) + b']'
  return text


def _matches_skeleton(skeleton: bytes, shape) -> bool:
  """Whether `skeleton` is `_skeleton(shape)`, compared a megabyte at a time."""
  lengths = [0] * (len(shape) + 1)
  for level in range(len(shape) - 1, -1, -1):
    lengths[level] = 2 + shape[level] * lengths[level + 1] + shape[level] - 1
  if len(skeleton) != lengths[0]:
    return False
  view, small = memoryview(skeleton), {}

  def expected(level):
    if level not in small:
      small[level] = _skeleton(shape[level:])
    return small[level]

  def check(pos, level):
    if lengths[level] <= _CHUNK_BYTES:
      return view[pos:pos + lengths[level]] == expected(level)
    if view[pos] != ord('[') or view[pos + lengths[level] - 1] != ord(']'):
      return False
    size, child = shape[level], lengths[level + 1]
    pos += 1
    if child < _CHUNK_BYTES // 2:  # children compared in blocks of whole units
      unit = expected(level + 1) + b','
      per_block = max(1, _CHUNK_BYTES // len(unit))
      left = size - 1
      while left:
        count = min(per_block, left)
        if view[pos:pos + count * len(unit)] != unit * count:
          return False
        pos, left = pos + count * len(unit), left - count
      return view[pos:pos + child] == expected(level + 1)
    for i in range(size):
      if i:
        if view[pos] != ord(','):
          return False
        pos += 1
      if not check(pos, level + 1):
        return False
      pos += child
    return True

  return check(0, 0)


def _json_loads(text):
  try:
    return json.loads(text)
  except RecursionError:
    raise RequestError('The request body is nested too deeply (JSON arrays or '
                       f'objects inside each other; at most {MAX_NESTING} levels '
                       'make sense for a tensor).') from None
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise RequestError(f'The request body is not valid JSON: {e}.') from None


def loads(body: bytes) -> Any:
  """Decodes a request body; large numeric lists stay `NumericText`.

  Args:
    body: the request body (UTF-8 JSON).

  Returns:
    The decoded JSON, with `NumericText` in place of each nested list of
    numbers of at least `MIN_NUMERIC_TEXT_BYTES` that is an object's value.

  Raises:
    RequestError: not JSON, or nested too deeply.
  """
  if isinstance(body, str):
    body = body.encode('utf-8')
  body = bytes(body)
  regions, pieces, pos = [], [], 0
  token = secrets.token_hex(8)
  match = _NUMERIC_RUN.search(body)
  while match:
    start, run_end = match.span(1)
    end = None
    if run_end - start >= MIN_NUMERIC_TEXT_BYTES:
      end = _balanced_end(body, start, run_end)
    if end is not None and end - start >= MIN_NUMERIC_TEXT_BYTES:
      pieces += [body[pos:start], b'{"\\u0000%s:%d": 0}' % (token.encode(), len(regions))]
      regions.append(NumericText(body, start, end))
      pos = end
    match = _NUMERIC_RUN.search(body, max(run_end, match.end(1)) if end is None else end)
  if not regions:
    return _json_loads(body)
  pieces.append(body[pos:])
  try:
    value = json.loads(b''.join(pieces))
  except (RecursionError, UnicodeDecodeError, json.JSONDecodeError):
    return _json_loads(body)  # e.g. a "list" inside a string: decode as it is
  found = []
  value = _restore(value, '\0' + token + ':', regions, found)
  if len(found) != len(regions):
    return _json_loads(body)
  return value


def _restore(value, prefix, regions, found):
  """`value` with each placeholder object replaced by its `NumericText`."""
  if isinstance(value, dict):
    if len(value) == 1:
      (key, item), = value.items()
      if isinstance(key, str) and key.startswith(prefix) and item == 0:
        index = int(key[len(prefix):])
        found.append(index)
        return regions[index]
    return {k: _restore(v, prefix, regions, found) for k, v in value.items()}
  if isinstance(value, list):
    return [_restore(v, prefix, regions, found) for v in value]
  return value


def _balanced_end(body: bytes, start: int, end: int):
  """One past the `]` closing the `[` at `start` (None if not before `end`)."""
  depth, pos = 0, start
  while pos < end:
    count = min(end - pos, _CHUNK_BYTES // 4)
    chars = np.frombuffer(body, np.uint8, count=count, offset=pos)
    steps = (chars == ord('[')).astype(np.int8) - (chars == ord(']'))
    depths = np.cumsum(steps, dtype=np.int32) + depth
    closed = np.flatnonzero(depths == 0)
    if closed.size:
      return pos + int(closed[0]) + 1
    depth = int(depths[-1])
    pos += count
  return None


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
  if isinstance(value, NumericText):
    value = value.to_list()
  if isinstance(value, list):
    return [_strings(v, where) for v in value]
  if _is_binary(value):
    return _decode_binary(value, where)
  if isinstance(value, str):
    return value.encode('utf-8')
  raise RequestError(f'{where}: expected strings (or {{"b64": ...}} objects) for a '
                     f'DT_STRING input, got {_describe(value)}.')


def _describe(value) -> str:
  """A JSON value as a short phrase for error messages."""
  if _is_binary(value):
    return 'a {"b64": ...} binary value'
  if isinstance(value, bool):
    return f'the boolean {json.dumps(value)}'
  if value is None:
    return 'null'
  if isinstance(value, dict):
    return f'an object with keys {sorted(value)[:5]}'
  if isinstance(value, str):
    return f'the string {json.dumps(value[:40])}'
  if isinstance(value, list):
    return f'a list of {len(value)}'
  text = json.dumps(value)
  return f'the number {text[:40]}{"..." if len(text) > 40 else ""}'


def _index(path):
  return ''.join(f'[{i}]' for i in path)


def _check_leaves(value, dtype: tf.DType, where: str):
  """Walks a nested list; raises `RequestError` at the first bad element.

  Checks that the list is rectangular (the shape of its first elements) and
  that every element is a JSON value `dtype` takes: numbers in range for
  numeric dtypes (JSON integers, not 1.0, for integer dtypes), true/false for
  bool.
  """
  shape = _shape_of(value)
  if len(shape) > MAX_NESTING:
    raise RequestError(f'{where}: lists nested {len(shape)} deep; a tensor has at '
                       f'most {MAX_NESTING} dimensions.')
  stack = [((), value)]
  while stack:
    path, item = stack.pop()
    depth = len(path)
    if isinstance(item, list):
      if depth >= len(shape) or len(item) != shape[depth]:
        raise RequestError(
            f'{where}{_index(path)}: a list of {len(item)} where the first '
            f'elements make the shape {list(shape)}; a tensor must be rectangular '
            '(nested lists of equal lengths).')
      stack.extend(((*path, i), v) for i, v in reversed(list(enumerate(item))))
      continue
    if depth != len(shape):
      raise RequestError(
          f'{where}{_index(path)}: {_describe(item)} where the first elements make '
          f'the shape {list(shape)}; a tensor must be rectangular.')
    problem = _element_problem(item, dtype)
    if problem:
      raise RequestError(f'{where}{_index(path)}: {_describe(item)} {problem}')


def _element_problem(item, dtype: tf.DType):
  """Why `item` is not a `dtype` element (None if it is)."""
  name = dtype.name
  if dtype == tf.bool:
    return None if isinstance(item, bool) else 'for a bool input (expected true or false).'
  if _is_binary(item):
    return (f'for a {name} input; {{"b64": ...}} is only for string inputs, '
            f'{name} takes JSON numbers.')
  if isinstance(item, bool):
    return f'for a {name} input; it takes JSON numbers, not true/false.'
  if not isinstance(item, (int, float)):
    return f'for a {name} input; it takes JSON numbers.'
  if dtype.is_integer:
    if isinstance(item, float):
      return (f'for a {name} input; it takes JSON integers (write 1, not 1.0; '
              f'pixel values are whole numbers 0..255 for uint8).')
    if not dtype.min <= item <= dtype.max:
      return (f'does not fit the input\'s dtype {name} (values must be in '
              f'[{dtype.min}, {dtype.max}]).')
  elif isinstance(item, int) and abs(item) > 1 << 1023:
    return f'does not fit the input\'s dtype {name}.'
  return None


def to_array(value: Any, dtype: tf.DType, where: str) -> np.ndarray:
  """A JSON value (or `NumericText`) as a NumPy array of `dtype`.

  Raises:
    RequestError: ragged nesting, wrong element types (strings, booleans,
      b64 objects or fractions for numbers; numbers for strings), or numbers
      that do not fit `dtype`. The message names the element and the dtype.
  """
  dtype = tf.dtypes.as_dtype(dtype)
  if isinstance(value, NumericText):
    return value.to_array(dtype, where)
  shape = _shape_of(value)
  if dtype == tf.string:
    if len(shape) > MAX_NESTING:
      raise RequestError(f'{where}: lists nested {len(shape)} deep; a tensor has at '
                         f'most {MAX_NESTING} dimensions.')
    array = np.empty(shape, dtype=object)
    strings = _strings(value, where)
    try:
      array[...] = strings
    except ValueError:
      raise RequestError(f'{where}: nested lists of different lengths; a tensor '
                         'must be rectangular.') from None
    return array
  _check_leaves(value, dtype, where)
  with np.errstate(over='ignore'):
    array = np.array(value, dtype=np.float64 if dtype.is_floating else None)
  if array.shape != shape:  # the walk above makes this unreachable
    raise RequestError(f'{where}: expected a rectangular tensor of {dtype.name}.')
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
  names = sorted(specs)
  if isinstance(instances, NumericText):
    if len(names) == 1 and specs[names[0]][0] != tf.string:
      (name, (dtype, shape)), = specs.items()
      array = instances.to_array(dtype, f'"instances" input {name!r}')
      if array.ndim == 0 or not len(array):
        raise RequestError('"instances" must be a non-empty list (one entry per '
                           'example).')
      _check_shape(array, shape, f'"instances" input {name!r}')
      return {name: array}
    instances = instances.to_list()
  if not isinstance(instances, list) or not instances:
    raise RequestError('"instances" must be a non-empty list (one entry per '
                       f'example); got {type(instances).__name__} of length '
                       f'{len(instances) if isinstance(instances, list) else "-"}.')
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
