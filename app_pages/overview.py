"""Overview: what the energies are, and the first picture — natural vs PGD energies."""

import streamlit as st

from app_pages import common, plots
from weat_core import lens

N_FIRST = 128  # images in the first picture: small enough to show within seconds on a laptop CPU


@st.cache_data(show_spinner=False, max_entries=32)
def first_picture(_model, _images, model_id: str, data: str, n: int) -> lens.Landscape:
    return lens.energy_landscape(_model, _images.float(), _images.y, {"PGD": "PGD"}, batch_size=n)


c = common.ctx()
st.title("🔭 WEAT Lens")
st.markdown(
    "A classifier with logits $f(x) \\in \\mathbb{R}^K$ is also an **energy-based model**. Low energy means "
    "*“this looks like my training data”*:")
# two formulas a line (four overflow a laptop's column with the sidebar open), one on a phone,
# where the columns stack
left, right = st.columns(2)
# (the phantoms give each line the height of its neighbour in the other column, so the rows align)
left.latex(r"\begin{gathered} E(x, y) = -f_y(x) \vphantom{\sum_k e^{f_k(x)}} \\[6pt] "
           r"p(y \mid x) = \frac{e^{-E(x,y)}}{e^{-E(x)}} \end{gathered}")
right.latex(r"\begin{gathered} E(x) = -\log \sum_k e^{f_k(x)} \\[6pt] "
            r"\mathrm{CE}(x, y) = E(x, y) - E(x) \vphantom{\frac{e^{-E(x,y)}}{e^{-E(x)}}} \end{gathered}")
st.markdown(
    "Mirza et al. (2024) report that an **untargeted** attack such as PGD pushes the true class down and lands "
    "the image at *lower* marginal energy $E(x^*)$ than the natural image, while **targeted** attacks, CW and "
    "Square push $E(x)$ *up*. Which way $E(x)$ goes depends on how far the attack lifts a wrong class: PGD lowers "
    "it strongly on a standard model, but on our trained robust models at ε = 8/255 it raises it, and lowers it "
    "only at larger ε. The chart below checks it on the model you picked. "
    "The joint energy $E(x, y)$ of the true class rises for all of them. Robust models keep the natural and "
    "adversarial energies close (a smooth landscape); **WEAT** weights each training sample by "
    "$w(x) = 1/\\log(1 + e^{|E(x)|})$ to get there.")

common.model_caption()
with common.guard("The first picture"), st.spinner("Attacking a few test images with PGD-10…"):
    res = first_picture(c.model, common.images("test", N_FIRST), c.model_id, c.data, N_FIRST)
    s = res.summary.set_index("attack")
    left, right = st.columns([2.3, 1])  # room for the metrics' labels and help marks in a narrow column
    # short title and labels: the column is a third of a laptop's with the sidebar open, and plotly and
    # st.metric cut longer ones off
    fig = plots.energy_hist(res.per_image, "E(x)", "natural vs PGD-10 (ε = 8/255)")
    left.plotly_chart(fig.update_xaxes(title=f"E(x) of {N_FIRST} test images"), key="overview_hist")
    right.metric("clean accuracy", f"{s.loc['natural', 'accuracy']:.1%}", help=f"on the {N_FIRST} test images")
    right.metric("PGD-10 accuracy", f"{s.loc['PGD', 'accuracy']:.1%}", help="L∞ ε = 8/255, step 2/255")
    right.metric("E(x) shift", f"{s.loc['PGD', 'shift E(x)']:+.3f}",
                 help="mean E(x*) − mean E(x): below 0, PGD sent the images lower on average")
    right.metric("images lowered", f"{s.loc['PGD', 'share E(x)↓']:.0%}", help="the share with E(x*) < E(x)")
    verdicts = common.observation_lines(res.summary)
    if verdicts and not c.untrained:
        left.caption(common.OBSERVATION_PREFIX + " · ".join(verdicts))
        if s.loc["PGD", "shift E(x)"] > 0:
            left.caption("Here PGD raised E(x). The *Energy landscape* page's ε sweep shows whether, and from "
                         "which attack strength on, it lowers E(x) on this model.")
    if c.untrained:
        right.info("Untrained weights: expect chance accuracy and nearly equal energies.")

st.markdown(
    "**Pages** · *Energy landscape*: all attacks, both energies, two models side by side, and how the shift "
    "changes with ε or the number of steps · *Attack explorer*: one "
    "image, step by step · *Training dynamics*: how E(x) and E(x\\*) evolve in SAT, TRADES and WEAT, and a live "
    "run · *Generation*: SGLD sampling from the classifier · *Model zoo*: robustness vs energy gap · "
    "*WEAT explained*: the weights and TRADES written with energies.")
