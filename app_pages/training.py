"""Training dynamics: recorded runs (SAT vs TRADES vs WEAT) and a live run on the CPU."""

from dataclasses import asdict
from pathlib import Path

import pandas as pd
import streamlit as st

from app_pages import common, kept_runs, live_runs, model_store, run_charts
from weat_core import WeatError, lens

c = common.ctx()
st.title("Training dynamics")
st.markdown("During adversarial training we track $E(x)$ and $E(x^*)$ on a fixed training subset and "
            "$\\Delta E = \\overline{E(x)} - \\overline{E(x^*)}$ next to robust test accuracy. Training passes "
            "through three phases; **robust overfitting** shows up in the third as natural and adversarial energies "
            "drifting apart (in Mirza et al. (2024), SAT's ΔE falls to about −0.6 late in training while TRADES "
            "keeps it near 0). Each run's line below the charts says how much of its training subset it fits under "
            "attack and how its best and last epoch score on held-out test images (the diamonds).")
# closed at first: open, its table is taller than a laptop's screen and put the charts out of sight
with st.expander("The recorded comparisons: SAT, TRADES and WEAT-adv, each group trained alike"):
    st.markdown(
        "| runs | model and data | what they show |\n|---|---|---|\n"
        "| `preactresnet18-…-5000-step-long` (preselected: the most SGD steps, 3,200–3,800 each) | "
        "PreActResNet-18 (11 M parameters) on 5,000 training images, ε = 8/255, one step schedule, side by side "
        "on an H200 | robust overfitting, SAT only: after the first learning-rate decay every run gains 4–5 "
        "points of robust accuracy; then SAT comes to withstand the attack on 66 % of its own images while its "
        "held-out robust accuracy falls from 33.7 % (epoch 52) to 28.4 % (epoch 98), far beyond the noise, and "
        "its ΔE dives to −0.94 on its training images while staying near −0.2 on unseen ones. TRADES and "
        "WEAT-adv hold their held-out accuracy (within 0.5 points) and their ΔE (−0.19, −0.16). "
        "`preactresnet18-weat-adv-lr0.3-5000-step-long`, WEAT-adv at a step like TRADES', ends level with both |\n"
        "| `preactresnet18-…-5000-step` | the same, about 2,000 SGD steps each, on an H100 | the start of it: SAT's "
        "held-out robust accuracy slips 1.4 points (inside the noise) and its ΔE falls to −0.3 on its training "
        "images |\n"
        "| `weatnet_s-…-256-step` | weatnet_s on 256 images, ε = 8/255, 400 epochs, on a CPU | robust overfitting "
        "in its plainest form: each run comes to withstand the attack on 99–100 % of its own images while its "
        "held-out robust accuracy falls 5–9 points (SAT 15.8 % → 6.4 %); ΔE on its training images dives to −1.7 "
        "(TRADES) … −3.0 (SAT), while on unseen images the attack now lowers E(x) |\n"
        "| `weatnet_s-…-1k-step-eps2` | weatnet_s on 1,024 images, ε = 2/255, on a CPU | the model fits its images "
        "under attack: SAT overfits beyond the noise (held-out robust accuracy 33.4 % → 31.2 %, ΔE −0.31 on its "
        "training images); TRADES does not; WEAT-adv fits 99 % of its images, with ΔE −0.66 on them, yet holds "
        "its held-out accuracy |\n"
        "| `weatnet_s-sat-1k-step-eps2-ema` (pick it beside `weatnet_s-sat-1k-step-eps2`) | the same SAT run, "
        "keeping a weight average (`train --ema 0.999`) | the trained weights take exactly the same steps; their "
        "average does not peak after the first decay but rises to the end, and on 2,000 held-out images ends 0.7 "
        "points above the trained weights' last epoch (31.9 % against 31.2 %, within the paired noise), still 1.5 "
        "below their best (33.4 %); on its own training images its ΔE falls less (−0.26 against −0.31) |\n"
        "| `preactresnet18-weat-adv`, `preactresnet18-trades`, `preactresnet18-sat` (the shipped models) | "
        "PreActResNet-18 on all 50,000 training images, 58 epochs of one learning-rate cycle, ε = 8/255, on an "
        "H100 (SAT: an H200) | one recipe, three losses: TRADES ends 2 points ahead of WEAT-adv in clean accuracy "
        "and level in robust accuracy, and its ΔE falls a little further (−0.18 against −0.14 on its training "
        "images); SAT ends 2 points ahead of TRADES in clean accuracy and 3 behind under attack, its ΔE dives to "
        "−1.17, and in its last five epochs it begins to overfit: its training subset's robust accuracy climbs "
        "7 points while the test subset's slips 1.6 (within that subset's noise) |\n"
        "| `preactresnet18-weat-adv-100ep` (pick it beside `preactresnet18-weat-adv`) | the same WEAT-adv recipe "
        "at the paper's 100 epochs, on an H200 | the longer cycle ends 1.1 points higher in clean accuracy and 0.75 "
        "under PGD-20 (10,000 test images), level under AutoAttack; nothing overfits: the test subset's robust "
        "accuracy peaks in the last six epochs, while the training subset's pulls 20 points ahead of it and its "
        "ΔE falls to −0.16 |\n"
        "| `weatnet_s-w48-…-1k-step`, `preactresnet18-…-512-step` | weatnet_s at width 48 on 1,024 images, "
        "PreActResNet-18 on 512, ε = 8/255, on a CPU | the models fit only a third to a half of their images "
        "under attack and robust overfitting stays mild. WEAT's weights average about a third, which shrinks its "
        "SGD steps: TRADES at a third of the learning rate shows how much of WEAT-adv's curve that explains, and "
        "WEAT-adv at three times the learning rate (a step like TRADES') fits and generalises about as TRADES "
        "does |\n\n"
        "docs/models.md has the numbers.")

