"""Energy landscape: E(x) and E(x, y) of natural images and of each attack, for one or two models."""

import streamlit as st

from app_pages import common, plots
from weat_core import lens

c = common.ctx()
st.title("Energy landscape")
st.markdown("Where do adversarial images sit in the model's energy landscape? Mirza et al. (2024) report that "
            "untargeted attacks (PGD, APGD-CE, TRADES-KL) **lower** $E(x)$; targeted ones (PGD-T, APGD-T, FAB-T), CW "
            "and Square **raise** it; $E(x, y)$ of the true class rises for all. The line under each table checks "
            "this on the models you run, and the bars below it split each attack's shift by what it did to the "
            "prediction: on our robust models untargeted PGD at ε = 8/255 raises $E(x)$ of the images it cannot flip "
            "and lowers it only where the model was wrong already; on a standard model it lowers it for nearly every "
            "image.")
common.model_caption()

a, b, d = st.columns([1, 1, 1.6])  # the attacks' tags need the room (a laptop with the sidebar open)
n = a.select_slider("Test images", [32, 64, 128, 256, 512, 1024], value=256, key="ls_n")
norm = a.radio("Norm", ["linf", "l2"], horizontal=True, key="ls_norm", format_func={"linf": "L∞", "l2": "L2"}.get)
with b:
    eps = common.eps_slider("ls_eps", norm)
    steps = st.slider("Attack steps", 1, 50, 10, key="ls_steps")
kinds = d.multiselect("Attacks", list(lens.ATTACKS), default=["PGD", "PGD-T"], key="ls_attacks",
                      help="APGD-T and FAB-T try the 9 most likely other classes, so each costs about 9× a PGD "
                           "run. Square uses no gradients: 100 queries (forward passes) per step, so at 10 steps "
                           "it takes about 30× as long as PGD. APGD-CE shows its highest-loss point for every "
                           "image; APGD-T, FAB-T and Square hand back the natural image wherever they do not flip "
                           "it (the table's 'unchanged' column).")
other_name, other = common.other_model_picker("Compare with", "ls_other", c.model_name)

buttons = st.container(horizontal=True)  # each as wide as its label, whatever the column's width
clicked = buttons.button("Run", type="primary", key="ls_run")
buttons.button("Stop", key="ls_stop", help="Interrupts the running attacks.")



def summary_view(summary):
    """The summary as shown: per-image shares as percentages, blank for the natural images
    (whose share of 'lower than themselves', 'unchanged' or shift error says nothing)."""
    view = summary.copy()
    for col, fmt in (("share E(x)↓", "{:.0%}"), ("unchanged", "{:.0%}"), ("shift E(x) se", "{:.3f}")):
        if col in view:
            view[col] = ["" if a == "natural" or v != v else fmt.format(v) for a, v in zip(view["attack"], view[col])]
    return view


settings = (c.model_id, other_name, c.data, n, norm, round(eps, 6), steps, tuple(kinds))
if clicked:
    st.session_state.pop("ls_result", None)
    with common.guard("The energy landscape"):
        imgs = common.images("test", n)
        attacks = {k: lens.attack_from(k, eps=eps, steps=steps, norm=norm) for k in kinds}
        models = {c.model_name: c.model, **({other_name: other} if other is not None else {})}
        bar = st.progress(0.0)
        out = {}
        for name, m in models.items():
            out[name] = lens.energy_landscape(m, imgs.float(), imgs.y, attacks,
                                              batch_size=lens.batch_size_for(kinds),
                                              callback=common.progress_callback(bar, name))
        bar.empty()
        st.session_state["ls_result"] = (settings, out)

res = st.session_state.get("ls_result")
if res is None:
    st.info("Pick attacks and press **Run** (256 images with PGD-10 and PGD-10-T take a few seconds on a CPU with the small weatnet models).")
else:
    (_, other_then, _, n_then, norm_then, eps_then, steps_then, _), out = res
    if res[0] != settings:
        st.caption("Showing the last run; settings have changed since — press Run to update.")
    for col, (name, land) in zip(common.side_by_side(len(out), "land"), out.items()):
        with col:
            st.subheader(name)
            st.plotly_chart(plots.energy_hist(land.per_image, "E(x)", "marginal energy E(x)"), key=f"ls_ex_{name}")
            st.plotly_chart(plots.energy_hist(land.per_image, "E(x,y)", "joint energy E(x, y) of the true class"),
                            key=f"ls_exy_{name}")
            st.dataframe(summary_view(land.summary).style.format({"accuracy": "{:.1%}", "time_s": "{:.1f}"}, precision=3),
                         hide_index=True)
            verdicts = common.observation_lines(land.summary)
            if verdicts:
                st.caption(common.OBSERVATION_PREFIX + " · ".join(verdicts))
            by_outcome = lens.shift_by_outcome(land.per_image)
            if not by_outcome.empty:
                st.plotly_chart(plots.shift_by_outcome(by_outcome, "E(x) shift by what the attack did to the prediction"),
                                key=f"ls_outcome_{name}")
                st.caption(" ".join(lens.outcome_summary(by_outcome, a) for a in by_outcome["attack"].unique()))
            csv = land.per_image.assign(model=name, eps=eps_then, steps=steps_then, norm=norm_then).to_csv(index=False)
            st.download_button("Download per-image numbers (CSV)", csv, f"energy_landscape_{common.slug(name)}.csv",
                               "text/csv", key=f"ls_csv_{name}", on_click="ignore")


