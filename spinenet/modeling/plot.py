"""Draws a scale-permuted network's block graph (the paper's Figure 4 view)."""
from typing import Optional, Sequence

from spinenet.modeling import block_specs as specs_lib

_COLOURS = {'bottleneck': '#4c72b0', 'residual': '#dd8452', 'mbconv': '#55a868'}


def plot_block_graph(block_specs: Sequence, path: str, title: Optional[str] = None):
  """Writes a PNG of the blocks placed by build order (x) and level (y).

  Each block is a box coloured by type; the two parent connections are
  arrows; output blocks have a thick outline and their P-level written
  beside them; unconsumed blocks merged into an output are dashed arrows.

  Args:
    block_specs: block specs (tuples or `BlockSpec`).
    path: output file (format from the extension, e.g. `.png`).
    title: optional title.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  specs = specs_lib.to_block_specs(block_specs)
  plan = specs_lib.merge_plan(specs)
  offset = plan.num_stem_blocks
  nodes = [(i - offset, b.level, b.block_fn, False) for i, b in enumerate(plan.stem)]
  nodes += [(i, s.level, s.block_fn, s.is_output) for i, s in enumerate(specs)]
  merged = plan.merged

  fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(nodes) + 2), 5))
  xy = {k: (k, n[1]) for k, n in enumerate(nodes)}
  def arrow(a, b, **kw):
    (x0, y0), (x1, y1) = xy[a], xy[b]
    ax.annotate('', xy=(x1, y1), xytext=(x0, y0),
                arrowprops=dict(arrowstyle='->', lw=0.8, alpha=0.6,
                                connectionstyle='arc3,rad=0.15', **kw))
  for i, s in enumerate(specs):
    for p in s.parents:
      arrow(p, i + offset, color='0.3')
    for j in merged.get(i, ()):
      arrow(j, i + offset, color='tab:red', linestyle='--')
  for k, (idx, level, fn, is_out) in enumerate(nodes):
    x, y = xy[k]
    ax.scatter([x], [y], s=320, marker='s', color=_COLOURS[fn], zorder=3,
               edgecolors='black', linewidths=2.5 if is_out else 0.5)
    ax.text(x, y, 'S' if idx < 0 else str(idx), ha='center', va='center',
            fontsize=7, color='white', zorder=4)
    if is_out:
      ax.text(x, y + 0.32, f'P{level}', ha='center', fontsize=8, weight='bold')
  levels = sorted({n[1] for n in nodes})
  ax.set_yticks(levels)
  ax.set_yticklabels([f'L{l}' for l in levels])
  ax.set_ylim(min(levels) - 0.7, max(levels) + 0.8)
  ax.set_xlabel('build order (S = stem)')
  ax.set_ylabel('feature level (stride 2^level)')
  handles = [plt.Line2D([], [], marker='s', ls='', color=c, label=f)
             for f, c in _COLOURS.items() if any(n[2] == f for n in nodes)]
  handles.append(plt.Line2D([], [], marker='s', ls='', mfc='white', mec='black',
                            mew=2.5, label='output block'))
  if any(merged.values()):
    handles.append(plt.Line2D([], [], color='tab:red', ls='--',
                              label='merged unconsumed block'))
  ax.legend(handles=handles, loc='upper left', fontsize=8, ncol=len(handles))
  ax.set_title(title or 'Scale-permuted network')
  ax.grid(axis='y', alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
