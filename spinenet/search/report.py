"""Pictures and tables of a search directory's trials."""
from typing import Optional, Sequence


def plot_reward_curve(records: Sequence[dict], path: str,
                      title: Optional[str] = None) -> None:
  """Writes a PNG: each trial's reward (dots, by trial id) and the best so far.

  Args:
    records: finished trial records (`trials.jsonl` lines).
    path: output file, e.g. 'reward_curve.png'.
    title: optional title.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  ordered = sorted(records, key=lambda r: r['trial'])
  ids = [r['trial'] for r in ordered]
  rewards = [r['reward'] for r in ordered]
  best, running = float('-inf'), []
  for reward in rewards:
    best = max(best, reward)
    running.append(best)
  metric = next((r.get('reward_metric') for r in ordered if r.get('reward_metric')),
                'reward')
  fig, ax = plt.subplots(figsize=(7, 4))
  ok = [r['status'] == 'ok' for r in ordered]
  ax.scatter([i for i, k in zip(ids, ok) if k], [v for v, k in zip(rewards, ok) if k],
             s=18, color='#4c72b0', label='trial')
  if not all(ok):
    ax.scatter([i for i, k in zip(ids, ok) if not k], [0] * ok.count(False),
               s=24, marker='x', color='#c44e52', label='failed')
  ax.step(ids, running, where='post', color='#dd8452', label='best so far')
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_xlabel('trial')
  ax.set_ylabel(f'{metric} (held-out split)')
  ax.set_title(title or f'Architecture search: {len(ordered)} trials')
  ax.grid(alpha=0.3)
  ax.legend(loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def summary_table(records: Sequence[dict], top: int = 5) -> str:
  """Markdown table of the `top` trials by reward, and a totals line."""
  ok = [r for r in records if r['status'] == 'ok']
  ranked = sorted(ok, key=lambda r: (-r['reward'], r['trial']))[:top]
  metric = ranked[0].get('reward_metric', 'reward') if ranked else 'reward'
  lines = [f'| trial | {metric} | AP | params | multiply-adds | seconds |',
           '|---|---|---|---|---|---|']
  for r in ranked:
    ap = r.get('metrics', {}).get('AP', float('nan'))
    flops = f"{r['flops'] / 1e6:.0f}M" if r.get('flops') else '-'
    lines.append(f"| {r['trial']} | {r['reward']:.4f} | {ap:.4f} | "
                 f"{r['params']:,} | {flops} | {r['seconds']:.0f} |")
  seconds = sum(r.get('seconds', 0) for r in records)
  lines.append('')
  lines.append(f'{len(records)} trials ({len(records) - len(ok)} failed), '
               f'{seconds / 3600:.1f} h of trial time.')
  return '\n'.join(lines)
