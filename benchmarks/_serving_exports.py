"""What the two serving benchmarks share: our export variants and their flags.

`benchmarks/serving.py` times these exports against the Model Garden's;
`benchmarks/serving_accuracy.py` scores each on a COCO split. Both name a
variant the same way and take the same `--variants` and `--work_dir`.
"""
from absl import flags

from spinenet.serving import export_lib

# Our export variants: name -> (export options, the precision it computes in).
VARIANTS = {
    'float32': export_lib.ExportOptions(precision='float32', fold_batch_norm=False),
    'float32_folded': export_lib.ExportOptions(precision='float32', fold_batch_norm=True),
    'bfloat16_folded': export_lib.ExportOptions(precision='bfloat16', fold_batch_norm=True),
}

WORK_DIR = flags.DEFINE_string(
    'work_dir', None, 'Where exports go (default: a temporary directory, removed at the '
    'end). serving: exports already listed in WORK_DIR/exports.json are reused.')
VARIANT_NAMES = flags.DEFINE_list('variants', list(VARIANTS),
                                  f'Our exports to use, of {list(VARIANTS)}.')


def precision_of(variant: str) -> str:
  """The precision our export `variant` computes in (`float32` or `bfloat16`)."""
  return VARIANTS[variant].precision


def check_variants(names):
  """`names` as a tuple; ValueError naming `--variants` if one is unknown."""
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    raise ValueError(f'--variants: unknown {unknown}; expected some of {list(VARIANTS)}.')
  return tuple(names)