st.divider()
st.subheader("Does the direction depend on the attack's strength?")
st.markdown("Untargeted and targeted PGD at growing ε, or with more and more steps, on the same images; the "
            "line is the mean shift $\\overline{E(x^*) - E(x)}$ with two standard errors. Below zero, the attack "
            "sent the images lower, as Observation 1 expects of untargeted attacks.")
sa, sb = st.columns([3, 2])
by = sa.radio("Vary", ["eps", "steps"], horizontal=True, key="ls_sw_by",
              format_func={"eps": "ε", "steps": "number of steps"}.get,
              help="How far an attack lifts a wrong class's logit decides which way E(x) goes: both a larger ε "
                   "and more steps let it go further.")
if by == "eps":
    points = sa.multiselect("ε (× 1/255)", [1, 2, 4, 8, 16, 32, 64], default=[2, 4, 8, 16, 32, 64], key="ls_sw_eps")
    fixed = sb.slider("Steps per attack", 5, 100, 20, key="ls_sw_steps",
                            help="Step size max(2/255, 2.5·ε/steps): the usual 2/255 at ε = 8/255, and enough "
                                 "reach to cross the ball at large ε.")
    cost = len(points) * fixed
else:
    points = sa.multiselect("PGD steps", [1, 2, 3, 5, 10, 20, 50], default=[1, 2, 5, 10, 20], key="ls_sw_stepsl")
    fixed = sb.select_slider("ε (× 1/255)", [1, 2, 4, 8, 16, 32], value=8, key="ls_sw_at",
                                   help="Step size 2/255 with a random start, as in the usual PGD at 8/255.")
    cost = sum(points)
sweep_n = sb.select_slider("Test images", [64, 128, 256, 512], value=256, key="ls_sw_n")
# the button on a row of its own: a sixth of a narrow column cut its label to "Run…"
sweep_clicked = st.button("Run the sweep", key="ls_sw_run", disabled=not points)
sweep_settings = (c.model_id, c.data, by, tuple(sorted(points)), fixed, sweep_n)
if sweep_clicked:
    st.session_state.pop("ls_sweep", None)
    with common.guard("The ε sweep" if by == "eps" else "The steps sweep"):
        imgs = common.images("test", sweep_n)
        bar = st.progress(0.0)
        if by == "eps":
            df = lens.strength_sweep(c.model, imgs.float(), imgs.y, sorted(points), steps=fixed,
                                     callback=common.progress_callback(bar, c.model_name))
        else:
            df = lens.steps_sweep(c.model, imgs.float(), imgs.y, sorted(points), eps=fixed,
                                  callback=common.progress_callback(bar, c.model_name))
        bar.empty()
        st.session_state["ls_sweep"] = (sweep_settings, df)
sweep = st.session_state.get("ls_sweep")
if sweep is None:
    what = "values of ε" if by == "eps" else "step counts"
    secs = 2 * sweep_n * cost / 1600  # measured on an AMX CPU; a 2-core AVX512 one took about twice as long
    st.caption(f"{len(points)} {what} × 2 attacks on {sweep_n} images: about {secs:.0f}–{2 * secs:.0f} s for the "
               "default model on a 2-core CPU.")
else:
    if sweep[0] != sweep_settings:
        st.caption("Showing the last sweep; settings or the model have changed since — press the button to update.")
    swept_by, df = sweep[0][2], sweep[1]
    st.plotly_chart(plots.shift_vs_eps(df, by=swept_by), key="ls_sw_chart")
    st.caption(lens.sweep_summary(df, by=swept_by))
    view = df.assign(**{"share E(x)↓": df["share E(x)↓"].map("{:.0%}".format),
                        "accuracy": df["accuracy"].map("{:.1%}".format), "± 2 SE": 2 * df["se"]})
    view = view[([] if swept_by == "eps" else ["steps"]) + ["eps", "attack", "accuracy", "shift E(x)", "± 2 SE",
                                                            "share E(x)↓", "verdict"]]
    st.dataframe(view.style.format({"shift E(x)": "{:+.3f}", "± 2 SE": "{:.3f}", "eps": "{:g}"}), hide_index=True,
                 height=35 * (len(view) + 1) + 3)
