"""Model zoo: every available model, its robustness and its energy gap."""

import pandas as pd
import plotly.express as px
import streamlit as st

from app_pages import common
from weat_core import lens

c = common.ctx()
st.title("Model zoo")
st.markdown("Stronger robust classifiers have **smoother energy landscapes**: the gap between natural and "
            "adversarial energies, $|\\Delta E|$, shrinks as robust accuracy grows.")

infos = common.checkpoint_infos()
rows = [{"model": i["name"], "arch": i["arch"], "method": i["method"], "dataset": common.short(str(i["dataset"])),
         **{k: v for k, v in i.items() if k.endswith(("_acc", "delta_e")) or k.startswith(("energy", "metric"))}}
        for i in infos]
rows += [{"model": common.TRAINED_PREFIX + k, "arch": "weatnet_s", "method": m.config.get("method", "?"),
          "dataset": common.short(str(m.config.get("dataset", "?")))} for k, m in common.trained_models().items()]
if not infos:
    st.info("No checkpoints are shipped yet (checkpoints/ is empty). The table lists models trained in this "
            "session and the untrained default; evaluate them below.")
st.subheader("Recorded metrics")
st.dataframe(pd.DataFrame(rows or [{"model": common.UNTRAINED, "arch": "weatnet_s", "method": "untrained"}]),
             hide_index=True)

st.subheader("Evaluate here")
a, b = st.columns([2, 1])
choices = common.model_choices()
if c.model_name not in choices:
    choices = [c.model_name] + choices
pick = a.multiselect("Models", choices, default=choices[:6], key="zoo_models")
attacks = a.multiselect("Attacks", ["pgd20", "pgd10", "cw20", "aa-fast", "aa"], default=["pgd20"], key="zoo_attacks",
                        help="aa-fast: APGD-CE + APGD-T; aa: standard AutoAttack (slow on a CPU).")
n = b.select_slider("Test images", [32, 64, 128, 256, 512, 1024], 128, key="zoo_n")
clicked = b.button("Evaluate", type="primary", key="zoo_run", disabled=not (pick and attacks))
if clicked:
    with common.guard("The evaluation"):
        models = {m: (c.model if m == c.model_name else common.load_named_model(m, c.device)) for m in pick}
        imgs = common.images("test", n)
        bar = st.progress(0.0)
        total = len(models) * (len(attacks) + 1)
        seen: list = []

        def cb(model, attack, done, tot):
            key = (model, attack)
            if done >= tot and key not in seen:
                seen.append(key)
            bar.progress(min(1.0, len(seen) / total), text=f"{model}: {attack} {done}/{tot}")

        res = lens.zoo_table(models, imgs.float(), imgs.y, attacks=attacks, callback=cb)
        st.session_state["zoo_result"] = res.assign(dataset=[common.short(str(d)) for d in res["dataset"]])
        bar.empty()

res = st.session_state.get("zoo_result")
if res is not None and not res.empty:
    st.dataframe(res.style.format({k: "{:.1%}" for k in res.columns if k.endswith("_acc")}, precision=3),
                 hide_index=True)
    rob = [k for k in res.columns if k.endswith("_acc") and k != "clean_acc"][0]
    fig = px.scatter(res, x="|ΔE|", y=rob, text="model", color="method", size_max=14,
                     title=f"robustness ({rob}) against the natural–adversarial energy gap |ΔE|")
    fig.update_traces(textposition="top center", marker_size=12, cliponaxis=False)
    fig.update_xaxes(rangemode="tozero")
    fig.update_layout(height=420, yaxis_tickformat=".0%")
    st.plotly_chart(fig, key="zoo_scatter")
