"""Evaluation: an interrupted run resumes from its saved state with exactly the results of an
uninterrupted one, and a state from other settings is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import weat_core.evaluate as ev
from weat_core import WeatError
from weat_core.checkpoints import save
from weat_core.cli import main
from weat_core.evaluate import evaluate

ATTACKS = ["pgd3", "pgd3-t", "apgd-ce"]


class Stop(Exception):
    pass


def _strip_times(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "time_s"}


@pytest.mark.parametrize("per_image", [False, True])
def test_interrupted_evaluation_resumes_to_the_same_results(trained_tiny, synthetic_batch, tmp_path, per_image):
    x, y = synthetic_batch  # 32 images: 4 batches of 8 per attack
    full = evaluate(trained_tiny, x, y, ATTACKS, batch_size=8, seed=1, per_image=per_image)
    if per_image:  # one right/wrong per image and attack, adding up to the accuracy
        assert set(full["correct"]) == {"clean", *ATTACKS}
        for name, right in full["correct"].items():
            acc = full["clean_acc" if name == "clean" else f"{name}_acc"]
            assert len(right) == 32 and all(isinstance(r, bool) for r in right) and sum(right) == round(acc * 32)
    else:
        assert "correct" not in full

    state = tmp_path / "eval.json.partial"
    seen = []

    def crash_in_pgd3_t(name, done, n):
        seen.append((name, done))
        if name == "pgd3-t" and done == 16:  # mid-attack, after two of its four batches
            raise Stop

    with pytest.raises(Stop):
        evaluate(trained_tiny, x, y, ATTACKS, batch_size=8, seed=1, state=state, callback=crash_in_pgd3_t,
                 per_image=per_image)
    assert state.is_file()
    after = []
    resumed = evaluate(trained_tiny, x, y, ATTACKS, batch_size=8, seed=1, state=state,
                       callback=lambda name, done, n: after.append((name, done)), per_image=per_image)
    assert after[0] == ("pgd3-t", 24)  # only the batches still to do
    assert _strip_times(resumed) == _strip_times(full)  # bit-identical: the RNG state was saved too
    assert set(resumed["time_s"]) == set(full["time_s"])
    assert not state.exists()  # complete: the state is gone


def test_a_state_from_other_settings_is_refused(trained_tiny, synthetic_batch, tmp_path):
    x, y = synthetic_batch
    state = tmp_path / "s.partial"

    def stop(name, done, n):
        if name == "pgd3":
            raise Stop

    with pytest.raises(Stop):
        evaluate(trained_tiny, x, y, ["pgd3"], batch_size=8, state=state, callback=stop)
    with pytest.raises(WeatError, match="other settings"):
        evaluate(trained_tiny, x, y, ["pgd3"], batch_size=16, state=state)
    state.write_bytes(b"not safetensors")
    with pytest.raises(WeatError, match="delete it"):
        evaluate(trained_tiny, x, y, ["pgd3"], batch_size=8, state=state)


def test_cli_eval_resume(tmp_path, trained_tiny, monkeypatch, capsys):
    folder = tmp_path / "data"
    rng = np.random.default_rng(0)
    for c in range(10):
        d = folder / "test" / f"c{c}"
        d.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (folder / "train").mkdir()
    ck = save(trained_tiny, tmp_path / "ck", {"dataset": str(folder)})
    out = tmp_path / "res.json"
    argv = ["eval", "--checkpoint", str(ck), "--attacks", "pgd2", "--batch-size", "8", "--device", "cpu",
            "--quiet", "--out", str(out)]
    real = ev._write_state
    calls = {"n": 0}

    def die_after_two(*a, **k):  # a kill after the second saved batch
        real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 6:  # clean: 3 batch saves + its end; then two of the four pgd2 batches
            raise Stop

    monkeypatch.setattr(ev, "_write_state", die_after_two)
    with pytest.raises(Stop):
        main(argv)
    monkeypatch.setattr(ev, "_write_state", real)
    assert main(argv) != 0 and "--resume" in capsys.readouterr().err  # a leftover state is not overwritten
    assert main(argv + ["--resume"]) == 0
    assert not (tmp_path / "res.json.partial").exists()
    got = json.loads(out.read_text())
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--checkpoint", str(ck), "--attacks", "pgd2", "--batch-size", "8", "--device", "cpu",
                 "--quiet", "--out", "again.json"]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert got["pgd2_acc"] == again["pgd2_acc"] and got["energy"] == again["energy"]
    assert main(["eval", "--checkpoint", str(ck), "--resume"]) != 0  # --resume needs --out

    seen = []  # default batch: 256, but 64 for the torchattacks evaluations on a CPU (progress per batch)

    def spy(*a, **k):
        seen.append(k["batch_size"])
        raise Stop

    monkeypatch.setattr(ev, "evaluate", spy)
    for attacks in ("pgd2", "aa-fast", "pgd2,apgd-t", "square"):
        with pytest.raises(Stop):
            main(["eval", "--checkpoint", str(ck), "--attacks", attacks, "--device", "cpu", "--quiet"])
    assert seen == [256, 64, 64, 64]


def test_amp_runs_the_attacks_in_bf16_and_measures_in_fp32(trained_tiny, synthetic_batch, tmp_path, capsys):
    """evaluate(amp=True): the attacks (ours and torchattacks', which cannot take bf16 logits on
    their own) run under bf16 autocast, while accuracy and energies come from fp32 forwards, so
    the clean row is exactly the fp32 one; the result and its table say so, and `eval --store`
    refuses it (the stored metrics are fp32)."""
    x, y = synthetic_batch
    fp32 = evaluate(trained_tiny, x, y, ["pgd3"], batch_size=16)
    bf16 = evaluate(trained_tiny, x, y, ["pgd3", "apgd-ce"], batch_size=16, amp=True)
    assert bf16["amp"] is True and "amp" not in fp32
    assert bf16["clean_acc"] == fp32["clean_acc"] and bf16["energy"]["clean"] == fp32["energy"]["clean"]
    assert 0 <= bf16["pgd3_acc"] <= bf16["clean_acc"] and 0 <= bf16["apgd-ce_acc"] <= bf16["clean_acc"]
    assert "attacks in bf16" in ev.format_table(bf16) and "bf16" not in ev.format_table(fp32)
    ck = save(trained_tiny, tmp_path / "ck", {"dataset": "cifar10"})
    assert main(["eval", "--checkpoint", str(ck), "--amp", "--store", "--device", "cpu", "--quiet"]) != 0
    assert "fp32 measurements only" in capsys.readouterr().err


def test_an_unknown_attack_fails_before_any_work(trained_tiny, synthetic_batch, monkeypatch):
    """A typo in the last of several attack names is reported before the clean pass and the first attack
    run (which take minutes on a full split), as one sentence that lists the names."""
    x, y = synthetic_batch
    ran = []
    monkeypatch.setattr(ev, "eval_logits", lambda *a, **k: ran.append(1))
    with pytest.raises(WeatError, match="unknown attack 'pgd20-x'.*use pgdN"):
        evaluate(trained_tiny, x, y, attacks=("pgd5", "pgd20-x"))
    assert not ran


@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), ("0.5", 0.5), ("2", 2.0)])
def test_parse_eps(text, value):
    assert ev.parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["foo", "8/", "8/0", "/255", ""])
def test_parse_eps_rejects_what_is_not_a_number(text):
    with pytest.raises(WeatError, match="is not a number: write it as a fraction such as 8/255"):
        ev.parse_eps(text)


def test_a_given_step_size_reaches_the_attacks_and_the_result(trained_tiny, synthetic_batch, monkeypatch):
    x, y = synthetic_batch
    seen = []
    real = ev.make_attack
    monkeypatch.setattr(ev, "make_attack", lambda *a, **k: seen.append(k.get("alpha")) or real(*a, **k))
    res = evaluate(trained_tiny, x[:8], y[:8], attacks=("pgd2",), eps=2 / 255, alpha=0.5 / 255)
    assert seen and all(a == 0.5 / 255 for a in seen)
    assert res["alpha"] == 0.5 / 255 and "step 0.0020" in ev.format_table(res)
    assert "alpha" not in evaluate(trained_tiny, x[:8], y[:8], attacks=("pgd2",))
