"""WEAT Lens — `streamlit run app.py`. This file only routes; each page lives in app_pages/."""

import streamlit as st

from app_pages.sidebar import sidebar

st.set_page_config(page_title="WEAT Lens", page_icon="🔭", layout="wide")

page = st.navigation([
    st.Page("app_pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("app_pages/landscape.py", title="Energy landscape", icon=":material/bar_chart:"),
    st.Page("app_pages/attack_explorer.py", title="Attack explorer", icon=":material/target:"),
    st.Page("app_pages/training.py", title="Training dynamics", icon=":material/monitoring:"),
    st.Page("app_pages/generation.py", title="Generation", icon=":material/auto_awesome:"),
    st.Page("app_pages/zoo.py", title="Model zoo", icon=":material/view_module:"),
    st.Page("app_pages/weat.py", title="WEAT explained", icon=":material/balance:"),
])
sidebar()  # the model / dataset / device picker shared by every page
# On a phone (under 640 px) the formulas shrink a little and scroll sideways where they are still
# too wide: at their full size one line of the WEAT loss ran off a 390-px screen, cut. And the
# charts' plotly toolbar goes: on a touch screen it stays, over the charts' titles (a tap on a
# legend entry still hides its trace).
st.html("<style>@media (max-width: 640px) {.katex-display {font-size: 0.8em; overflow-x: auto; "
        "overflow-y: hidden; padding-bottom: 2px} .js-plotly-plot .modebar-container {display: none !important}}"
        "</style>")
page.run()
