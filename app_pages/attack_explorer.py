"""Attack explorer: one image, untargeted and targeted PGD step by step."""

import streamlit as st
from plotly.subplots import make_subplots

from app_pages import common, plots
from weat_core import lens

c = common.ctx()
st.title("Attack explorer")
st.markdown("Follow one image through PGD: the **untargeted** attack pushes $E(x, y)$ of the true class up and, "
            "according to Mirza et al. (2024), $E(x)$ down (on a standard model it does; on our robust models at "
            "ε = 8/255 it mostly does not, and the energy landscape page checks yours); the **targeted** "
            "one pulls $E(x, t)$ of the target down and $E(x)$ up.")
common.model_caption()

left, right = st.columns([1, 2])
with left:
    source = st.radio("Image", ["test image", "upload"], horizontal=True, key="ax_source")
    x, y = None, 0
    if source == "test image":
        s = common.images("test", 256)
        names = common.class_names(s)
        i = st.number_input(f"Test image (0–{len(s) - 1})", 0, len(s) - 1, 0, key="ax_index")
        x, y = s.float([i])[0], int(s.y[i])
        st.caption(f"true class: **{names[y]}**")
    else:
        names = common.class_names()
        up = st.file_uploader("An image (any size; centre-cropped and resized to 32×32)", key="ax_upload",
                              type=["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"])
        if up is not None:
            with common.guard("Reading the image"):
                x = lens.decode_image(up.getvalue())[0]
                y = names.index(st.selectbox("Its true class", names, key="ax_label"))
    if x is not None:
        st.image(plots.to_pil(x, 5), caption="input (32×32)")
with right:
    a, b = st.columns(2)
    norm = a.radio("Norm", ["linf", "l2"], horizontal=True, key="ax_norm", format_func={"linf": "L∞", "l2": "L2"}.get)
    with a:
        eps = common.eps_slider("ax_eps", norm)
    steps = b.slider("PGD steps", 1, 100, 20, key="ax_steps")
    target_opts = ["random other class", "least-likely class"] + list(names)
    tgt = b.selectbox("Target of the targeted attack", target_opts, key="ax_target")
    run = st.button("Run both attacks", type="primary", key="ax_run", disabled=x is None)

target = {"random other class": "random", "least-likely class": "least-likely"}.get(tgt)
if target is None:
    target = names.index(tgt)
    if target == y:
        st.warning("The target is the true class; the targeted attack will just make the image more confident.")


def typical_span(model) -> str:
    """The model's mean span over many test images, where its checkpoint stores one (`plane --store`), so one
    image's span can be read against it."""
    span = ((getattr(model, "config", None) or {}).get("metrics") or {}).get("plane_span")
    if not span:
        return ""
    return (f" Over its first {span['n']} test images (PGD-{span['steps']} and PGD-T-{span['steps']} at 8/255, its "
            f"card's settings) this model's span averages {span['mean']:.2f}.")


def attack_both(model, x, y, eps, steps, norm, target, bar, who: str = "") -> dict:
    """The untargeted and the targeted PGD trajectory of one image, their steps on `bar`."""
    out = {}
    for label, kind in (("untargeted PGD", "PGD"), ("targeted PGD", "PGD-T")):
        spec = lens.attack_from(kind, eps=eps, steps=steps, norm=norm)
        out[label] = lens.attack_trajectory(model, x, y, spec, target=target if kind == "PGD-T" else None,
                                            classes=names, callback=common.progress_callback(bar, f"{who}{label} step"))
    return out


if run and x is not None:
    st.session_state.pop("ax_result", None)
    st.session_state.pop("ax_planes", None)  # the energy plane follows the new attacks
    with common.guard("The attack"):
        bar = st.progress(0.0, text="Attacking…")
        st.session_state["ax_result"] = dict(out=attack_both(c.model, x, y, eps, steps, norm, target, bar), eps=eps,
                                              steps=steps, norm=norm, model_id=c.model_id)
        bar.empty()

res = st.session_state.get("ax_result")
if res is not None and res["model_id"] != c.model_id:  # another model's frames would be shown as this one's
    st.info(f"The last attacks ran on another model; press **Run both attacks** for **{c.model_name}**.")
    st.stop()
if res is None:
    st.info("Choose an image and press **Run both attacks**.")
    st.stop()
out, eps_then = res["out"], res["eps"]
n_steps = min(len(t.steps) for t in out.values()) - 1
k = st.slider("Show step (0 = natural image, 1 = random start)", 0, n_steps, n_steps, key="ax_step")

cols = st.columns(5)
first = next(iter(out.values()))
cols[0].image(plots.to_pil(first.frames[0], 4), caption=f"natural · predicted {first.steps['pred_name'][0]}", width="stretch")
for j, (label, t) in enumerate(out.items()):
    row = t.steps.iloc[k]
    tgt_txt = f" → {names[t.target]}" if t.target is not None else ""
    cols[1 + 2 * j].image(plots.to_pil(t.frames[k], 4), caption=f"{label}{tgt_txt} · step {k} · predicted {row['pred_name']}", width="stretch")
    cols[2 + 2 * j].image(plots.to_pil(plots.amplified(t.frames[k] - t.frames[0], eps_then), 4),
                          caption="x* − x", width="stretch")