jobs: dict = st.session_state.setdefault("train_jobs", {})  # (a reloaded page's run: live_runs.keep_in_url)


tab_rec, tab_live = st.tabs(["Recorded runs", "Live run"], key="tr_tab")  # keyed: stays on "Live run" across reruns

with tab_rec:
    runs: dict[str, pd.DataFrame] = {}
    held_checks: dict[str, dict] = {}
    sources = [(i, i["method"]) for i in model_store.checkpoint_infos() if i["has_log"]]
    sources += [(i, f"{i['method']}, log only") for i in model_store.recorded_runs()]  # shipped without weights
    for info, what in sources:
        try:
            runs[f"{info['name']} ({what})"] = lens.load_training_log(Path(info["path"]))
            if info.get("heldout"):
                held_checks[f"{info['name']} ({what})"] = info["heldout"]
        except WeatError as e:
            st.warning(f"{info['name']}: {e}")
    for name, job in jobs.items():
        if job.history:
            runs[f"{name} (this session)"] = lens.history_frame(job.history)
    runs.update(kept_runs.logs(skip=[j.config.out for j in jobs.values() if j.config.out]))
    if not runs:
        st.info("No recorded runs yet: none of the shipped checkpoints carries a log.jsonl. Train a model on the "
                "**Live run** tab and its curves appear here too.")
    else:
        # by default one run of each of three methods: among the recorded comparisons that carry a
        # held-out check, the one with the most SGD steps (robust overfitting needs steps), then the
        # runs trained like it (same model, data, batch, learning rate, schedule, ε) with the most
        # steps, then the rest; without such comparisons, the longest runs
        steps = {f"{i['name']} ({w})": i.get("sgd_steps") for i, w in sources if i.get("heldout") and i.get("sgd_steps")}
        recipe = {f"{i['name']} ({w})": i.get("recipe") for i, w in sources}
        order = (sorted((k for k in steps if k in runs), key=lambda k: -steps[k]) if steps
                 else sorted(runs, key=lambda k: -int(runs[k]["epoch"].max())))
        if steps and order:
            anchor = recipe.get(order[0])
            order.sort(key=lambda k: recipe.get(k) != anchor)  # stable: most steps first within each part
        longest, methods = [], set()
        for k in order:
            method = str(runs[k]["method"].iloc[-1]) if "method" in runs[k] else k
            if method not in methods and len(longest) < 3:
                longest.append(k)
                methods.add(method)
        pick = st.multiselect("Runs", list(runs), default=[k for k in runs if k in longest], key="tr_runs")
        if pick:
            run_charts.run_curves({k: runs[k] for k in pick}, "rec", held_checks)
            with st.expander("Per-epoch records"):
                st.dataframe(pd.concat([runs[k].assign(run=k) for k in pick]), hide_index=True)

