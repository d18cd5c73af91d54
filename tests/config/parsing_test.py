"""Gin parsing: every mistake names its file, line or binding."""
import os

import gin
import pytest

from spinenet.config import parsing

PATTERNS = ["TRAIN_FILE_PATTERN = '/data/train-*'", "EVAL_FILE_PATTERN = '/data/val-*'"]


def _gin_file(tmp_path, text, name='exp.gin'):
  path = tmp_path / name
  path.write_text("include 'experiments/demo_cpu.gin'\n" + text)
  return str(path)


def test_files_resolve_here_then_under_the_repository(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert parsing.resolve_file('experiments/demo_cpu.gin') == os.path.join(
      parsing.REPO_ROOT, 'experiments', 'demo_cpu.gin')
  (tmp_path / 'experiments').mkdir()
  (tmp_path / 'experiments' / 'demo_cpu.gin').write_text('')
  assert parsing.resolve_file('experiments/demo_cpu.gin') == 'experiments/demo_cpu.gin'
  with pytest.raises(parsing.ConfigError, match=r"--gin_file 'nope.gin' does not exist"):
    parsing.resolve_file('nope.gin')


def test_include_path_is_repository_relative_when_inside(tmp_path):
  assert parsing.include_path('experiments/demo_cpu.gin') == 'experiments/demo_cpu.gin'
  outside = _gin_file(tmp_path, '')
  assert parsing.include_path(outside) == outside


def test_later_bindings_win():
  parsing.parse_config(['experiments/demo_cpu.gin'],
                       PATTERNS + ['TrainerOptions.train_steps = 7'])
  assert gin.query_parameter('TrainerOptions.train_steps') == 7


@pytest.mark.parametrize('binding, message', [
    ('OptimizerOptions.learning_rat = 0.1',
     "'OptimizerOptions' doesn't have a parameter named 'learning_rat'"),
    ('OptimizerOption.learning_rate = 0.1', "No configurable matching 'OptimizerOption'"),
])
def test_unknown_names_name_the_binding_and_file(tmp_path, binding, message):
  path = _gin_file(tmp_path, binding + '\n')
  with pytest.raises(parsing.ConfigError) as e:
    parsing.parse_config([path], PATTERNS)
  assert message in str(e.value)
  assert path in str(e.value)


def test_unknown_model_argument_names_file_and_line(tmp_path):
  path = _gin_file(tmp_path, '# build_retinanet.filtr_size_scale in a comment\n'
                             'build_retinanet.filtr_size_scale = 0.5\n')
  with pytest.raises(parsing.ConfigError) as e:
    parsing.parse_config([path], PATTERNS)
  message = str(e.value)
  assert "build_retinanet has no argument(s) ['filtr_size_scale']" in message
  assert f'{path}:3: build_retinanet.filtr_size_scale = 0.5' in message
  assert f'{path}:2' not in message  # comments are not bindings
  with pytest.raises(parsing.ConfigError, match=r'--gin_param: build_retinanet.resample_alfa'):
    parsing.parse_config(['experiments/demo_cpu.gin'],
                         PATTERNS + ['build_retinanet.resample_alfa = 0.5'])


def test_syntax_error_names_file_and_line(tmp_path):
  path = _gin_file(tmp_path, 'TrainerOptions.train_steps = 5\nTrainerOptions.train_steps 6\n')
  with pytest.raises(parsing.ConfigError, match=rf'{path}, line 3: gin syntax error'):
    parsing.parse_config([path], PATTERNS)


def test_required_macro_names_the_macro_and_the_fix():
  with pytest.raises(parsing.ConfigError) as e:
    parsing.parse_config(['experiments/demo_cpu.gin'], PATTERNS[:1])
  assert 'gin macro EVAL_FILE_PATTERN is required but not set' in str(e.value)
  assert '--gin_param="EVAL_FILE_PATTERN = ..."' in str(e.value)


def test_unfinalized_parse_leaves_required_values_open():
  parsing.parse_config(['configs/search/proxy_builtin.gin'], finalize=False)
  assert gin.query_parameter('build_retinanet.input_size') == 128
  # ...but a typo is still refused.
  with pytest.raises(parsing.ConfigError, match="No configurable matching 'SearchOption'"):
    parsing.parse_config(['configs/search/proxy_builtin.gin'],
                         ["SearchOption.algorithm = 'random'"], finalize=False)


def test_write_config(tmp_path):
  parsing.parse_config(['experiments/demo_cpu.gin'],
                       PATTERNS + ['TrainerOptions.train_steps = 7'])
  parsing.write_config(str(tmp_path / 'model'))
  text = (tmp_path / 'model' / 'config.gin').read_text()
  assert 'TrainerOptions.train_steps = 7' in text
  assert "TRAIN_FILE_PATTERN = '/data/train-*'" in text