# the scale once, under the row: in each of five narrow columns it broke mid-word
st.caption("x* − x, the perturbation: grey is 0, black and white are ±ε in each colour channel.")

fig = make_subplots(rows=1, cols=2, subplot_titles=list(out))
palette = {"E(x)": "#0072B2", "E(x,y)": "#009E73", "E(x,t)": "#D55E00"}  # apart for the colour blind (plots.py)
for j, t in enumerate(out.values()):
    for col in [cc for cc in ("E(x)", "E(x,y)", "E(x,t)") if cc in t.steps]:
        fig.add_scatter(x=t.steps["step"], y=t.steps[col], name=col, mode="lines+markers", row=1, col=j + 1,
                        line_color=palette[col], showlegend=j == 0 or col == "E(x,t)")
    fig.add_vline(x=k, line_dash="dot", line_color="#888", row=1, col=j + 1)
fig.update_layout(height=330, margin=dict(l=10, r=10, t=40, b=10), xaxis_title="step", xaxis2_title="step")
st.plotly_chart(fig, key="ax_traj")

bars = st.columns(3)
# no plotly toolbar on these: in a third of the column it covered most of the title on hover, and five
# bars on a fixed 0–1 axis leave nothing to zoom
bare = {"displayModeBar": False}
bars[0].plotly_chart(plots.topk_bar(first.top_before, "top-5 before", [names[y]]), key="ax_top0", config=bare)
for j, (label, t) in enumerate(out.items()):
    hl = [names[y]] + ([names[t.target]] if t.target is not None else [])
    bars[j + 1].plotly_chart(plots.topk_bar(t.top_after, f"top-5 after {label}", hl), key=f"ax_top{j + 1}",
                             config=bare)
with st.expander("Every step"):
    for label, t in out.items():
        st.caption(label)
        st.dataframe(t.steps, hide_index=True)

st.subheader("The energy around this image")
st.markdown("$E(x)$ on the plane through the natural image at (0, 0), the untargeted PGD image at (1, 0) and the "
            "targeted one at (0, 1): $x + u\\,(x^*_{\\text{PGD}} - x) + v\\,(x^*_{\\text{PGD-T}} - x)$, clipped to "
            "[0, 1]. Mirza et al. (2024) report that robust classifiers have **smoother energy landscapes** (their "
            "Observation 3): pick a standard model below to see its plane for the same image, attacked the same way.")
pa, pb, pc = st.columns([3, 2, 3])
which = pb.radio("Energy", ["E(x)", "E(x, y)"], horizontal=True, key="ax_plane_energy",
                 help="E(x): the marginal energy (Observation 1 and 3); E(x, y): the joint energy of the true "
                      "class, which every attack raises.")
grid = pa.select_slider("Grid points per side", [13, 19, 25, 31], 19, key="ax_grid",
                        help="Every grid point is one forward pass: 19 × 19 = 361 images (under a second for the "
                             "small CPU models, a few seconds for PreActResNet-18 on a CPU). These sizes put (1, 0) and "
                             "(0, 1) on the grid.")
with pc:
    other_name, other = common.other_model_picker("Below it, the same for", "ax_other", c.model_name)
planes = st.session_state.setdefault("ax_planes", {})  # (model, grid size) → plane of that model's attacks
untargeted = out["untargeted PGD"]
shown = [(c.model_name, c.model)] + ([(other_name, other)] if other is not None else [])
for name, model in shown:
    if (name, grid) not in planes:
        with common.guard(f"The energy plane of {name}"):
            bar = st.progress(0.0, text=f"{name}: E(x) at {grid * grid} points…")
            # the other model is attacked as this one was: same image, ε, steps, norm and target class
            own = out if name == c.model_name else attack_both(
                model, untargeted.x[0], untargeted.label, res["eps"], res["steps"], res["norm"],
                out["targeted PGD"].target, bar, f"{name}: ")
            planes[(name, grid)] = lens.energy_plane(
                model, untargeted.x, own["untargeted PGD"].perturbation, own["targeted PGD"].perturbation,
                y=untargeted.label, n=grid, batch_size=64,
                callback=common.progress_callback(bar, f"{name}: E(x) at the plane's points"))
            bar.empty()
    plane = planes.get((name, grid))
    if plane is None:
        continue
    if other is not None:
        st.markdown(f"**{name}**")
    st.plotly_chart(plots.energy_plane(plane, names, {"natural": (0, 0), "PGD": (1, 0), "PGD-T": (0, 1)},
                                       joint=which == "E(x, y)"), key=f"ax_plane_{name}")
    clip = (f" {plane.clipped:.1%} of the plane's pixel values were clipped to [0, 1]." if plane.clipped >= 0.001
            else " Fewer than 0.1 % of the plane's pixel values were clipped to [0, 1]." if plane.clipped else "")
    st.caption(f"Across the dashed square (|u|, |v| ≤ 1) E(x) spans **{plane.spread():.2f}**: natural "
               f"{plane.at(0, 0):.2f}, PGD {plane.at(1, 0):.2f}, PGD-T {plane.at(0, 1):.2f}. The smaller the span, the "
               "smoother the landscape around this image; the right panel shows where the prediction changes." + clip
               + typical_span(model))
