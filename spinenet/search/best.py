"""The search's best architecture as files: `best.gin` and its block graph.

`best.gin` includes the search's gin files, repeats its bindings and binds
the best trial's block specs, so `spinenet-train --gin_file=DIR/best.gin`
trains it as is; `best.png` draws its blocks (`spinenet.modeling.plot`).
"""
import os
from typing import Sequence

from spinenet.modeling import plot

GIN_FILE = 'best.gin'
PLOT_FILE = 'best.png'


def best_gin_text(includes: Sequence[str], gin_params: Sequence[str],
                  record: dict, search_dir: str) -> str:
  """The text of `best.gin`.

  Args:
    includes: gin files to `include`, as written (repository-relative or
      absolute paths).
    gin_params: the search's bindings (data patterns included), in order.
    record: the best trial record: `trial`, `reward`, `block_specs` and
      optionally `reward_metric`, `params`, `flops`.
    search_dir: the search directory (named in the header comment).

  Returns:
    The gin file text, ending with `build_retinanet.block_specs = (...)`.
  """
  search_dir = os.path.abspath(search_dir)
  specs = ',\n'.join(f'    {(l, f, tuple(p), o)!r}'
                     for l, f, p, o in record['block_specs'])
  lines = [
      f'# Best architecture of the search in {search_dir}:',
      f"# trial {record['trial']}, reward {record['reward']:.4f} "
      f"({record.get('reward_metric', 'AP')} of the proxy task), "
      f"params {record.get('params')}, multiply-adds {record.get('flops')}.",
      '# Train it as is (the proxy recipe) or bind more steps / widths after it:',
      f'#   spinenet-train --gin_file={search_dir}/{GIN_FILE} \\',
      '#     --model_dir=/tmp/best --mode=train_and_eval \\',
      '#     --gin_param="TrainerOptions.train_steps = 5000"',
      '# Full width (SpineNet-49 scale): build_retinanet.filter_size_scale = 1.0,',
      '# resample_alpha = 0.5, endpoints_num_filters = 256, head_filters = 256.',
  ]
  lines += [f"include '{path}'" for path in includes]
  lines += list(gin_params)
  lines.append(f'build_retinanet.block_specs = (\n{specs},\n)')
  return '\n'.join(lines) + '\n'


def write_best(search_dir: str, record: dict, includes: Sequence[str],
               gin_params: Sequence[str]) -> None:
  """Writes `search_dir/best.gin` (see `best_gin_text`) and `best.png`."""
  with open(os.path.join(search_dir, GIN_FILE), 'w') as f:
    f.write(best_gin_text(includes, gin_params, record, search_dir))
  plot.plot_block_graph(
      record['block_specs'], os.path.join(search_dir, PLOT_FILE),
      title=f"Search best: trial {record['trial']}, "
            f"{record.get('reward_metric', 'reward')} {record['reward']:.3f}")
