"""The command line's parser is light (no torch), and the lazily exported package names all resolve."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_building_the_parser_imports_no_torch():
    """`python -m weat_core --help` (and each command's --help) answers without importing torch or timm,
    which take seconds; a top-level import of either in a module the parser reads fails this."""
    code = ("import sys; from weat_core.cli import build_parser; p = build_parser(); "
            "p.parse_args(['train', '--epochs', '1']); "
            "print(','.join(m for m in ('torch', 'timm', 'torchvision', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_list_reads_the_configs_without_torch():
    """`list` reads config.json files only; loading weights is where torch comes in."""
    code = ("import sys; from weat_core.cli import main; rc = main(['list']); "
            "print('TORCH' if 'torch' in sys.modules else 'LIGHT', rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "LIGHT 0"
    assert "weatnet_s-weat-adv" in out


def test_list_is_a_table_with_a_column_per_measure(capsys):
    """`list` prints the shipped checkpoints as a table: a header, every column starting where its
    header does however long the names, and the accuracies in percent under clean, PGD-20, ..."""
    from weat_core.checkpoints import list_checkpoints
    from weat_core.cli import main

    assert main(["list"]) == 0
    table = capsys.readouterr().out.split("\n\n")[0].splitlines()
    head = table[0]
    assert head.split()[:5] == ["checkpoint", "arch", "method", "dataset", "clean"]
    starts = [head.index(h) for h in ("arch", "method", "dataset")]
    infos = {i.name: i for i in list_checkpoints()}
    assert len(table) == 1 + len(infos)
    for line in table[1:]:
        name = line.split()[0]
        assert [line[s - 2:s] for s in starts] == ["  "] * 3 and line[starts[0]:].startswith(infos[name].arch), line
        at = head.index("clean %")  # the number right-aligned under its header
        assert line[at:at + len("clean %")] == f"{100 * infos[name].metrics['clean_acc']:.1f}".rjust(len("clean %"))


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "weat_core", "--help"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    for command in ("train", "eval", "sweep", "landscape", "list", "export", "push", "generate", "gen-eval",
                    "init-stats"):
        assert command in out


def test_options_must_be_spelled_out(capsys):
    """argparse would read `generate --n 2` as --noise-std 2 (eval, sweep and landscape have --n);
    every command refuses abbreviations instead, and full names still parse."""
    from weat_core.cli import build_parser

    p = build_parser()
    for argv in (["generate", "--checkpoint", "m", "--out", "o", "--n", "2"], ["train", "--epoch", "1"],
                 ["eval", "--checkpoint", "m", "--attack", "pgd20"]):
        with pytest.raises(SystemExit):
            p.parse_args(argv)
        assert "unrecognized arguments" in capsys.readouterr().err
    args = p.parse_args(["generate", "--checkpoint", "m", "--out", "o", "--noise-std", "0.01"])
    assert args.noise_std == 0.01
    assert p.parse_args(["eval", "--checkpoint", "m", "--n", "5"]).n == 5


def test_an_unknown_option_gets_the_command_s_usage_and_a_hint(capsys):
    from weat_core.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--epoch", "3", "--lr-schedul", "step", "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "python -m weat_core train: error: unrecognized arguments: --epoch 3 --lr-schedul step" in err
    assert "--epoch: did you mean --epochs?" in err and "--lr-schedul: did you mean --schedule?" in err
    with pytest.raises(SystemExit):
        main(["eval", "--checkpoint", "m", "--foo", "1"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --foo 1" in err and "did you mean" not in err


@pytest.mark.parametrize("package", ["weat_core.train", "weat_core.sampling"])
def test_lazy_exports_resolve(package):
    pkg = importlib.import_module(package)
    submodules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
    assert set(pkg._EXPORTS) == set(pkg.__all__)
    # an exported name equal to a submodule's would be replaced by the module once that is imported
    assert not submodules & set(pkg._EXPORTS)
    for name, sub in pkg._EXPORTS.items():
        assert getattr(pkg, name) is getattr(importlib.import_module(f"{package}.{sub}"), name)
    assert set(pkg.__all__) <= set(dir(pkg))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pkg.nope


def test_the_generate_function_survives_its_module_being_imported():
    from weat_core.sampling import generation
    import weat_core.sampling as sampling

    assert sampling.generate is generation.generate and callable(sampling.generate)


def test_init_stats_size_default_matches_the_library():
    from weat_core.cli.init_stats import DEFAULT_MAX_MB
    from weat_core.sampling.class_stats import DEFAULT_MAX_BYTES

    assert DEFAULT_MAX_MB * 2**20 == DEFAULT_MAX_BYTES


def test_default_cpu_arch_is_one_name():
    import weat_core
    from weat_core.models import DEFAULT_CPU_ARCH, list_archs
    from weat_core.train import TrainConfig

    assert DEFAULT_CPU_ARCH is weat_core.DEFAULT_CPU_ARCH == TrainConfig().arch
    assert DEFAULT_CPU_ARCH in list_archs()


@pytest.mark.parametrize("argv", [["eval", "--checkpoint", "x", "--n", "0"],
                                  ["compare", "--checkpoints", "x,y", "--batch-size", "-4"],
                                  ["train", "--method", "sat", "--epochs", "0"],
                                  ["train", "--method", "sat", "--limit", "ten"],
                                  ["generate", "--checkpoint", "x", "--out", "o", "--per-class", "0"]])
def test_counts_below_one_are_refused_by_the_parser(argv, capsys):
    """A count of images, epochs or chains below 1 is the parser's error, naming the option, before
    any model or data is read (`--n 0` used to reach the data loader as 'limit … None')."""
    from weat_core.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    assert f"argument {argv[-2]}: takes a whole number, 1 or more; got {argv[-1]!r}" in capsys.readouterr().err


def test_threads_sets_torch_s_cpu_threads_before_the_command_runs(capsys):
    """`--threads N` on every command that runs a model: torch uses N threads (set before the command's
    own work, here one that fails at once on a missing checkpoint); 0 is the parser's error, and `list`,
    which runs no model, has no such option."""
    code = ("import torch; from weat_core.cli import main; torch.set_num_threads(2); "
            "rc = main(['eval', '--checkpoint', 'no-such-checkpoint', '--threads', '1', '--quiet']); "
            "print('THREADS', torch.get_num_threads(), rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "THREADS 1 2"
    from weat_core.cli import build_parser

    p = build_parser()
    assert p.parse_args(["train", "--threads", "3"]).threads == 3
    assert p.parse_args(["generate", "--checkpoint", "m", "--out", "o"]).threads is None
    for argv in (["eval", "--checkpoint", "m", "--threads", "0"], ["list", "--threads", "1"]):
        with pytest.raises(SystemExit):
            p.parse_args(argv)
        capsys.readouterr()


@pytest.mark.parametrize("argv, says", [
    (["eval", "--checkpoint", "no-such-checkpoint", "--attacks", "pgd5,foo"], "unknown attack 'foo'"),
    (["compare", "--checkpoints", "no-such-a,no-such-b", "--attacks", "pgd5-x"], "unknown attack 'pgd5-x'"),
    (["train", "--arch", "nope", "--dataset", "/no/such/dataset", "--epochs", "1"], "unknown architecture 'nope'"),
])
def test_a_wrong_name_fails_before_any_checkpoint_or_dataset_is_read(argv, says, tmp_path, capsys):
    """An unknown attack or architecture is the first error, not one found after loading the model and
    the test images (seconds on a CPU, minutes for a 50,000-image training set): here neither exists."""
    from weat_core.cli import main

    assert main([*argv, "--out", str(tmp_path / "out")] if argv[0] == "train" else argv) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["train", "--arch", "weatnet_tiny"], "the last complete epoch is saved (continue with --resume)"),
    (["eval", "--checkpoint", "m", "--out", "r.json"], "the batches done are saved in r.json.partial"),
    (["eval", "--checkpoint", "m"], "nothing was saved (with --out, progress is kept"),
    (["landscape", "--checkpoint", "m"], "nothing was saved"),
])
def test_ctrl_c_says_what_the_command_kept(monkeypatch, capsys, argv, says):
    """Ctrl-C ends a command with what it saved and how to go on: a training run its last epoch,
    an evaluation with --out its batches, anything else nothing (not the training run's advice)."""
    from weat_core.cli import evaluate as cli_eval, main, observation, train as cli_train

    def interrupt(args):
        raise KeyboardInterrupt

    for mod, fn in ((cli_train, "_cmd_train"), (cli_eval, "_cmd_eval"), (observation, "_cmd_landscape")):
        monkeypatch.setattr(mod, fn, interrupt)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted; ") and says in err
