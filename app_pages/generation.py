"""Generation: SGLD from the chosen classifier, live, with every knob on a slider."""

import plotly.graph_objects as go
import streamlit as st
import torch

from app_pages import common, model_store
from weat_core import lens
from weat_core.sampling import default_settings, generate

c = common.ctx()
st.title("Generation")
st.markdown("A robust classifier is a generator: start from noise (or a class Gaussian / class PCA sample) and "
            "run Stochastic Gradient Langevin Dynamics down an energy, "
            "$v \\leftarrow \\zeta v - \\tfrac{\\eta}{2}\\nabla_x E$, "
            "$x \\leftarrow \\mathrm{clip}_{[0,1]}(x + v + \\sigma\\varepsilon)$. No dataset is needed: the class "
            "statistics for the Gaussian/PCA starts ship with each checkpoint.")
common.model_caption()
names = list(common.class_names())
d = default_settings(c.model)

# the classes on a row of their own: in a third of a narrow column their tags were cut to "ai…"
classes = st.multiselect("Classes", names, default=names[: min(4, len(names))], key="gen_classes")
a, b, e = st.columns(3)
n = a.slider("Images", 1, 64, 16, key="gen_n")
seed = a.number_input("Seed", 0, 10_000, 0, key="gen_seed")
steps = b.slider("Steps", 1, 500, int(d.steps), key="gen_steps")
eta = b.number_input("Step size η", 0.0, 50.0, float(d.step_size), 0.05, format="%.3f", key="gen_eta")
sigma = b.number_input("Noise σ", 0.0, 1.0, float(d.noise_std), 0.001, format="%.4f", key="gen_sigma")
zeta = e.slider("Momentum ζ", 0.0, 0.95, float(d.momentum), 0.05, key="gen_zeta")
stats = model_store.has_init_stats(c.model)
init = e.radio("Initialisation", ["uniform", "gaussian", "pca"],
               index=["uniform", "gaussian", "pca"].index(d.init if stats else "uniform"), horizontal=True,
               key=f"gen_init_{'stats' if stats else 'nostats'}", format_func={"uniform": "uniform", "gaussian": "class Gaussian", "pca": "class PCA"}.get)
if not stats:
    e.caption("No class statistics ship with this model, so only the uniform start is available "
              "(`python -m weat_core init-stats` adds them).")
variance = float(d.pca_variance)
if stats and init == "pca":
    from weat_core.sampling import ClassStats

    kept = ClassStats.for_model(c.model).retained()
    variance = e.slider("PCA: share of each class's variance in the start", 0.5, 1.0, min(variance, 1.0), 0.01,
                        key="gen_pca_var", help="Lower: smoother, blurrier starts; higher: more detail and texture.")
    e.caption(f"The saved statistics hold {100 * float(kept.min()):.1f}–{100 * float(kept.max()):.1f} % of each "
              "class's variance; asking for more uses all of it.")
# under the seed: the third column already holds the start and, for class PCA, its variance
objective = a.radio("Objective", ["joint", "ce", "marginal"], horizontal=True, key="gen_obj",
                    format_func={"joint": "E(x,y)", "ce": "CE", "marginal": "E(x)"}.get)
other_name, other = common.other_model_picker("Side by side with", "gen_other", c.model_name)

buttons = st.container(horizontal=True)  # each as wide as its label: a seventh of a narrow column cut it to "G…"
clicked = buttons.button("Generate", type="primary", key="gen_run", disabled=not classes)
buttons.button("Stop", key="gen_stop", help="Interrupts the chains.")

if clicked:
    st.session_state.pop("gen_result", None)
    labels = torch.tensor([names.index(classes[i % len(classes)]) for i in range(n)])
    models = {c.model_name: c.model, **({other_name: other} if other is not None else {})}
    out = {}
    for name, model in models.items():
        with common.guard(f"Generating with {name}"):
            slot = st.empty()  # the live view, cleared when the chains are done
            live = slot.container(border=True)
            live.caption(f"{name}: chains running…")
            img, bar = live.empty(), live.progress(0.0)
            every = max(1, steps // 10)

            def watch(step, state, img=img, bar=bar):
                common.check_time()
                bar.progress(step / steps, text=f"step {step}/{steps} · mean energy {float(state.energy.nanmean()):.3f}")
                if step % every == 0 or step == steps:
                    img.image(lens.image_grid_png(state.x, nrow=8, scale=3))

            out[name] = generate(model, labels, steps=steps, step_size=eta, noise_std=sigma, momentum=zeta,
                                 init=init, objective=objective, seed=int(seed), callback=watch,
                                 pca_variance=variance)
            slot.empty()
    if out:
        st.session_state["gen_result"] = out

res = st.session_state.get("gen_result")
if res is None:
    st.info("Choose classes and press **Generate**.")
    st.stop()
for col, (name, r) in zip(common.side_by_side(len(res), "gen"), res.items()):
    with col:
        st.subheader(name)
        if r.diverged:
            first = r.diverged[0]
            st.warning(f"{len(r.diverged)} of {len(r.requested)} chains diverged (NaN/inf) and were stopped — first "
                       f"at step {first['step']} ({first['reason']}). Lower the step size or the momentum.")
        png = lens.image_grid_png(r.images, nrow=8, scale=3)
        st.image(png, caption=" · ".join(names[int(i)] for i in r.labels[:16]) + (" …" if len(r.labels) > 16 else ""))
        fig = go.Figure()
        steps_axis = list(range(r.energies.shape[0]))
        for i in range(r.energies.shape[1]):
            fig.add_scatter(x=steps_axis, y=r.energies[:, i].tolist(), mode="lines", line=dict(width=1),
                            opacity=0.35, showlegend=False, line_color="#0072B2")
        fig.add_scatter(x=steps_axis, y=r.energies.nanmean(1).tolist(), mode="lines", name="mean",
                        line=dict(width=3, color="#D55E00"))
        obj = {"joint": "E(x, y)", "ce": "CE(x, y)", "marginal": "E(x)"}[r.settings.objective]
        fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), title=f"{obj} along the chains",
                          xaxis_title="step")
        st.plotly_chart(fig, key=f"gen_energy_{name}")
        st.caption(f"{r.settings.steps} steps · η={r.settings.step_size} · σ={r.settings.noise_std} · "
                   f"ζ={r.settings.momentum} · init {r.settings.init} · {r.seconds:.1f} s")
        st.download_button("Download grid (PNG)", png, f"weat_lens_{common.slug(name)}.png", "image/png",
                           key=f"gen_png_{name}", on_click="ignore")
