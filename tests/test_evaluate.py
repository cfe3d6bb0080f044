"""Evaluation: an interrupted run resumes from its saved state with exactly the results of an
uninterrupted one, and a state from other settings is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import weat_core.evaluate as ev
import weat_core.results as results
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
    # only the batches still to do: from the 16 images done before (also reported inside the attack)
    assert after[0] == ("pgd3-t", 16) and ("pgd3-t", 24) in after and ("pgd3-t", 8) not in after
    assert _strip_times(resumed) == _strip_times(full)  # bit-identical: the RNG state was saved too
    assert set(resumed["time_s"]) == set(full["time_s"])
    assert not state.exists()  # complete: the state is gone


def test_should_stop_ends_after_a_saved_batch_and_loses_nothing(trained_tiny, synthetic_batch, tmp_path):
    """`should_stop` is asked once each batch is saved: the evaluation ends there (StoppedAfterBatch,
    a KeyboardInterrupt), and resuming gives the uninterrupted results; between two measures it
    stops after the finished one. Without a state to keep the batches, it is not asked."""
    x, y = synthetic_batch
    full = evaluate(trained_tiny, x, y, ["pgd3"], batch_size=8, seed=1)
    state = tmp_path / "eval.json.partial"
    saved = []
    with pytest.raises(ev.StoppedAfterBatch):
        evaluate(trained_tiny, x, y, ["pgd3"], batch_size=8, seed=1, state=state,
                 callback=lambda name, done, n: saved.append((name, done)),
                 should_stop=lambda: ("pgd3", 16) in saved)  # asked after every batch: true after the second
    assert state.is_file() and saved[-1] == ("pgd3", 16)  # it stopped right after the second batch
    after = []
    resumed = evaluate(trained_tiny, x, y, ["pgd3"], batch_size=8, seed=1, state=state,
                       callback=lambda name, done, n: after.append((name, done)))
    assert after[0] == ("pgd3", 16) and ("pgd3", 8) not in after  # the two saved batches were not redone
    assert _strip_times(resumed) == _strip_times(full)
    with pytest.raises(ev.StoppedAfterBatch, match="after clean"):  # asked false in clean's batches, then true
        evaluate(trained_tiny, x, y, ["pgd3"], batch_size=64, seed=1, state=state, should_stop=lambda: True)
    evaluate(trained_tiny, x, y, ["pgd3"], batch_size=8, seed=1, should_stop=lambda: True)  # no state: not asked


def test_a_first_ctrl_c_stops_eval_after_the_batch_under_way(tmp_path, trained_tiny, monkeypatch, capsys):
    """`eval --out`: a first SIGINT lets the batch under way finish and be saved, then the command
    ends (130) saying how to go on; --resume completes it with the results of an uninterrupted run.
    A second SIGINT stops at once."""
    import signal

    from weat_core.cli.evaluate import stop_after_batch

    folder = _noise_folder(tmp_path / "data")
    ck = save(trained_tiny, tmp_path / "ck", {"dataset": str(folder)})
    argv = ["eval", "--checkpoint", str(ck), "--attacks", "pgd2", "--batch-size", "8", "--device", "cpu", "--quiet"]
    real, calls = ev._write_state, {"n": 0}

    def ctrl_c_in_pgd2(*a, **k):  # Ctrl-C pressed while pgd2's first batch is saved
        real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 5:  # clean: 3 batch saves + its end; then pgd2's first batch
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(ev, "_write_state", ctrl_c_in_pgd2)
    assert main(argv + ["--out", str(tmp_path / "a.json")]) == 130
    err = capsys.readouterr().err
    assert "stopping once the batch under way is saved" in err and "--resume" in err
    assert calls["n"] == 5 and (tmp_path / "a.json.partial").is_file()  # stopped right after that batch
    monkeypatch.setattr(ev, "_write_state", real)
    assert main(argv + ["--out", str(tmp_path / "a.json"), "--resume"]) == 0
    assert main(argv + ["--out", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["pgd2_acc"] == b["pgd2_acc"] and a["correct"] == b["correct"] and a["energy"] == b["energy"]
    # the handler: a first SIGINT only asks, a second interrupts; the old handler comes back
    before = signal.getsignal(signal.SIGINT)
    with stop_after_batch(True) as asked:
        signal.raise_signal(signal.SIGINT)
        assert asked()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    with stop_after_batch(False) as asked:  # nothing saved: Ctrl-C as ever
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


def _interrupted(model, x, y, state) -> None:
    """An evaluation of PGD-3 in batches of 8, stopped in PGD-3's first batch: its state is in `state`."""
    def stop(name, done, n):
        if name == "pgd3":
            raise Stop

    with pytest.raises(Stop):
        evaluate(model, x, y, ["pgd3"], batch_size=8, state=state, callback=stop)
    assert state.is_file()


