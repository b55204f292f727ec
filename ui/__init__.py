"""Shared Streamlit helpers of the dashboard: messages, storage handle, widgets and charts.

UI only: the work itself is done by ``davae`` and ``storage``.

- ``i18n``: message catalogs (``ui/locales/<language>.toml``), ``t()``, the
  language selector and translated ``DavaeError`` messages;
- ``context``: the storage handle, the background worker, the reviewer name;
- ``jobs``: job progress panels and cancel buttons shared by the pages;
- ``uploads``: saving browser uploads for a job and showing rejected files;
- ``charts``: plotly figures with translated titles and axes.
"""