with tab_live:
    st.markdown("Train the small CPU model on a subset, curves updating every epoch. The result joins the "
                "sidebar's model picker as *trained here: …*.")
    with st.form("tr_form"):
        a, b, d = st.columns(3)
        method = a.selectbox("Method", ["weat-adv", "weat-nat", "trades", "sat", "mart", "standard"], key="tr_method")
        epochs = a.slider("Epochs", 1, 30, 5, key="tr_epochs")
        cap = live_runs.max_run_minutes()
        budgets = [m for m in (0.5, 1, 2, 5, 10, 20) if cap is None or m < cap] + \
            ([int(cap) if cap.is_integer() else cap] if cap else [])  # "10", not "10.0"
        budget = a.select_slider("Time budget (minutes)", ["off", *budgets], "off", key="tr_minutes",
                                 help="Instead of the epoch count: times a few steps, then trains as many whole "
                                      "epochs as fit (at least one)." + (
                                          f" This server gives a run at most {cap:g} minutes." if cap else ""))
        n_train = b.select_slider("Training images", [64, 256, 512, 1000, 2000, 5000, 10000, 50000], 2000,
                                  key="tr_n")
        batch = b.select_slider("Batch size", [16, 32, 64, 128, 256], 128, key="tr_batch")
        steps = d.slider("Attack steps (training)", 1, 10, 3, key="tr_steps")
        lr = d.select_slider("Peak learning rate (one-cycle)", [0.01, 0.02, 0.05, 0.1, 0.2], 0.1, key="tr_lr")
        ema = d.checkbox("Keep a weight average", False, key="tr_ema",
                         help="An exponential moving average of the weights (`train --ema 0.999`), measured every "
                              "epoch beside them and handed back as the trained model. In short one-cycle runs it "
                              "lags the last weights; in the recorded SAT run at 2/255 it kept rising where the "
                              "trained weights peaked and fell (docs/models.md).")
        start = st.form_submit_button("Start training", type="primary")
        if cap:
            st.caption(f"This server gives each run at most {cap:g} minutes, so that its visitors take turns: with "
                       f"the time budget off, a run trains the epochs asked for or as many as fit in {cap:g} minutes; "
                       f"a run still going after {live_runs.OVERRUN * cap:g} minutes stops, its finished epochs kept "
                       "(*Continue it here* goes on from them). Whoever runs the app sets the limit with "
                       "WEAT_MAX_RUN_MINUTES.")
    running = [n for n, j in jobs.items() if j.running]
    # other sessions' runs hold every place: the live view says whose, and follows them
    waiting = not running and live_runs.busy_message() is not None
    if start and running:
        st.warning(f"{running[0]} is still running; stop it first.")
    elif start and not waiting:
        with common.guard("Starting training"):
            from weat_core.train import TrainConfig

            # the images first: a page left while they load leaves no empty run folder behind
            data = (common.images("train", n_train), common.images("test", 256))
            out = kept_runs.new_folder(method)
            cfg = TrainConfig(method=method, arch="weatnet_s", dataset=c.data, epochs=epochs, batch_size=batch,
                              lr=lr, attack_steps=steps, alpha=max(2 / 255, 2.5 * (8 / 255) / steps),
                              eval_size=256, eval_steps=5, device=c.device, seed=len(jobs), limit=n_train,
                              minutes=float(budget) if budget != "off" else cap,
                              max_epochs=epochs if budget == "off" and cap else None,  # the epochs asked, if they fit
                              ema=0.999 if ema else None, out=str(out) if out else None)
            job, busy = live_runs.start(out.name if out else None, lambda: live_runs.fresh_name(method, jobs),
                                        lambda: lens.TrainingJob(cfg, data, time_limit_s=live_runs.time_limit_s()))
            if job is None:  # another session's run took the last place while the images loaded
                kept_runs.drop_folder(out)
                st.warning(busy)
            else:
                jobs[job.name] = job
                if out:
                    st.query_params["run"] = out.name

    def use_model(name: str) -> None:  # a callback: runs before the next (fragment) run
        st.session_state["model_choice"] = name
        st.session_state["tr_switch"] = True

    def live_view() -> None:
        if st.session_state.pop("tr_switch", False):
            st.rerun()  # the whole app, so the sidebar shows the model just picked
        if not any(j.running for j in jobs.values()) and (busy := live_runs.busy_message()):
            (st.warning if start else st.info)(busy)  # before Start is pressed, and when it is
        if not jobs:
            st.info("No run in this session yet.")
        else:
            job_view(*list(jobs.items())[-1])
        kept_runs.view()  # in the fragment: its table follows the run's epochs

    def job_view(name: str, job: lens.TrainingJob) -> None:
        done = len(job.history)
        budgeted = job.config.minutes is not None
        total = job.history[-1].get("epochs", job.config.epochs) if job.history else job.config.epochs
        state = "running" if job.running else "failed" if job.error else \
            job.ended if job.result is not None and job.result.stopped else "finished"
        if budgeted and not job.history:  # the epoch count is known only once the first epoch ends
            text = f"{name}: first epoch of a {job.config.minutes:g}-minute budget"
        else:
            text = f"{name}: epoch {done}/{total}" + (f" ({job.config.minutes:g}-minute budget)" if budgeted else "")
        st.progress(min(done / total, 1.0) if job.history else 0.0, text=f"{text} · {state}"
                    + (" · stopping after this batch…" if job.running and job.stopping
                       else live_runs.time_left(job) if job.running else ""))
        if job.running:
            st.button("Stop", key="tr_stop", on_click=job.stop, type="secondary")
        if job.error:
            st.error(job.error)
        if job.history:
            last = job.history[-1]
            m = st.columns(4)
            m[0].metric("clean (test subset)", f"{last['test_clean_acc']:.1%}")
            m[1].metric("robust PGD (test subset)", f"{last['test_pgd_acc']:.1%}")
            m[2].metric("ΔE", f"{last['delta_e']:+.3f}")
            m[3].metric("images/s", f"{last.get('img_per_s', 0):.0f}")
            run_charts.run_curves({name: lens.history_frame(job.history)}, "live")
        registered = st.session_state.setdefault("tr_registered", {})
        if not job.running and not job.error and not job.history:  # its weights are the random start's
            st.info(f"{name} {job.ended} before its first epoch ended: there is no trained model to use.")
            return
        if not job.running and job.model is not None and name not in registered:
            registered[name] = model_store.register_trained(job.model, name)
            st.rerun()  # the whole app, so the sidebar lists the new model
        if name in registered:
            st.success(f"**{registered[name]}** is in the sidebar's model picker"
                       + ((f" (training {job.ended if job.timed_out else 'was stopped early'})."
                           if job.result.stopped else ".")))
            st.button("Use it on every page", key="tr_use", on_click=use_model, args=(registered[name],))
            zips = st.session_state.setdefault("tr_zips", {})
            if name not in zips:  # built once per run: the weights, the settings and every epoch's record
                zips[name] = lens.checkpoint_zip(job.model, job.history, {"training": asdict(job.config)})
            st.download_button(
                "Download it (.zip)", zips[name], f"weat_lens_{common.slug(name)}.zip", "application/zip",
                key="tr_download", help="model.safetensors, config.json and log.jsonl, to take it to another machine: upload "
                "the .zip in the sidebar (Model → Upload) to use it again, or unzip it and pass the folder to "
                "`python -m weat_core eval --checkpoint FOLDER`. On this machine it is also kept under *Runs kept "
                "on this machine* below.")
            model_store.publish_form(job)

    active = any(j.running for j in jobs.values())
    # every rerun redraws the curves while holding the GIL the training thread needs: in chromium on
    # our 2 cores the default run trained 90 img/s in its last epoch with a rerun a second and 183 with
    # one every 3 s (116 against 72 s in all; 200 img/s from Python). The view changes once an epoch.
    # A visitor waiting for another session's run sees its epochs every 10 s, and the message go
    # once it has ended.
    st.fragment(live_view, run_every=3.0 if active else 10.0 if waiting else None)()
