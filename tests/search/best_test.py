"""best.gin: the search's includes and bindings, then the best block specs."""
import os

from spinenet.search import best

RECORD = {'trial': 3, 'reward': 0.41234, 'reward_metric': 'AP50', 'params': 12345,
          'flops': 6789, 'block_specs': [[3, 'bottleneck', [0, 1], False],
                                         [4, 'residual', [0, 2], True]]}


def test_text_lists_includes_params_then_specs(tmp_path):
  text = best.best_gin_text(['configs/search/proxy_builtin.gin', '/abs/extra.gin'],
                            ["TRAIN_FILE_PATTERN = 'x'", 'TRAIN_BATCH_SIZE = 4'],
                            RECORD, str(tmp_path))
  lines = text.splitlines()
  body = [l for l in lines if not l.startswith('#')]
  assert body[:4] == ["include 'configs/search/proxy_builtin.gin'",
                      "include '/abs/extra.gin'",
                      "TRAIN_FILE_PATTERN = 'x'", 'TRAIN_BATCH_SIZE = 4']
  assert body[4:] == ['build_retinanet.block_specs = (',
                      "    (3, 'bottleneck', (0, 1), False),",
                      "    (4, 'residual', (0, 2), True),", ')']
  assert f'# Best architecture of the search in {tmp_path}:' in lines
  assert '# trial 3, reward 0.4123 (AP50 of the proxy task), params 12345, ' \
         'multiply-adds 6789.' in lines


def test_write_best_writes_gin_and_graph(tmp_path):
  best.write_best(str(tmp_path), RECORD, ['a.gin'], [])
  assert (tmp_path / best.GIN_FILE).read_text().startswith('# Best architecture')
  with open(os.path.join(tmp_path, best.PLOT_FILE), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
