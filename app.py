"""DA-VAE Inspector dashboard: the router.

Run with ``streamlit run app.py``. This file draws the sidebar (language and
reviewer name, which every page shares) and hands over to the chosen page in
``app_pages/``. Every page also works when opened directly by its URL, because
Streamlit runs this file first on every run.
"""

import streamlit as st

from davae.errors import DavaeError
from ui import context
from ui.i18n import current_language, language_selector, show_error, t

current_language()
st.set_page_config(page_title=t("common.app_name"), page_icon=":material/biotech:", layout="wide")

language_selector()
context.reviewer_input()

try:
    storage = context.get_storage()
    context.start_app_worker()
except DavaeError as error:
    show_error(error)
    st.stop()

pages = {
    t("sidebar.section_work"): [
        st.Page("app_pages/train.py", title=t("train.title"), icon=":material/model_training:"),
        st.Page("app_pages/score.py", title=t("score.title"), icon=":material/upload_file:"),
        st.Page("app_pages/review.py", title=t("review.title"), icon=":material/fact_check:"),
        st.Page("app_pages/export.py", title=t("export.title"), icon=":material/download:"),
    ],
    t("sidebar.section_manage"): [
        st.Page("app_pages/models.py", title=t("models.title"), icon=":material/inventory_2:"),
        st.Page("app_pages/evaluate.py", title=t("evaluate.title"), icon=":material/analytics:"),
        st.Page("app_pages/logs.py", title=t("logs.title"), icon=":material/history:"),
    ],
}
page = st.navigation(pages)
st.sidebar.caption(t("sidebar.data_location", home=str(storage.settings.home)))
page.run()
