"""The Export page (placeholder until the page is built)."""

import streamlit as st

from ui.context import page_header
from ui.i18n import t

page_header("export")
st.info(t("common.placeholder"))
