"""Model zoo: every available model, its robustness and its energy gap."""

import pandas as pd
import streamlit as st

from app_pages import common, model_store, plots
from weat_core import lens
from weat_core.attacks import attack_title

c = common.ctx()
st.title("Model zoo")
st.markdown("Mirza et al. (2024) report that stronger robust classifiers have **smoother energy landscapes** "
            "(their Observation 3): the gap between natural and adversarial energies, $|\\Delta E|$, shrinks as "
            "robust accuracy grows. Each point below is one model; under each chart, whether these models bear it out.")



def scatter(res: pd.DataFrame, rob: str, title: str, key: str, recipes: dict) -> None:
    """Robust accuracy against |ΔE|, one labelled point per model (log x when the gaps span decades), and
    under it whether the models bear out Observation 3, across them all and within the groups trained alike
    (`recipes`: model → `lens.training_recipe`)."""
    res = res.dropna(subset=[rob, "|ΔE|"])
    if res.empty:
        return
    fig = plots.zoo_scatter(res, rob, title, f"{measure(rob)} accuracy")
    st.plotly_chart(fig, key=key)
    trend = lens.gap_trend(res, rob)
    if trend is None:
        st.caption("Observation 3 needs at least three robust models with different numbers to show a trend.")
        return
    says = {"holds": "the gap shrinks as robustness grows, as the paper reports",
            "runs against it": "here the gap grows with robustness, against the paper's observation",
            "no clear trend": "no clear trend either way"}
    text = (f"Observation 3 across the {trend['n']} robust models here (standard training left out): Spearman's ρ "
            f"between {rob} and |ΔE| is {trend['rho']:+.2f}, which a random order of these models matches or beats "
            f"{common.chance(trend['p'])} of the time: **{says[trend['verdict']]}**. ")
    within = lens.gap_trend_within(res, recipes, rob)
    if within is None:
        text += ("The models also differ in architecture, training length and data, which move both numbers; the "
                 "paper's claim is about robustness alone.")
    else:
        groups = "; ".join(f"{g['rho']:+.2f} for {common.name_set(g['models'])}" for g in within["groups"])
        k = len(within["groups"])
        text += (f"The models also differ in architecture, training length and data, which move both numbers. Within "
                 f"{f'the {k} groups' if k > 1 else 'the group'} trained alike (model, data, schedule and length; only "
                 f"the method differs), ρ is {groups}")
        if len(within["groups"]) > 1:
            text += (f"; together {within['rho']:+.2f}, which random orders within the groups match "
                     f"{common.chance(within['p'])} of the time")
        text += f": **{says[within['verdict']]}**."
        if max(g["n"] for g in within["groups"]) < 5:
            text += (" A group of three or four models cannot show a trend on its own: by chance, its most extreme "
                     "order comes one time in twelve or more often.")
    text += span_trend(res, rob, recipes, says)
    st.caption(text)


def span_trend(res: pd.DataFrame, rob: str, recipes: dict, says: dict) -> str:
    """Observation 3 on the attack plane, for the models that store the span of E(x) there (`plane --store`):
    the same ρ across them and within the groups trained alike, as a sentence ("" without three of them)."""
    col = "E(x) span, attack plane"
    trend = lens.gap_trend(res, rob, gap=col)
    if trend is None:
        return ""
    text = (f" Measured around each image instead (*{col}*, {trend['n']} robust models), ρ is {trend['rho']:+.2f} "
            f"(random orders match it {common.chance(trend['p'])} of the time)")
    within = lens.gap_trend_within(res, recipes, rob, gap=col)
    if within is not None:
        text += "; within the groups trained alike, " + ", ".join(f"{g['rho']:+.2f}" for g in within["groups"])
        if len(within["groups"]) > 1:
            text += f", together {within['rho']:+.2f} ({common.chance(within['p'])})"
    return text + f": **{says[(within or trend)['verdict']]}**."


def measure(column: str) -> str:
    """An accuracy column as people read it: "pgd20-t_acc" → "targeted PGD-20"."""
    return attack_title(column.removesuffix("_acc"))


def acc_table(df: pd.DataFrame) -> None:
    """A table of models with their accuracies as percentages, each accuracy column headed by its
    measure's name (the data keep their keys)."""
    fmt = {k: "{:.1%}" for k in df.columns if k.endswith("_acc")}
    fmt.update({k: "{:g}" for k in df.columns if k.startswith("PGD lowers E(x) from")})
    heads = {k: measure(k) for k in df.columns if k.endswith("_acc")}
    # the model's name pinned: it stays in sight while the numbers scroll sideways in a narrow column
    st.dataframe(df.style.format(fmt, precision=3, na_rep=""), hide_index=True,
                 column_config={**heads, "n": "test images",
                                "model": st.column_config.TextColumn("model", pinned=True)})


