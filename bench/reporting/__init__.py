"""The reporting layer: runs turned into numbers and pictures.

Aggregation with confidence intervals (``aggregate``), the Markdown report and export
(``report``), the HTML page (``html_report``), the figures (``plots``), the regression check
(``compare``, its noise tolerances in ``tolerances``), a metric across runs (``history``) and PIE-Bench's published table view
(``piebench_table``). It reads run folders only; it never loads a backbone.
"""