def test_a_state_from_other_settings_is_refused(trained_tiny, synthetic_batch, tmp_path):
    x, y = synthetic_batch
    state = tmp_path / "s.partial"
    _interrupted(trained_tiny, x, y, state)
    with pytest.raises(WeatError, match="other settings"):
        evaluate(trained_tiny, x, y, ["pgd3"], batch_size=16, state=state)
    state.write_bytes(b"not safetensors")
    with pytest.raises(WeatError, match="delete it"):
        evaluate(trained_tiny, x, y, ["pgd3"], batch_size=8, state=state)


def test_a_state_of_another_model_or_other_images_is_refused(trained_tiny, synthetic_batch, tmp_path):
    """The state names the weights and the images it measured (fingerprints): resuming it with
    another checkpoint or another dataset would mix two measurements into one number."""
    import copy

    from safetensors import safe_open
    from safetensors.torch import save_file

    x, y = synthetic_batch
    state = tmp_path / "s.partial"
    _interrupted(trained_tiny, x, y, state)
    other = copy.deepcopy(trained_tiny)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    with pytest.raises(WeatError, match="another model"):
        evaluate(other, x, y, ["pgd3"], batch_size=8, state=state)
    with pytest.raises(WeatError, match="other test images"):
        evaluate(trained_tiny, x.flip(0), y.flip(0), ["pgd3"], batch_size=8, state=state)
    # a state written before states named their model and images still resumes
    with safe_open(str(state), framework="pt") as f:
        meta, tensors = json.loads(f.metadata()["weat_eval_state"]), {k: f.get_tensor(k) for k in f.keys()}
    del meta["settings"]["model"], meta["settings"]["images"]
    save_file(tensors, str(state), metadata={"weat_eval_state": json.dumps(meta)})
    resumed = evaluate(trained_tiny, x, y, ["pgd3"], batch_size=8, state=state)
    assert _strip_times(resumed) == _strip_times(evaluate(trained_tiny, x, y, ["pgd3"], batch_size=8))
    assert not state.exists()


@pytest.mark.parametrize("attack", ["square", "aa"])
def test_the_callback_is_called_inside_an_attack_s_batch(trained_tiny, synthetic_batch, monkeypatch, attack):
    """Square makes 1,000 queries a batch, AutoAttack thousands: `evaluate` calls its callback
    between their forward passes too (in the app, where a Stop click takes effect), so a stop ends
    the batch after a pass, not at its end. Nothing is hooked onto the model, left as found."""
    monkeypatch.setattr(ev, "POLL_S", 0.0)  # every forward pass (the tiny model's are quick)
    x, y = synthetic_batch
    calls, forwards, mode = [], [], trained_tiny.training

    def callback(name, done, n):
        calls.append((name, done, len(trained_tiny._forward_pre_hooks)))
        if name == attack and len([c for c in calls if c[0] == attack]) == 3:
            raise Stop

    hook = trained_tiny.register_forward_pre_hook(lambda m, a: forwards.append(1))
    try:
        with pytest.raises(Stop):
            evaluate(trained_tiny, x, y, [attack], batch_size=len(x), callback=callback)
    finally:
        hook.remove()
    assert calls[0] == ("clean", 32, 1) and calls[1:] == [(attack, 0, 1)] * 3  # inside the first batch
    assert len(forwards) < 10  # the clean batch and a few of the attack's passes, of 1,000 or more
    assert trained_tiny.training == mode and not any(p.grad is not None for p in trained_tiny.parameters())