infos = model_store.checkpoint_infos()
recipes = {i["name"]: lens.training_recipe(i["config"]) for i in infos}
st.subheader("Recorded metrics")
if infos:
    rec = lens.recorded_table(infos)
    acc_table(rec)
    aa = sorted({int(i["aa_n"]) for i in infos if i.get("aa_n")})
    st.caption("As stored in each checkpoint's config.json: measured by `python -m weat_core eval` on the first "
               "*test images* of the test split (L∞ ε = 8/255"
               + (f"; AutoAttack on the first {' or '.join(f'{n:,}' for n in aa)}" if aa else "")
               + "); ΔE = mean E(x) − mean E(x*) under PGD-20. *PGD lowers E(x) from ε*: the smallest ε from "
               "which untargeted PGD sends mean E(x) below the natural images' "
               "(`python -m weat_core sweep --store`; empty where it never does or no sweep is stored). "
               "*E(x) span, attack plane*: how much E(x) changes, on average over test images (its card says "
               "which), on the plane through each image and its PGD and targeted PGD images, the plane the attack "
               "explorer draws (`python -m weat_core plane --store`; smaller is smoother, Observation 3's other "
               "measure). "
               "*Observation 1 holds / fails for*: the attacks that move mean E(x) the way the observation says, or "
               "the other way, by more than two standard errors, at 8/255 (`python -m weat_core landscape --store`, "
               "the energy landscape page's attacks and settings; each model card has the whole table).")
    if "pgd20_acc" in rec:
        scatter(rec, "pgd20_acc", "recorded: PGD-20 accuracy against the energy gap |ΔE|", "zoo_rec_scatter", recipes)
    grid = lens.observation1_grid(infos)
    if not grid.empty:
        st.subheader("Observation 1, attack by attack")
        st.plotly_chart(plots.observation1_heatmap(grid), key="zoo_obs1")
        st.caption("Each cell: how one attack moved the mean marginal energy E(x) of the same test images away from "
                   "the natural ones (✓ the way Observation 1 says, ✗ the other way, ≈ within two standard errors of "
                   "the per-image shifts), as stored by `python -m weat_core landscape --store`; the colour is that "
                   "shift in standard errors. Beside each attack, which way the observation expects it to move "
                   "E(x). Settings per model in its card (there: 256 test images, L∞ ε = 8/255, 10 steps).")
else:
    st.info("No checkpoints are shipped yet (checkpoints/ is empty). Evaluate the models trained in this session "
            "and the untrained default below.")

st.subheader("Evaluate here")
a, b = st.columns([2, 1])
choices = model_store.model_choices()
if c.model_name not in choices:
    choices = [c.model_name] + choices
pick = a.multiselect("Models", choices, default=model_store.contrast_set(c.model_name, infos), key="zoo_models",
                     help="Starts with the current model and, for each other training method, one checkpoint of "
                          "the same architecture and dataset: the same schedule where there is one, else the best "
                          "recorded PGD-20 accuracy.")
attacks = a.multiselect("Attacks", ["pgd20", "pgd10", "cw20", "aa-fast", "aa"], default=["pgd20"], key="zoo_attacks",
                        help="aa-fast: APGD-CE + APGD-T; aa: standard AutoAttack (slow on a CPU).")
n = b.select_slider("Test images", [32, 64, 128, 256, 512, 1024], 128, key="zoo_n")
limit = common.max_task_minutes()
if limit is not None and c.device == "cpu" and {"aa", "aa-fast"} & set(attacks):
    # said before the click: past the limit the evaluation is stopped and its minutes are lost
    st.caption(f"⏱ This server stops a computation after {limit:g} minutes. AutoAttack is slow on a CPU: on 2 "
               "cores the standard version took about 24 minutes for 32 test images of a PreActResNet-18 "
               "(about 45 s an image; docs/models.md) and for a weatnet_s model under 3 s an image; aa-fast takes "
               "less. PGD-20 on a few hundred images fits.")
clicked = b.button("Evaluate", type="primary", key="zoo_run", disabled=not (pick and attacks))
if clicked:
    with common.guard("The evaluation"):
        models = {m: (c.model if m == c.model_name else model_store.load_named_model(m, c.device)) for m in pick}
        imgs = common.images("test", n)
        bar = st.progress(0.0)
        total = len(models) * (len(attacks) + 1)
        seen: list = []

        def cb(model, attack, done, tot):
            common.check_time()
            key = (model, attack)
            if done >= tot and key not in seen:
                seen.append(key)
            bar.progress(min(1.0, len(seen) / total), text=f"{model}: {attack} {done}/{tot}")

        per_image: dict = {}
        res = lens.zoo_table(models, imgs.float(), imgs.y, attacks=attacks, callback=cb, per_image=per_image)
        st.session_state["zoo_result"] = res.assign(dataset=[common.short(str(d)) for d in res["dataset"]])
        st.session_state["zoo_pairs"] = (lens.paired_table(per_image, next(iter(models))) if len(models) > 1
                                         else None)
        bar.empty()

res = st.session_state.get("zoo_result")
if res is not None and not res.empty:
    acc_table(res)
    rob = [k for k in res.columns if k.endswith("_acc") and k != "clean_acc"][0]
    scatter(res, rob, f"measured here: {measure(rob)} accuracy against |ΔE|", "zoo_scatter", recipes)
    pairs = st.session_state.get("zoo_pairs")
    if pairs is not None and not pairs.empty:
        ref = res["model"].iloc[0]
        st.markdown(f"**Image by image against `{ref}`**: is a difference more than chance?")
        st.dataframe(pairs.style.format({"accuracy": "{:.1%}", f"vs {ref}": "{:+.1f} pts", "± 2 SE": "{:.1f}"}),
                     hide_index=True)
        st.caption(f"All models saw the same {int(res['n'].iloc[0])} test images. Only the images one model gets right "
                   "and the other wrong make the two differ, so the difference is judged on them: *ahead* or "
                   "*behind* when it is more than two standard errors of the paired difference, else *level* "
                   "(more test images shrink the error). `python -m weat_core compare` does the same from the "
                   "command line.")
