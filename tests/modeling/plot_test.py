"""plot_block_graph writes a PNG of a block graph and refuses bad specs."""
import pytest

from spinenet.modeling import block_specs as bs
from spinenet.modeling import plot

_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'

# Block 1 (level 4, unconsumed) is merged into the level-4 output block 3.
_MERGED_SPECS = (
    (3, 'bottleneck', (0, 1), False),
    (4, 'residual', (0, 2), False),
    (3, 'bottleneck', (1, 2), True),
    (4, 'residual', (2, 4), True),
    (5, 'bottleneck', (4, 5), True),
)


def test_spec_has_a_merged_block():
  plan = bs.merge_plan(bs.to_block_specs(_MERGED_SPECS))
  assert any(plan.merged.values())


def test_writes_a_png(tmp_path):
  path = tmp_path / 'graph.png'
  plot.plot_block_graph(_MERGED_SPECS, str(path), title='tiny')
  data = path.read_bytes()
  assert data[:8] == _PNG_MAGIC
  # Width from the header: max(8, 0.6 * nodes + 2) inches at 120 dpi.
  width = int.from_bytes(data[16:20], 'big')
  assert width == 8 * 120


def test_wide_spec_gives_a_wider_figure(tmp_path):
  path = tmp_path / 'spinenet49.png'
  plot.plot_block_graph(bs.SPINENET_49, str(path))
  data = path.read_bytes()
  assert data[:8] == _PNG_MAGIC
  nodes = len(bs.SPINENET_49) + bs.merge_plan(bs.to_block_specs(bs.SPINENET_49)).num_stem_blocks
  assert int.from_bytes(data[16:20], 'big') == int(round((0.6 * nodes + 2) * 120))


def test_malformed_spec_raises_naming_the_block(tmp_path):
  path = tmp_path / 'bad.png'
  with pytest.raises(ValueError, match=r'block_specs\[1\]: expected \(level, block_fn'):
    plot.plot_block_graph(((3, 'bottleneck', (0, 1), True), (4, 'residual', (0,), True)),
                          str(path))
  assert not path.exists()


@pytest.mark.parametrize('specs, message', [
    (((3, 'bottleneck', (0, 1), True), (4, 'residual', (0, 9), True)),
     r'block_specs\[1\]: parent 9 is not built yet; parents must be in \[0, 2\]'),
    (((3, 'unknown_block', (0, 1), True),),
     r"block_specs\[0\]: unknown block_fn 'unknown_block'"),
])
def test_unbuildable_spec_raises_naming_the_block(tmp_path, specs, message):
  path = tmp_path / 'bad.png'
  with pytest.raises(ValueError, match=message):
    plot.plot_block_graph(specs, str(path))
  assert not path.exists()