def test_progress_has_a_bar_per_measure(trained_tiny, synthetic_batch, tmp_path, capsys):
    """A bar per measure, each with its own rate and time left (an AutoAttack batch on a CPU takes
    thousands of times a clean one's); a resumed measure's bar starts at the batches done before."""
    x, y = synthetic_batch  # 4 batches of 8
    state = tmp_path / "eval.json.partial"

    def stop(name, done, n):
        if name == "pgd3" and done == 16:
            raise Stop

    with pytest.raises(Stop):
        evaluate(trained_tiny, x, y, ["pgd3"], batch_size=8, state=state, callback=stop, progress=True)
    err = capsys.readouterr().err
    assert "eval 1/2 clean" in err and "4/4" in err and "eval 2/2 pgd3" in err
    evaluate(trained_tiny, x, y, ["pgd3"], batch_size=8, state=state, progress=True)
    err = capsys.readouterr().err
    assert "eval 1/2 clean" not in err  # done before
    assert "eval 2/2 pgd3" in err and "2/4" in err and "4/4" in err  # from the two batches done before
    assert "1/4" not in err


def _noise_folder(folder):
    """A class-folder dataset of noise: 10 classes × 3 test images, an empty train split."""
    rng = np.random.default_rng(0)
    for c in range(10):
        d = folder / "test" / f"c{c}"
        d.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (folder / "train").mkdir()
    return folder


def test_cli_eval_resume(tmp_path, trained_tiny, monkeypatch, capsys):
    folder = _noise_folder(tmp_path / "data")
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
    # each image's result is kept, and the resumed run's are the uninterrupted run's
    assert got["correct"] == again["correct"] and set(got["correct"]) == {"clean", "pgd2"}
    bits = got["correct"]["pgd2"]
    assert len(bits) == got["n"] and bits.count("1") == round(got["pgd2_acc"] * got["n"])
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
    assert "attacks in bf16" in results.format_table(bf16) and "bf16" not in results.format_table(fp32)
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


def test_an_linf_radius_above_the_pixel_range_is_refused_with_the_fraction_to_write(trained_tiny, tmp_path, capsys):
    """`--eps 8` meant 8/255: as a fraction of [0, 1] it would let an attack paint any image, so
    eval, compare and train refuse it, saying what to write; an L2 radius may exceed 1."""
    from weat_core.cli import main

    with pytest.raises(WeatError, match=r"an L∞ ε of 8 is more than the whole pixel range \[0, 1\].*write 8/255"):
        ev.parse_radius("8")
    assert ev.parse_radius("8/255") == pytest.approx(8 / 255) and ev.parse_radius("1") == 1.0
    assert ev.parse_radius("3", norm="l2") == 3.0
    for argv in (["eval", "--checkpoint", "x", "--eps", "8"], ["compare", "--checkpoints", "x,y", "--eps", "8"],
                 ["train", "--method", "sat", "--dataset", str(tmp_path), "--eps", "8", "--out", str(tmp_path / "r")]):
        assert main([*argv, "--quiet"]) == 2
        assert "write 8/255" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_a_given_step_size_reaches_the_attacks_and_the_result(trained_tiny, synthetic_batch, monkeypatch):
    x, y = synthetic_batch
    seen = []
    real = ev.make_attack
    monkeypatch.setattr(ev, "make_attack", lambda *a, **k: seen.append(k.get("alpha")) or real(*a, **k))
    res = evaluate(trained_tiny, x[:8], y[:8], attacks=("pgd2",), eps=2 / 255, alpha=0.5 / 255)
    assert seen and all(a == 0.5 / 255 for a in seen)
    assert res["alpha"] == 0.5 / 255 and "step 0.0020" in results.format_table(res)
    assert "alpha" not in evaluate(trained_tiny, x[:8], y[:8], attacks=("pgd2",))


