"""Reports: the HTML report with its plots, and text summaries."""
