"""WEAT explained: the weight function, training images sorted by weight, TRADES as energies."""

import plotly.graph_objects as go
import streamlit as st

from app_pages import common, plots
from weat_core import lens

c = common.ctx()
st.title("WEAT explained")
st.markdown(
    "**W**eighted **E**nergy **A**dversarial **T**raining weights every training sample by its natural marginal "
    "energy (detached): $w(x) = 1/\\log(1 + e^{|E(x)|})$. Samples with $|E(x)|$ near 0 — the ones the model "
    "finds hard or ambiguous — weigh most; confidently placed ones (large $|E|$) weigh little.")
# the formulas on two lines each: on one they ran off a laptop's column with the sidebar open
st.latex(r"\begin{aligned} \mathcal{L}_{\text{WEAT-adv}} = \frac{1}{B}\sum_i w(x_i)\Big[&\mathrm{CE}(f(x_i^*), y_i) \\ "
         r"&+ \beta\,\mathrm{KL}\big(p(\cdot|x_i)\,\|\,p(\cdot|x_i^*)\big)\Big] \end{aligned}")
common.model_caption()

st.subheader("The weight function, and where this model's training images fall on it")
n = st.select_slider("Training images", [16, 32, 64, 128], 32, key="weat_n")
with common.guard("Weighting the batch"):
    s = common.images("train", n)
    names = common.class_names(s)
    w = lens.weights_of(c.model, s.float(), s.y)
    lo, hi = min(-30.0, float(w["E(x)"].min()) - 1), max(30.0, float(w["E(x)"].max()) + 1)
    curve = lens.weight_curve(lo, hi)
    fig = go.Figure(go.Scatter(x=curve["E"], y=curve["w"], name="w(E) = 1/softplus(|E|)", line_color="#0072B2"))
    fig.add_scatter(x=w["E(x)"], y=w["w"], mode="markers", name="training images", marker=dict(color="#D55E00"),
                    text=[names[i] for i in w["label"]])
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="E(x)", yaxis_title="w(x)")
    st.plotly_chart(fig, key="weat_curve")
    st.caption(f"Mean weight in this batch: {w['w'].mean():.3f}. The loss is the plain mean of the weighted terms "
               "(not divided by the weights' sum), so with SGD at the same learning rate WEAT's steps are about that "
               "fraction of TRADES' (and weight decay weighs correspondingly more). Training logs record the mean "
               "weight of every epoch (`weight_mean`).")
    st.caption("The batch sorted by weight, heaviest first:")
    per_row = 5  # five a row and short words: in eight narrow columns the captions broke mid-word
    for start in range(0, len(w), per_row):
        cols = st.columns(per_row)
        for col, (_, r) in zip(cols, w.iloc[start:start + per_row].iterrows()):
            # one fixed width for every image (at most the column's): at their own 96 px, a caption wider
            # than its image (a two-line one) stretched that image alone, and the grid's sizes varied
            col.image(plots.to_pil(s.float([int(r["index"])])[0], 4), width=128,
                      caption=f"w {r['w']:.2f} · E {r['E(x)']:.1f} · {names[int(r['label'])]}")

st.subheader("TRADES, written with energies")
st.latex(r"\begin{aligned} \mathrm{KL}\big(p(\cdot|x)\,\|\,p(\cdot|x^*)\big) "
         r"&= \underbrace{\mathbb{E}_{k\sim p(\cdot|x)}\big[E(x^*,k) - E(x,k)\big]}_{\text{cross term}} \\ "
         r"&\quad + \underbrace{E(x) - E(x^*)}_{\text{marginal term}} \end{aligned}")
st.markdown("The marginal term pulls $E(x^*)$ towards $E(x)$: TRADES implicitly keeps natural and adversarial "
            "energies aligned, which is why it resists robust overfitting. Computed below on real test images with "
            "the TRADES attack (10 steps, ε = 8/255).")
m = st.select_slider("Test images", [8, 16, 32, 64, 128], 16, key="weat_m")
if st.button("Decompose", type="primary", key="weat_run"):
    with common.guard("The decomposition"):
        t = common.images("test", m)
        bar = st.progress(0.0, text="Running the TRADES attack…")
        st.session_state["weat_dec"] = lens.trades_decomposition(c.model, t.float(), t.y,
                                                                 callback=common.progress_callback(bar, "Attacking"))
        bar.empty()
dec = st.session_state.get("weat_dec")
if dec is None:
    st.info("Press **Decompose** to attack the images and split each KL into its two energy terms.")
else:
    fig = go.Figure()
    idx = list(range(len(dec)))
    fig.add_bar(x=idx, y=dec["cross term"], name="cross term E_p[E(x*,k) − E(x,k)]", marker_color="#E69F00")
    fig.add_bar(x=idx, y=dec["marginal term"], name="marginal term E(x) − E(x*)", marker_color="#0072B2")
    fig.add_scatter(x=idx, y=dec["KL"], mode="markers", name="KL (computed directly)",
                    marker=dict(color="black", symbol="diamond", size=9))
    fig.update_layout(barmode="relative", height=340, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="image",
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0))
    st.plotly_chart(fig, key="weat_dec_chart")
    st.caption(f"Largest |KL − (cross + marginal)| over these images: {dec['|error|'].max():.2e} "
               "(the identity holds up to rounding).")
    st.dataframe(dec, hide_index=True)