def test_paired_accuracy_counts_the_images_only_one_model_gets_right():
    a = [True, True, False, False, True, False, True, True]
    b = [True, False, True, True, True, False, False, True]
    p = results.paired_accuracy(a, b)
    assert (p["n"], p["only_a"], p["only_b"]) == (8, 2, 2)
    assert p["acc_a"] == p["acc_b"] == 5 / 8 and p["diff"] == 0.0
    # the standard error of the mean per-image difference d_i = b_i − a_i ∈ {−1, 0, 1}
    d = np.array(b, float) - np.array(a, float)
    assert p["se"] == pytest.approx(d.std() / np.sqrt(len(d)))
    b2 = [True] * 8  # b right wherever a is, and on three more
    p2 = results.paired_accuracy(a, b2)
    d2 = np.array(b2, float) - np.array(a, float)
    assert p2["diff"] == pytest.approx(3 / 8) and p2["se"] == pytest.approx(d2.std() / np.sqrt(8))
    assert results.paired_accuracy(a, a)["se"] == 0.0  # the same results do not vary
    with pytest.raises(WeatError, match="same images"):
        results.paired_accuracy(a, b[:-1])


def test_compare_results_judges_each_model_against_the_reference():
    n = 400
    ref = {"correct": {"clean": [i % 2 == 0 for i in range(n)], "pgd20": [i % 4 == 0 for i in range(n)]}}
    better = {"correct": {"clean": [i % 2 == 0 or i % 5 == 1 for i in range(n)],  # 40 more right, none less
                          "pgd20": [i % 4 == 0 for i in range(n)]}}
    rows = results.compare_results({"ref": ref, "new": better}, "ref")
    by = {r["measure"]: r for r in rows}
    assert [r["model"] for r in rows] == ["new", "new"]
    assert by["clean"]["verdict"] == "ahead" and by["clean"]["only_b"] == 40 and by["clean"]["only_a"] == 0
    assert by["pgd20"]["verdict"] == "level" and by["pgd20"]["diff"] == 0.0
    worse = {"correct": {"clean": [i % 2 == 0 and i % 10 != 0 for i in range(n)], "pgd20": ref["correct"]["pgd20"]}}
    assert results.compare_results({"ref": ref, "w": worse}, "ref")[0]["verdict"] == "behind"


