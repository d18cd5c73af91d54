"""Search reports: reward-curve picture and summary table."""
import os
import tempfile

from absl.testing import absltest

from spinenet.search import report


def _record(trial, reward, status='ok'):
  return {'trial': trial, 'reward': reward, 'status': status,
          'reward_metric': 'AP50', 'metrics': {'AP': reward / 2},
          'params': 1000 + trial, 'flops': 2e8, 'seconds': 60.0}


class ReportTest(absltest.TestCase):

  def test_reward_curve_and_table(self):
    records = [_record(0, 0.1), _record(2, 0.3), _record(1, 0.0, 'failed'),
               _record(3, 0.2)]
    path = os.path.join(tempfile.mkdtemp(), 'curve.png')
    report.plot_reward_curve(records, path)
    with open(path, 'rb') as f:
      self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')
    table = report.summary_table(records, top=2).splitlines()
    self.assertEqual(table[0].split('|')[2].strip(), 'AP50')
    self.assertEqual([row.split('|')[1].strip() for row in table[2:4]], ['2', '3'])
    self.assertIn('4 trials (1 failed), 0.1 h', table[-1])


if __name__ == '__main__':
  absltest.main()