def test_cli_compare(tmp_path, trained_tiny, capsys):
    import copy

    import torch

    folder = _noise_folder(tmp_path / "data")
    a = save(trained_tiny, tmp_path / "a", {"dataset": str(folder)})
    other = copy.deepcopy(trained_tiny)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    b = save(other, tmp_path / "b", {"dataset": str(folder)})
    out = tmp_path / "cmp.json"
    assert main(["compare", "--checkpoints", f"{a},{b}", "--attacks", "pgd2", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(reference)" in printed and "right only: ref / this" in printed and "n = 30 test images" in printed
    got = json.loads(out.read_text())
    assert got["n"] == 30 and [r["measure"] for r in got["comparisons"]] == ["clean", "pgd2"]
    # the table's numbers are evaluate's on the same images, paired
    from weat_core.data import load_split
    from weat_core.lens import prepare

    test = load_split(str(folder), "test")
    ra = evaluate(prepare(trained_tiny), test.float(), test.y, ["pgd2"], per_image=True)
    rb = evaluate(prepare(other), test.float(), test.y, ["pgd2"], per_image=True)
    want = results.paired_accuracy(ra["correct"]["pgd2"], rb["correct"]["pgd2"])
    row = got["comparisons"][1]
    assert (row["only_a"], row["only_b"], row["acc_a"], row["acc_b"]) == \
        (want["only_a"], want["only_b"], want["acc_a"], want["acc_b"])
    assert got["results"][str(a)]["pgd2_acc"] == want["acc_a"]
    # each image's result is kept, as 0/1 in test order, for pairing later models with these
    bits = got["results"][str(b)]["correct"]["pgd2"]
    assert bits == "".join("1" if c else "0" for c in rb["correct"]["pgd2"]) and len(bits) == 30
    # a later comparison takes both from the file instead of measuring them again: they need not
    # exist any more, and their numbers and pairings come back unchanged
    import shutil

    shutil.rmtree(a)
    out2 = tmp_path / "cmp2.json"
    assert main(["compare", "--checkpoints", f"{b},{a}", "--attacks", "pgd2", "--device", "cpu", "--quiet",
                 "--reuse", str(out), "--out", str(out2)]) == 0
    again = json.loads(out2.read_text())
    assert again["results"][str(a)]["correct"] == got["results"][str(a)]["correct"]
    flipped = again["comparisons"][1]
    assert (flipped["only_a"], flipped["only_b"]) == (row["only_b"], row["only_a"])  # b is the reference now
    # a file measured otherwise is refused with what differs, not paired with other images or attacks
    assert main(["compare", "--checkpoints", f"{b},{a}", "--attacks", "pgd3", "--device", "cpu", "--quiet",
                 "--reuse", str(out)]) != 0
    assert "with clean, pgd2" in capsys.readouterr().err
    assert main(["compare", "--checkpoints", f"{b},{a}", "--n", "20", "--attacks", "pgd2", "--device", "cpu",
                 "--quiet", "--reuse", str(out)]) != 0
    assert "30 images" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{}")
    assert main(["compare", "--checkpoints", f"{b},{a}", "--quiet", "--reuse", str(tmp_path / "junk.json")]) != 0
    assert "not a file that `compare --out` or `eval --out` wrote" in capsys.readouterr().err
    # an `eval --out` file serves as well: b from it, a from the comparison
    evb = tmp_path / "eval-b.json"
    assert main(["eval", "--checkpoint", str(b), "--attacks", "pgd2", "--device", "cpu", "--quiet",
                 "--out", str(evb)]) == 0
    assert main(["compare", "--checkpoints", f"{b},{a}", "--attacks", "pgd2", "--quiet", "--reuse", str(evb),
                 "--reuse", str(out), "--out", str(out2)]) == 0
    both = json.loads(out2.read_text())
    from_eval = json.loads(evb.read_text())["correct"]
    assert both["results"][str(b)]["correct"] == from_eval == got["results"][str(b)]["correct"]
    assert main(["eval", "--checkpoint", str(b), "--attacks", "pgd2", "--alpha", "1/255", "--device", "cpu", "--quiet",
                 "--out", str(evb)]) == 0
    assert main(["compare", "--checkpoints", f"{b},{a}", "--attacks", "pgd2", "--quiet", "--reuse", str(evb)]) != 0
    assert "--alpha" in capsys.readouterr().err
    a = save(trained_tiny, tmp_path / "a", {"dataset": str(folder)})
    # clear refusals
    assert main(["compare", "--checkpoints", str(a), "--quiet"]) != 0
    assert "two or more" in capsys.readouterr().err
    c = save(trained_tiny, tmp_path / "c", {"dataset": str(tmp_path / "elsewhere")})
    assert main(["compare", "--checkpoints", f"{a},{c}", "--device", "cpu", "--quiet"]) != 0
    assert "different datasets" in capsys.readouterr().err


def test_random_targets_depend_on_the_seed_only(trained_tiny, synthetic_batch, monkeypatch):
    """Targeted PGD's random classes are drawn once per image from a generator seeded with `seed`,
    so they are the same for any batch size (and on any device, the generator being the CPU's)."""
    from weat_core.attacks import PGD

    x, y = synthetic_batch
    real = PGD.__call__
    seen: list[torch.Tensor] = []

    def spy(self, model, xb, yb, target=None, callback=None):
        seen.append(target.clone())
        return real(self, model, xb, yb, target=target, callback=callback)

    monkeypatch.setattr(PGD, "__call__", spy)

    def targets(batch_size: int, seed: int) -> torch.Tensor:
        seen.clear()
        evaluate(trained_tiny, x, y, ["pgd1-t"], batch_size=batch_size, seed=seed)
        return torch.cat(seen)

    t = targets(8, 0)
    assert t.shape == y.shape and bool((t != y).all()) and int(t.min()) >= 0 and int(t.max()) < 10
    assert torch.equal(targets(5, 0), t)  # other batches, the same class for every image
    assert not torch.equal(targets(8, 1), t)  # another seed, other targets
    gen = torch.Generator().manual_seed(0)  # the documented draw: y + a shift in 1..K-1, mod K
    assert torch.equal(t, (y + torch.randint(1, 10, tuple(y.shape), generator=gen)) % 10)


def test_compare_pairs_files_by_their_images_not_their_path(tmp_path, trained_tiny, capsys):
    """`eval --out` records a fingerprint of the images it measured; `compare --reuse` pairs a file
    with images that have that fingerprint wherever they lie (a copy of the dataset at another path,
    as on another machine), and refuses one whose images differ though the path is the same."""
    import shutil

    folder = _noise_folder(tmp_path / "data")
    ck = save(trained_tiny, tmp_path / "ck", {"dataset": str(folder)})
    other = save(trained_tiny, tmp_path / "other", {"dataset": str(folder)})
    out = tmp_path / "ev.json"
    assert main(["eval", "--checkpoint", str(ck), "--attacks", "pgd2", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0
    from weat_core.data import load_split

    got = json.loads(out.read_text())
    assert got["images"] == load_split(str(folder), "test").digest() and len(got["images"]) == 16
    copy = shutil.copytree(folder, tmp_path / "elsewhere" / "data")  # the same images under another path
    argv = ["compare", "--checkpoints", f"{other},{ck}", "--attacks", "pgd2", "--device", "cpu", "--quiet",
            "--reuse", str(out), "--dataset", str(copy)]
    assert main(argv) == 0
    assert "(reference)" in capsys.readouterr().out
    # the same 30 images in another order (--n takes the class-balanced one; eval without it, file order)
    assert main(argv + ["--n", "30"]) != 0 and "another order" in capsys.readouterr().err
    first = sorted((copy / "test" / "c0").iterdir())[0]  # one image changed: not the images measured
    first.write_bytes((folder / "test" / "c1" / "0.png").read_bytes())
    assert load_split(str(copy), "test").digest() != got["images"]
    assert main(argv) != 0 and "Match those" in capsys.readouterr().err
    legacy = {k: v for k, v in got.items() if k != "images"}  # a file from before fingerprints: by its path
    out.write_text(json.dumps(legacy))
    assert main(argv[:-2] + ["--dataset", str(folder)]) == 0
    assert main(argv) != 0


def test_against_stored_pairs_only_what_was_stored_for_the_same_images():
    """eval's comparison with a checkpoint's stored metrics: AutoAttack by its own image count,
    the others by `n`; another ε, norm or step has nothing stored to compare with."""
    from weat_core.results import against_stored, format_against_stored

    metrics = {"clean_acc": 0.8, "pgd20_acc": 0.4, "aa_acc": 0.35, "aa_n": 1000, "n": 10000}
    energy = {"clean": {}, "pgd20": {}, "aa": {}}
    res = {"n": 1000, "eps": 8 / 255, "norm": "linf", "energy": energy, "clean_acc": 0.81, "pgd20_acc": 0.41,
           "aa_acc": 0.3425}
    assert against_stored(res, metrics) == {"aa": (0.35, 0.3425)}
    assert against_stored({**res, "n": 10000}, metrics) == {"clean": (0.8, 0.81), "pgd20": (0.4, 0.41)}
    for other in ({"eps": 4 / 255}, {"norm": "l2"}, {"alpha": 1 / 255}):
        assert against_stored({**res, **other}, metrics) == {}
    assert against_stored(res, {}) == {} and format_against_stored({}, 1000) == ""
    text = format_against_stored({"aa": (0.35, 0.3425)}, 1000)
    assert text.splitlines()[0] == "stored with the checkpoint, measured on 1,000 test images too:"
    assert text.splitlines()[-1].split() == ["aa", "35.00", "34.25", "-0.75"]
